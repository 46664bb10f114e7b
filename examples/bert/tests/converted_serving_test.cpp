// A converted MiniLM-shaped encoder as a server uses it: forward from many threads at once,
// the first call after a load, bad requests. The weights are random (the architecture and the
// converted modules are what matter here), so the test needs no model files.

#include <unistd.h>

#include <filesystem>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "bert_config.h"
#include "bert_model.h"
#include "demo_mapping.h"
#include "tquant/tquant.h"

namespace {

struct Batch {
  at::Tensor ids, types, mask;
};

Batch random_batch(int64_t batch, int64_t length, uint64_t seed) {
  torch::manual_seed(seed);
  Batch b{torch::randint(1000, 29000, {batch, length}, torch::kLong),
          torch::zeros({batch, length}, torch::kLong),
          torch::ones({batch, length}, torch::kLong)};
  if (batch > 1) b.mask[batch - 1].narrow(0, length / 2, length - length / 2).fill_(0);
  return b;
}

// MiniLM's shape (BertConfig's defaults: 6 layers, hidden 384, 12 heads, FFN 1536) with the
// BERT demo's mapping on the encoder: static int8 Linears and attention, dynamic keys.
bert::BertModel converted_minilm() {
  torch::manual_seed(0);
  auto model = bert::BertModel(bert::BertConfig(), /*add_pooler=*/false);
  model->eval();
  tquant::prepare(*model, bert::demo_int8_mapping(""));
  torch::NoGradGuard no_grad;
  for (uint64_t seed = 1; seed <= 2; ++seed) {
    const Batch b = random_batch(4, 32, seed);
    model(b.ids, b.types, b.mask);
  }
  tquant::set_calibration_method(*model, tquant::CalibrationMethod::kMax);
  const tquant::ConvertReport report = tquant::convert(*model);
  // 6 layers x (Q, K, V, attention, attention output, FFN in, FFN out) + word embeddings.
  EXPECT_EQ(report.converted.size(), 6u * 7u + 1u) << report.to_string();
  return model;
}

at::Tensor forward(bert::BertModel& model, const Batch& b) {
  torch::NoGradGuard no_grad;
  return model(b.ids, b.types, b.mask);
}

TEST(ConvertedMiniLm, ForwardFromEightThreadsIsBitEqualToOneThread) {
  bert::BertModel model = converted_minilm();
  constexpr int kThreads = 8;
  constexpr int kCalls = 100;
  std::vector<Batch> inputs;
  std::vector<at::Tensor> expected;
  for (int t = 0; t < kThreads; ++t) {
    inputs.push_back(random_batch(1 + t % 3, 8 + 3 * t, 100 + t));
    expected.push_back(forward(model, inputs.back()));
    ASSERT_TRUE(expected.back().isfinite().all().item<bool>());
  }
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int call = 0; call < kCalls; ++call) {
          mismatches[t] += !at::equal(forward(model, inputs[t]), expected[t]);
        }
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[t], "") << "thread " << t;
    EXPECT_EQ(mismatches[t], 0) << "thread " << t << " of " << kCalls << " calls";
  }
}

TEST(ConvertedMiniLm, LoadsIntoAFreshModelThatAnswersAtOnceAndFromManyThreads) {
  bert::BertModel model = converted_minilm();
  const auto path = std::filesystem::temp_directory_path() /
                    ("converted_minilm_" + std::to_string(::getpid()) + ".safetensors");
  tquant::save_state(*model, path.string());
  auto fresh = bert::BertModel(bert::BertConfig(), /*add_pooler=*/false);
  fresh->eval();
  tquant::load_state(*fresh, path.string());
  std::filesystem::remove(path);
  // The first calls after the load come from four threads at once.
  const Batch b = random_batch(2, 24, 7);
  const at::Tensor expected = forward(model, b);
  std::vector<at::Tensor> outputs(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back([&, t] { outputs[t] = forward(fresh, b); });
  for (auto& thread : threads) thread.join();
  for (const auto& out : outputs) EXPECT_TRUE(at::equal(out, expected));
}

TEST(ConvertedMiniLm, BadRequestsGetErrorsAndNaNNeverBecomesANumber) {
  bert::BertModel model = converted_minilm();
  torch::NoGradGuard no_grad;
  const Batch b = random_batch(2, 16, 9);
  EXPECT_THROW(model(b.ids.to(torch::kFloat), b.types, b.mask), c10::Error);
  EXPECT_THROW(model(b.ids.view({-1}), b.types, b.mask), c10::Error);
  EXPECT_THROW(model(b.ids.narrow(0, 0, 0), b.types.narrow(0, 0, 0), b.mask.narrow(0, 0, 0)),
               c10::Error);
  // A NaN reaching the encoder (here through a NaN hidden state) comes out NaN, in its
  // sequence only: attention mixes tokens within a sequence, never across the batch.
  auto& layer = *model->encoder->layer->ptr<bert::BertLayerImpl>(0);
  at::Tensor hidden = torch::randn({2, 16, 384});
  hidden[0][3][5] = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor out = layer.forward(hidden, at::Tensor());
  EXPECT_TRUE(out[0].isnan().any().item<bool>());
  EXPECT_TRUE(out[1].isfinite().all().item<bool>());
  EXPECT_FALSE((out[0].isfinite() & out[0].abs().gt(1e6)).any().item<bool>());
}

}  // namespace
