#include "demo_train.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <numeric>
#include <random>
#include <vector>

#include <torch/torch.h>

#include "demo_progress.h"

namespace bert {

EvalResult evaluate(BertClassifierImpl& model, const EncodedSet& set, int64_t batch_size,
                    const std::string& label, bool keep_embeddings, size_t limit) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const auto batches = length_sorted_batches(set, batch_size, limit);
  int64_t total = 0;
  for (const auto& b : batches) total += static_cast<int64_t>(b.size());
  DemoProgress progress(label, total, "reviews", 10.0);
  int64_t correct = 0;
  at::Tensor embeddings;
  if (keep_embeddings) embeddings = torch::empty({total, model.config.hidden_size});
  for (const auto& indices : batches) {
    const DemoBatch batch = make_batch(set, indices);
    // The classifier's own forward, split so that the pooled vector is kept:
    // logits = classifier(dropout(mean_pool(bert(...)))), dropout is the identity in eval.
    const at::Tensor hidden =
        model.bert->forward(batch.input_ids, batch.token_type_ids, batch.attention_mask);
    const at::Tensor pooled = mean_pool(hidden, batch.attention_mask);
    const at::Tensor logits = model.classifier->forward(pooled);
    correct += logits.argmax(-1).eq(batch.labels).sum().item<int64_t>();
    if (keep_embeddings) {
      const at::Tensor normalized =
          torch::nn::functional::normalize(pooled, torch::nn::functional::NormalizeFuncOptions()
                                                       .p(2).dim(-1).eps(1e-12));
      const at::Tensor rows = torch::tensor(std::vector<int64_t>(indices.begin(), indices.end()),
                                            torch::kInt64);
      embeddings.index_copy_(0, rows, normalized.to(torch::kFloat32));
    }
    progress.step(static_cast<int64_t>(indices.size()));
  }
  if (was_training) model.train();
  EvalResult result;
  result.count = total;
  result.accuracy = total > 0 ? static_cast<double>(correct) / static_cast<double>(total) : 0.0;
  result.seconds = progress.seconds();
  result.embeddings = embeddings;
  return result;
}

double embedding_error(const at::Tensor& reference, const at::Tensor& embeddings) {
  return 1.0 - (reference * embeddings).sum(-1).mean().item<double>();
}

std::vector<at::Tensor> snapshot_parameters(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> copy;
  for (const auto& p : model.parameters()) copy.push_back(p.detach().clone());
  return copy;
}

void restore_parameters(torch::nn::Module& model, const std::vector<at::Tensor>& copy) {
  torch::NoGradGuard no_grad;
  auto params = model.parameters();
  TORCH_CHECK(params.size() == copy.size(), "restore_parameters: expected ", params.size(),
              " tensors, got ", copy.size());
  for (size_t i = 0; i < params.size(); ++i) params[i].copy_(copy[i]);
}

double train_classifier(BertClassifierImpl& model, const EncodedSet& train,
                        const TrainSettings& settings, int64_t callback_every,
                        const std::function<void(int64_t)>& callback) {
  TORCH_CHECK_VALUE(settings.steps > 0, "train_classifier: expected steps > 0, got ",
                    settings.steps);
  std::vector<at::Tensor> encoder_params, head_params, scale_params;
  for (const auto& p : model.bert->named_parameters()) {
    if (!p.value().requires_grad()) continue;
    const bool is_scale = settings.scale_lr > 0 && p.key().find("_quantizer.") != std::string::npos;
    (is_scale ? scale_params : encoder_params).push_back(p.value());
  }
  for (auto& p : model.classifier->parameters()) {
    if (p.requires_grad()) head_params.push_back(p);
  }
  using torch::optim::AdamWOptions;
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(encoder_params, std::make_unique<AdamWOptions>(
                                          AdamWOptions(settings.encoder_lr)
                                              .weight_decay(settings.weight_decay)));
  groups.emplace_back(head_params, std::make_unique<AdamWOptions>(
                                       AdamWOptions(settings.head_lr)
                                           .weight_decay(settings.weight_decay)));
  std::vector<double> base_lr = {settings.encoder_lr, settings.head_lr};
  if (!scale_params.empty()) {
    groups.emplace_back(scale_params, std::make_unique<AdamWOptions>(
                                          AdamWOptions(settings.scale_lr).weight_decay(0.0)));
    base_lr.push_back(settings.scale_lr);
  }
  torch::optim::AdamW optimizer(std::move(groups), AdamWOptions(settings.encoder_lr));
  const int64_t warmup =
      static_cast<int64_t>(settings.warmup_fraction * static_cast<double>(settings.steps));

  std::mt19937_64 rng(settings.seed);
  std::vector<std::vector<size_t>> epoch;
  size_t next = 0;
  std::deque<double> recent;
  DemoProgress progress(settings.label, settings.steps, "steps", 10.0);
  if (settings.teacher != nullptr) settings.teacher->eval();
  model.train(settings.dropout);
  for (int64_t step = 0; step < settings.steps; ++step) {
    if (next >= epoch.size()) {
      epoch = shuffled_batches(train, settings.batch_size, rng);
      next = 0;
    }
    // Linear warm-up to the base rate, then linear decay to 0 at the last step.
    const double factor =
        step < warmup ? static_cast<double>(step + 1) / static_cast<double>(warmup + 1)
                      : static_cast<double>(settings.steps - step) /
                            static_cast<double>(std::max<int64_t>(1, settings.steps - warmup));
    for (size_t g = 0; g < optimizer.param_groups().size(); ++g) {
      static_cast<AdamWOptions&>(optimizer.param_groups()[g].options()).lr(base_lr[g] * factor);
    }
    const DemoBatch batch = make_batch(train, epoch[next++]);
    optimizer.zero_grad();
    // BertClassifier::forward, split to keep the pooled vector for the distillation term.
    const at::Tensor pooled = mean_pool(
        model.bert->forward(batch.input_ids, batch.token_type_ids, batch.attention_mask),
        batch.attention_mask);
    const at::Tensor logits = model.classifier->forward(model.dropout->forward(pooled));
    at::Tensor loss = torch::nn::functional::cross_entropy(logits, batch.labels);
    if (settings.teacher != nullptr && settings.distill_weight > 0.0) {
      at::Tensor target;
      {
        torch::NoGradGuard no_grad;
        target = mean_pool(settings.teacher->bert->forward(batch.input_ids, batch.token_type_ids,
                                                           batch.attention_mask),
                           batch.attention_mask);
      }
      const at::Tensor cosine = torch::cosine_similarity(pooled, target, /*dim=*/-1);
      loss = loss + settings.distill_weight * (1.0 - cosine).mean();
    }
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model.parameters(), 1.0);
    optimizer.step();
    recent.push_back(loss.item<double>());
    if (recent.size() > 20) recent.pop_front();
    char note[64];
    std::snprintf(note, sizeof(note), "loss %.4f (mean of last %zu)",
                  std::accumulate(recent.begin(), recent.end(), 0.0) /
                      static_cast<double>(recent.size()),
                  recent.size());
    progress.step(1, note);
    if (callback_every > 0 && callback && (step + 1) % callback_every == 0) {
      callback(step + 1);
      model.train(settings.dropout);
    }
  }
  model.eval();
  return recent.empty() ? 0.0
                        : std::accumulate(recent.begin(), recent.end(), 0.0) /
                              static_cast<double>(recent.size());
}

}  // namespace bert
