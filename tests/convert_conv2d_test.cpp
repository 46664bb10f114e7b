#include <gtest/gtest.h>

#include <cstdio>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "tquant/fuse.h"
#include "tquant/nn/quant_conv2d.h"
#include "tquant/qconfig.h"
#include "tquant/quantize.h"
#include "tquant/serialize.h"

#include "../src/nn/conv2d_int8_onednn.h"
#include "test_util.h"

using namespace tquant;

namespace {

/// Max |a - b| in units of one int8 step of b's range (max |b| / 127).
double error_in_output_steps(const at::Tensor& a, const at::Tensor& b) {
  const double step = b.abs().max().item<double>() / 127.0;
  return (a - b).abs().max().item<double>() / step;
}

/// One conv configuration of the equivalence test.
struct ConvCase {
  std::string label;
  torch::nn::Conv2dOptions options;
  std::vector<int64_t> input_shape;
};

/// Observes `batches` random inputs, then switches to fake quantization.
void calibrate_conv(QuantConv2d& conv, const std::vector<int64_t>& shape, int64_t batches) {
  torch::NoGradGuard no_grad;
  conv->set_qconfig(int8_static_qconfig());
  conv->set_mode(QuantMode::kObserve);
  for (int64_t i = 0; i < batches; ++i) conv(torch::randn(shape));
  conv->set_mode(QuantMode::kFakeQuant);
}

/// conv3x3 -> relu -> conv3x3 (stride 2, groups 2) in a Sequential: what the save / load and
/// thread tests serve.
torch::nn::Sequential make_served_net() {
  QuantConv2d first(torch::nn::Conv2dOptions(3, 8, 3).padding(1));
  first->set_fused_relu(true);
  return torch::nn::Sequential(
      first, QuantConv2d(torch::nn::Conv2dOptions(8, 6, 3).stride(2).groups(2).bias(false)));
}

torch::nn::Sequential converted_served_net() {
  torch::manual_seed(31);
  auto net = make_served_net();
  net->eval();
  prepare(*net, QConfigMapping(int8_static_qconfig()));
  {
    torch::NoGradGuard no_grad;
    calibrate(*net, [&] {
      for (int i = 0; i < 4; ++i) net->forward(torch::randn({2, 3, 15, 13}));
    });
  }
  const ConvertReport report = convert(*net);
  EXPECT_EQ(report.converted.size(), 2u) << report;
  return net;
}

}  // namespace

TEST(ConvertConv2dTest, InputQuantizationKernelEqualsReferenceBitForBit) {
  torch::manual_seed(1);
  for (const auto& shape : std::vector<std::vector<int64_t>>{
           {1, 1, 1, 1}, {2, 3, 5, 7}, {3, 17, 9, 33}, {1, 64, 8, 8}}) {
    at::Tensor x = torch::randn(shape) * 3;
    if (x.numel() > 3) {
      // 1.5 and 2.5 steps of the scale 0.25: ties, rounded to even (2 and 2).
      x.view(-1)[1] = 0.375F;
      x.view(-1)[2] = 0.625F;
      x.view(-1)[x.numel() - 1] = std::numeric_limits<float>::infinity();
    }
    x.view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
    for (const float scale : {0.02F, 0.25F}) {
      for (const bool channels_last : {false, true}) {
        const at::Tensor in = channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
        const auto fast = tquant::detail::quantize_conv2d_input(in, scale, 128, 1, 255);
        const auto ref = tquant::detail::quantize_conv2d_input_ref(in, scale, 128, 1, 255);
        EXPECT_TRUE(fast.codes.is_contiguous(at::MemoryFormat::ChannelsLast));
        EXPECT_TRUE(torch::equal(fast.codes, ref.codes)) << "shape " << x.sizes();
        EXPECT_EQ(fast.nonfinite_in_sample, ref.nonfinite_in_sample);
        EXPECT_EQ(fast.nonfinite_in_sample[0], 1);
        if (scale == 0.25F && x.numel() > 3) {
          const at::Tensor nchw = fast.codes.contiguous().view(-1);
          EXPECT_EQ(nchw[1].item<int>(), 130);  // 128 + 2
          EXPECT_EQ(nchw[2].item<int>(), 130);
          EXPECT_EQ(nchw[0].item<int>(), 1);    // NaN -> qmin (and the sample is flagged)
        }
      }
    }
  }
}

TEST(ConvertConv2dTest, ConvertedEqualsFakeQuantWithinOneOutputStepOnOddShapes) {
  using O = torch::nn::Conv2dOptions;
  const std::vector<ConvCase> cases = {
      {"3x3 pad 1", O(3, 5, 3).padding(1), {2, 3, 17, 13}},
      {"batch 1, stride 2, no bias", O(7, 9, 3).stride(2).bias(false), {1, 7, 33, 17}},
      {"groups 4, stride (2, 1)", O(8, 12, 3).groups(4).stride({2, 1}).padding(1), {3, 8, 9, 11}},
      {"depthwise", O(16, 16, 3).groups(16).padding(1), {2, 16, 7, 5}},
      {"dilation 2, pad 2", O(5, 3, 3).dilation(2).padding(2), {2, 5, 13, 19}},
      {"1x5 kernel, pad (0, 2)", O(4, 6, {1, 5}).padding({0, 2}), {1, 4, 6, 10}},
      {"1x1", O(65, 33, 1), {2, 65, 3, 3}},
      {"same, even kernel", O(3, 4, 4).padding(torch::kSame), {2, 3, 9, 8}},
      {"reflect padding", O(3, 4, 3).padding(1).padding_mode(torch::kReflect), {2, 3, 8, 7}},
      {"unbatched", O(3, 4, 3).padding(1), {3, 11, 9}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const ConvCase& c = cases[i];
    torch::manual_seed(100 + static_cast<int64_t>(i));
    QuantConv2d conv(c.options);
    calibrate_conv(conv, c.input_shape, 3);
    torch::NoGradGuard no_grad;
    const at::Tensor x = torch::randn(c.input_shape);
    const at::Tensor simulated = conv(x);
    const ConvertResult result = conv->convert();
    ASSERT_TRUE(result.converted) << c.label << ": " << result.reason;
    EXPECT_EQ(result.scheme, "int8_static");
    EXPECT_EQ(conv->named_parameters().find("weight"), nullptr);
    const at::Tensor converted = conv(x);
    ASSERT_EQ(converted.sizes(), simulated.sizes()) << c.label;
    const double steps = error_in_output_steps(converted, simulated);
    EXPECT_LE(steps, 1.0) << c.label;
    // Same integer codes as the simulation: only float32 rounding of the scaling differs.
    EXPECT_LE(steps, 0.01) << c.label << ": more than float rounding apart";
    std::printf("%-28s converted vs fake-quant: %.2e output steps\n", c.label.c_str(), steps);
  }
}

TEST(ConvertConv2dTest, FusedConvBatchNormReluConvertsWithReluPostOp) {
  torch::manual_seed(5);
  torch::nn::Sequential net(
      torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1).bias(false)),
      torch::nn::BatchNorm2d(8), torch::nn::ReLU(),
      torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 4, 3)));
  {
    // Non-trivial running statistics, so folding changes the weights.
    torch::NoGradGuard no_grad;
    net->train();
    for (int i = 0; i < 5; ++i) net->forward(torch::randn({4, 3, 10, 10}) * 2 + 0.5);
  }
  net->eval();
  const FuseReport fused = fuse(*net, {{"0", "1", "2"}});
  ASSERT_EQ(fused.groups.size(), 1u);
  EXPECT_TRUE(fused.groups[0].relu);
  prepare(*net, QConfigMapping(int8_static_qconfig()));
  auto first = net->ptr(0)->as<QuantConv2dImpl>();
  ASSERT_NE(first, nullptr);
  first->set_fused_relu(true);  // the ReLU fuse checked; the separate ReLU stays harmless
  torch::NoGradGuard no_grad;
  calibrate(*net, [&] {
    for (int i = 0; i < 4; ++i) net->forward(torch::randn({2, 3, 10, 10}));
  });
  const at::Tensor x = torch::randn({3, 3, 10, 10});
  const at::Tensor conv_only_simulated = first->forward(x);
  const at::Tensor simulated = net->forward(x);
  const ConvertReport report = convert(*net);
  ASSERT_EQ(report.converted.size(), 2u) << report;
  EXPECT_EQ(report.converted[0].scheme, "int8_static+relu");
  EXPECT_NE(report.converted[0].backend.find("ReLU fused"), std::string::npos);
  EXPECT_EQ(report.converted[1].scheme, "int8_static");
  const at::Tensor conv_only = first->forward(x);
  EXPECT_EQ(conv_only.min().item<float>(), 0.0F);  // the post-op clipped the negatives
  EXPECT_LE(error_in_output_steps(conv_only, conv_only_simulated), 0.01);
  EXPECT_LE(error_in_output_steps(net->forward(x), simulated), 1.0);
}

TEST(ConvertConv2dTest, UnsupportedConfigsStayInFakeQuantWithTheReason) {
  torch::manual_seed(6);
  QConfig weight_only = weight_only_int8_qconfig();
  QuantConv2d conv(torch::nn::Conv2dOptions(3, 4, 3));
  conv->set_qconfig(weight_only);
  conv->set_mode(QuantMode::kFakeQuant);
  const ConvertResult result = conv->convert();
  EXPECT_FALSE(result.converted);
  EXPECT_NE(result.reason.find("input and a weight quantizer"), std::string::npos)
      << result.reason;
  EXPECT_EQ(conv->mode(), QuantMode::kFakeQuant);
  EXPECT_TRUE(conv->weight.defined());

  QuantConv2d dynamic(torch::nn::Conv2dOptions(3, 4, 3));
  dynamic->set_qconfig(int8_dynamic_qconfig());
  dynamic->set_mode(QuantMode::kFakeQuant);
  const ConvertResult dynamic_result = dynamic->convert();
  EXPECT_FALSE(dynamic_result.converted);
  EXPECT_NE(dynamic_result.reason.find("static per-tensor"), std::string::npos)
      << dynamic_result.reason;
  EXPECT_EQ(dynamic->mode(), QuantMode::kFakeQuant);
}

TEST(ConvertConv2dTest, SaveThenLoadIntoFreshModelGivesBitIdenticalOutput) {
  auto net = converted_served_net();
  const std::string path = ::testing::TempDir() + "convert_conv2d_test.safetensors";
  save_state(*net, path);
  torch::manual_seed(99);  // different float weights: everything must come from the file
  auto fresh = make_served_net();
  fresh->ptr(0)->as<QuantConv2dImpl>()->set_fused_relu(false);  // the scheme restores it
  fresh->eval();
  load_state(*fresh, path);
  std::remove(path.c_str());
  auto loaded_first = fresh->ptr(0)->as<QuantConv2dImpl>();
  EXPECT_EQ(loaded_first->converted_scheme(), "int8_static+relu");
  EXPECT_TRUE(loaded_first->fused_relu());
  torch::NoGradGuard no_grad;
  for (const auto& shape : std::vector<std::vector<int64_t>>{{1, 3, 15, 13}, {5, 3, 8, 9}}) {
    const at::Tensor x = torch::randn(shape);
    EXPECT_TRUE(torch::equal(fresh->forward(x), net->forward(x))) << x.sizes();
  }
}

TEST(ConvertConv2dTest, CloneOfConvertedModelGivesBitIdenticalOutput) {
  auto net = converted_served_net();
  auto copy = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(net->clone());
  ASSERT_NE(copy, nullptr);
  auto first = copy->ptr(0)->as<QuantConv2dImpl>();
  EXPECT_EQ(first->converted_scheme(), "int8_static+relu");
  EXPECT_NE(first->weight_int8.data_ptr(),
            net->ptr(0)->as<QuantConv2dImpl>()->weight_int8.data_ptr());
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({2, 3, 15, 13});
  EXPECT_TRUE(torch::equal(copy->forward(x), net->forward(x)));
}

TEST(ConvertConv2dTest, EightThreadsHundredCallsEqualSingleThreadedOutputBitForBit) {
  auto net = converted_served_net();
  const std::string path = ::testing::TempDir() + "convert_conv2d_threads.safetensors";
  save_state(*net, path);
  // A freshly loaded model (load_state prepacks it; the threads share it from the first call).
  torch::manual_seed(7);
  auto served = make_served_net();
  load_state(*served, path);
  std::remove(path.c_str());
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> inputs, expected;
  for (int i = 0; i < 4; ++i) {
    inputs.push_back(torch::randn({1 + i, 3, 15, 13}));
    expected.push_back(net->forward(inputs.back()));
  }
  constexpr int kThreads = 8;
  constexpr int kCalls = 100;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      torch::NoGradGuard thread_no_grad;
      try {
        for (int call = 0; call < kCalls; ++call) {
          const size_t which = static_cast<size_t>(t + call) % inputs.size();
          if (!torch::equal(served->forward(inputs[which]), expected[which])) ++mismatches[t];
        }
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[t], "") << "thread " << t;
    EXPECT_EQ(mismatches[t], 0) << "thread " << t;
  }
}

TEST(ConvertConv2dTest, BadInputGetsNamedErrorsOrDocumentedResults) {
  auto net = converted_served_net();
  auto conv = net->ptr(1)->as<QuantConv2dImpl>();
  const std::string name = "QuantConv2d(in_channels=8, out_channels=6";
  torch::NoGradGuard no_grad;
  const auto message = [&](const at::Tensor& x) {
    return test::error_message([&] { conv->forward(x); });
  };
  const std::string rank = message(torch::randn({8, 5}));
  EXPECT_NE(rank.find(name), std::string::npos) << rank;
  EXPECT_NE(rank.find("[N, 8, H, W]"), std::string::npos) << rank;
  EXPECT_NE(message(torch::randn({2, 7, 9, 9})).find("got shape [2, 7, 9, 9]"),
            std::string::npos);
  const std::string dtype = message(torch::ones({1, 8, 9, 9}, at::kInt));
  EXPECT_NE(dtype.find("floating-point input, got Int"), std::string::npos) << dtype;
  const std::string device = message(torch::empty({1, 8, 9, 9}, at::kMeta));
  EXPECT_NE(device.find("on CPU only"), std::string::npos) << device;
  EXPECT_NE(device.find(name), std::string::npos) << device;
  const std::string small = message(torch::randn({1, 8, 2, 9}));
  EXPECT_NE(small.find("dilated kernel size 3"), std::string::npos) << small;

  // Empty batch: an empty output of the right shape.
  const at::Tensor empty = conv->forward(torch::randn({0, 8, 9, 9}));
  EXPECT_EQ(empty.sizes(), (std::vector<int64_t>{0, 6, 4, 4}));

  // NaN / Inf: that sample's output is all NaN, the others are unchanged.
  const at::Tensor x = torch::randn({3, 8, 9, 9});
  const at::Tensor clean = conv->forward(x);
  at::Tensor dirty = x.clone();
  dirty[1][2][3][4] = std::numeric_limits<float>::quiet_NaN();
  dirty[2][0][0][0] = -std::numeric_limits<float>::infinity();
  const at::Tensor y = conv->forward(dirty);
  EXPECT_TRUE(torch::equal(y[0], clean[0]));
  EXPECT_TRUE(y[1].isnan().all().item<bool>());
  EXPECT_TRUE(y[2].isnan().all().item<bool>());

  // Other float dtypes compute in float32 and come back in their own dtype.
  const at::Tensor as_double = conv->forward(x.to(at::kDouble));
  EXPECT_EQ(as_double.scalar_type(), at::kDouble);
  EXPECT_TRUE(torch::equal(as_double.to(at::kFloat), clean));
}
