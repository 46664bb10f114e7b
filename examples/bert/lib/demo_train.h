#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "bert_model.h"
#include "demo_data.h"

namespace bert {

/// Accuracy of a classifier on a set, and (optionally) the sentence embeddings it computes on
/// the way: mean_pool_normalize of the encoder output, the vector its head classifies.
struct EvalResult {
  double accuracy = 0.0;
  int64_t count = 0;
  double seconds = 0.0;
  /// [count, hidden] in the set's order, when asked for.
  at::Tensor embeddings;
};

/// Runs `model` in eval mode without gradients on the first `limit` reviews (0: all) of `set`,
/// in length-sorted batches. Progress goes to stderr under `label`.
EvalResult evaluate(BertClassifierImpl& model, const EncodedSet& set, int64_t batch_size,
                    const std::string& label, bool keep_embeddings = false, size_t limit = 0);

/// Sentence-embedding error against a reference: mean (1 - cosine) over the rows of two
/// [N, hidden] tensors of L2-normalized embeddings (so the dot product is the cosine).
/// 0 = identical directions.
double embedding_error(const at::Tensor& reference, const at::Tensor& embeddings);

/// Fine-tuning settings (AdamW, linear warm-up then linear decay to 0 over `steps`).
struct TrainSettings {
  int64_t steps = 0;  ///< optimizer steps (batches)
  int64_t batch_size = 32;
  double encoder_lr = 5e-5;  ///< the "bert" child
  double head_lr = 1e-3;     ///< the "classifier" head
  /// Learned quantizer scales (parameters named "*_quantizer.*", LSQ): their own group without
  /// weight decay at this rate (docs/qat.md). 0: none expected (they would join the encoder's).
  double scale_lr = 0.0;
  double warmup_fraction = 0.1;
  double weight_decay = 0.01;
  uint64_t seed = 0;
  std::string label = "fine-tune";
  /// Distillation (QAT): when set, the loss adds distill_weight * mean(1 - cosine) between the
  /// model's sentence embeddings and this teacher's (eval mode, no gradients) on the same batch,
  /// so that training toward the labels does not pull the embeddings away from the teacher's.
  BertClassifierImpl* teacher = nullptr;
  double distill_weight = 0.0;
  /// Dropout on while training (train mode). Off: the model runs in eval mode with gradients,
  /// so that a distillation term measures the model's own error, not dropout noise.
  bool dropout = true;
};

/// Trains `model` (train mode unless settings.dropout is off) with cross-entropy on shuffled batches of `train`
/// for settings.steps steps (epochs follow one another with fresh shuffles). After every
/// `callback_every` steps (if > 0) `callback(step)` runs (e.g. a validation checkpoint); the
/// model is put back in train mode afterwards. Returns the mean loss of the last 20 steps
/// (cross-entropy, plus the distillation term when a teacher is set).
double train_classifier(BertClassifierImpl& model, const EncodedSet& train,
                        const TrainSettings& settings, int64_t callback_every = 0,
                        const std::function<void(int64_t)>& callback = {});

/// A copy of the parameters of `model` (a QAT checkpoint), and its way back into the model
/// (which must have the same parameters, in the same order).
std::vector<at::Tensor> snapshot_parameters(torch::nn::Module& model);
void restore_parameters(torch::nn::Module& model, const std::vector<at::Tensor>& copy);

}  // namespace bert
