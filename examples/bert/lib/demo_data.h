#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "fine_foods.h"
#include "wordpiece_tokenizer.h"

namespace bert {

/// Reviews tokenized once ([CLS] ids [SEP], truncated to the demo's sequence length) with
/// their labels, so that every evaluation reuses the ids.
struct EncodedSet {
  std::string name;
  std::vector<std::vector<int64_t>> ids;
  std::vector<int64_t> labels;
  int64_t pad_id = 0;

  size_t size() const { return ids.size(); }
};

/// Tokenizes `reviews` with encode(text, max_length). Prints progress for large sets.
EncodedSet encode_reviews(const WordPieceTokenizer& tokenizer, const std::vector<Review>& reviews,
                          int64_t max_length, const std::string& name);

/// A batch of model inputs (int64 [B, L], CPU) and labels (int64 [B]).
struct DemoBatch {
  at::Tensor input_ids;
  at::Tensor token_type_ids;
  at::Tensor attention_mask;
  at::Tensor labels;
  int64_t size() const { return labels.size(0); }
};

/// The reviews `indices` of `set` padded to the longest of them, or to `pad_to` (> 0).
DemoBatch make_batch(const EncodedSet& set, const std::vector<size_t>& indices, int64_t pad_to = 0);

/// Evaluation batches: indices sorted by length (longest first), cut into batches of
/// `batch_size`, so that padding to the longest of each batch wastes little work. Results of an
/// evaluation (accuracy, cosines) do not depend on the order.
std::vector<std::vector<size_t>> length_sorted_batches(const EncodedSet& set, int64_t batch_size,
                                                       size_t limit = 0);

/// Training batches of one epoch: a shuffle of all indices (by `rng`), in batches of
/// `batch_size` (the last one may be smaller).
std::vector<std::vector<size_t>> shuffled_batches(const EncodedSet& set, int64_t batch_size,
                                                  std::mt19937_64& rng);

/// Mean number of tokens per review (special tokens included).
double mean_length(const EncodedSet& set);

/// Fraction of label 1.
double positive_fraction(const EncodedSet& set);

}  // namespace bert
