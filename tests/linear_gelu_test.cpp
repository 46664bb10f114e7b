// QuantLinear::set_fused_gelu: Linear + GELU in every mode, GELU inside the converted INT8 GEMM's
// epilogue (oneDNN post-op on CPU), and int8_linear_static's gelu flag against its twin.

#include <torch/torch.h>

#include <gtest/gtest.h>

#include <limits>

#include "tquant/tquant.h"

namespace tquant {
namespace {

QuantLinear calibrated_linear(int64_t in, int64_t out, const QConfig& qconfig, uint64_t seed) {
  torch::manual_seed(seed);
  QuantLinear fc(torch::nn::LinearOptions(in, out));
  fc->set_fused_gelu(true);
  fc->set_qconfig(qconfig);
  fc->set_mode(QuantMode::kObserve);
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 3; ++i) fc(torch::randn({9, in}) * 2.0);
  fc->set_mode(QuantMode::kFakeQuant);
  return fc;
}

TEST(LinearGelu, FloatModeIsGeluOfTorchLinear) {
  torch::manual_seed(1);
  QuantLinear fc(torch::nn::LinearOptions(17, 5));
  EXPECT_FALSE(fc->fused_gelu());
  fc->set_fused_gelu(true);
  const at::Tensor x = torch::randn({2, 3, 17});
  EXPECT_TRUE(torch::equal(fc(x), at::gelu(torch::nn::functional::linear(x, fc->weight, fc->bias))));
  const auto copy = std::dynamic_pointer_cast<QuantLinearImpl>(fc->clone());
  EXPECT_TRUE(copy->fused_gelu()) << "clone() keeps the fused GELU";
}

TEST(LinearGelu, FakeQuantIsGeluOfTheSimulatedProductAndTrains) {
  QuantLinear fc = calibrated_linear(33, 7, int8_static_qconfig(), 2);
  const at::Tensor x = torch::randn({4, 33});
  const at::Tensor expected = at::gelu(torch::nn::functional::linear(
      fc->input_quantizer(x), fc->weight_quantizer(fc->weight), fc->bias));
  EXPECT_TRUE(torch::allclose(fc(x), expected, 0, 0));
  fc(x).sum().backward();
  EXPECT_TRUE(fc->weight.grad().defined() && fc->weight.grad().abs().sum().item<float>() > 0);
}

// The converted output against the simulation: both compute GELU of the same quantized product
// (exact int32 sums vs float32 sums of dequantized values), so they differ by float32 rounding
// only, far below one quantization step; kRelTol is relative to max |y|.
constexpr double kRelTol = 1e-5;

void expect_converted_matches_simulation(const QConfig& qconfig, const std::string& scheme) {
  for (int64_t in : {16, 48, 64}) {
    QuantLinear fc = calibrated_linear(in, 17, qconfig, static_cast<uint64_t>(in));
    torch::NoGradGuard no_grad;
    const at::Tensor x = torch::randn({3, 5, in}) * 2.0;
    const at::Tensor simulated = fc(x);
    ASSERT_TRUE(fc->convert().converted) << scheme;
    EXPECT_EQ(fc->converted_scheme(), scheme);
    const at::Tensor converted = fc(x);
    const double bound = kRelTol * simulated.abs().max().item<double>();
    EXPECT_LE((converted - simulated).abs().max().item<double>(), bound)
        << scheme << ", in_features " << in;
    // GELU is really there: negative pre-activations come out in (-0.17, 0].
    EXPECT_GE(converted.min().item<float>(), -0.1701f);
  }
}

TEST(LinearGelu, ConvertedInt8StaticEqualsTheSimulation) {
  expect_converted_matches_simulation(int8_static_qconfig(), "int8_static");
}

TEST(LinearGelu, ConvertedW4A8PerBlockAppliesGeluAfterTheBlocks) {
  expect_converted_matches_simulation(w4a8_qconfig(16), "w4a8:block=16");
}

TEST(LinearGelu, Int8LinearStaticGeluEqualsGeluOfTheUnfusedResult) {
  torch::manual_seed(3);
  for (int64_t k : {3, 33, 384}) {
    const at::Tensor w = torch::randn({65, k});
    const Int8Weight weight = prepare_int8_weight(w);
    const at::Tensor x = torch::randn({17, k});
    const at::Tensor bias = torch::randn({65});
    const double sx = x.abs().max().item<double>() / 127.0;
    const at::Tensor fused = int8_linear_static(x, sx, weight, bias, c10::nullopt, true);
    const at::Tensor unfused = int8_linear_static(x, sx, weight, bias);
    // oneDNN's GELU post-op on the float32 epilogue result, against at::gelu of the same result.
    EXPECT_TRUE(torch::allclose(fused, at::gelu(unfused), 1e-6, 1e-6))
        << "k " << k << " max diff " << (fused - at::gelu(unfused)).abs().max().item<float>();
    const at::Tensor ref = int8_linear_static_ref(x, sx, weight, bias, c10::nullopt, true);
    EXPECT_TRUE(torch::allclose(fused, ref, 1e-5, 1e-5)) << "k " << k;
  }
}

TEST(LinearGelu, NonFiniteInputRowStaysNaN) {
  QuantLinear fc = calibrated_linear(16, 8, int8_static_qconfig(), 4);
  ASSERT_TRUE(fc->convert().converted);
  torch::NoGradGuard no_grad;
  at::Tensor x = torch::randn({3, 16});
  x.index_put_({1, 2}, std::numeric_limits<float>::quiet_NaN());
  const at::Tensor y = fc(x);
  EXPECT_TRUE(y[1].isnan().all().item<bool>());
  EXPECT_TRUE(y[0].isfinite().all().item<bool>());
  EXPECT_TRUE(y[2].isfinite().all().item<bool>());
}

}  // namespace
}  // namespace tquant
