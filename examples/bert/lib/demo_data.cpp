#include "demo_data.h"

#include <algorithm>
#include <numeric>

#include <torch/torch.h>

#include "demo_progress.h"

namespace bert {

EncodedSet encode_reviews(const WordPieceTokenizer& tokenizer, const std::vector<Review>& reviews,
                          int64_t max_length, const std::string& name) {
  EncodedSet set;
  set.name = name;
  set.pad_id = tokenizer.token_to_id(tokenizer.options().pad_token);
  set.ids.reserve(reviews.size());
  set.labels.reserve(reviews.size());
  DemoProgress progress("tokenize " + name, static_cast<int64_t>(reviews.size()), "reviews");
  for (const Review& review : reviews) {
    set.ids.push_back(tokenizer.encode(review.text, max_length));
    set.labels.push_back(review.label);
    progress.step();
  }
  return set;
}

DemoBatch make_batch(const EncodedSet& set, const std::vector<size_t>& indices, int64_t pad_to) {
  TORCH_CHECK_VALUE(!indices.empty(), "make_batch: expected at least one review");
  int64_t length = pad_to;
  if (length <= 0) {
    for (size_t i : indices) length = std::max<int64_t>(length, set.ids[i].size());
  }
  const int64_t batch = static_cast<int64_t>(indices.size());
  at::Tensor ids = torch::full({batch, length}, set.pad_id, torch::kInt64);
  at::Tensor mask = torch::zeros({batch, length}, torch::kInt64);
  at::Tensor labels = torch::empty({batch}, torch::kInt64);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  auto labels_a = labels.accessor<int64_t, 1>();
  for (int64_t b = 0; b < batch; ++b) {
    const auto& row = set.ids[indices[b]];
    const int64_t n = std::min<int64_t>(length, row.size());
    for (int64_t t = 0; t < n; ++t) {
      ids_a[b][t] = row[t];
      mask_a[b][t] = 1;
    }
    labels_a[b] = set.labels[indices[b]];
  }
  return {ids, torch::zeros({batch, length}, torch::kInt64), mask, labels};
}

std::vector<std::vector<size_t>> length_sorted_batches(const EncodedSet& set, int64_t batch_size,
                                                       size_t limit) {
  const size_t n = limit > 0 ? std::min(limit, set.size()) : set.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return set.ids[a].size() > set.ids[b].size(); });
  std::vector<std::vector<size_t>> batches;
  for (size_t start = 0; start < n; start += batch_size) {
    const size_t end = std::min(n, start + static_cast<size_t>(batch_size));
    batches.emplace_back(order.begin() + start, order.begin() + end);
  }
  return batches;
}

std::vector<std::vector<size_t>> shuffled_batches(const EncodedSet& set, int64_t batch_size,
                                                  std::mt19937_64& rng) {
  std::vector<size_t> order(set.size());
  std::iota(order.begin(), order.end(), size_t{0});
  // Fisher-Yates with the engine's raw output (std::shuffle's algorithm is unspecified).
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  std::vector<std::vector<size_t>> batches;
  for (size_t start = 0; start < order.size(); start += batch_size) {
    const size_t end = std::min(order.size(), start + static_cast<size_t>(batch_size));
    batches.emplace_back(order.begin() + start, order.begin() + end);
  }
  return batches;
}

double mean_length(const EncodedSet& set) {
  if (set.size() == 0) return 0.0;
  double total = 0.0;
  for (const auto& row : set.ids) total += static_cast<double>(row.size());
  return total / static_cast<double>(set.size());
}

double positive_fraction(const EncodedSet& set) {
  if (set.size() == 0) return 0.0;
  double positives = 0.0;
  for (int64_t label : set.labels) positives += label == 1 ? 1.0 : 0.0;
  return positives / static_cast<double>(set.size());
}

}  // namespace bert
