#include <gtest/gtest.h>

#include "tquant/functional.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

using namespace tquant;

namespace {

torch::Tensor heavy_tailed(std::vector<int64_t> shape, int64_t seed) {
  torch::manual_seed(seed);
  auto x = torch::randn(shape) * 2;
  return x + (torch::rand(shape) < 0.01).to(torch::kFloat) * 25;  // a few outliers
}

QParams per_tensor_qparams(const torch::Tensor& x, QuantSpec spec) {
  return calculate_qparams(x.min() * 0.8, x.max() * 0.8, spec);  // clips some values
}

}  // namespace

TEST(FakeQuantize, PerTensorForwardAndGradientEqualLibTorch) {
  for (auto spec : {QuantSpec(), QuantSpec(QuantDtype::kUInt8).symmetric(false),
                    QuantSpec(QuantDtype::kInt4).narrow_range(true)}) {
    auto x = heavy_tailed({17, 33}, 1).requires_grad_(true);
    auto qp = per_tensor_qparams(x.detach(), spec);
    auto ours = fake_quantize(x, qp, GradientMode::kSteClipped);
    auto grad_out = torch::randn_like(ours);
    auto grad_ours = torch::autograd::grad({ours}, {x}, {grad_out})[0];

    auto x_ref = x.detach().clone().requires_grad_(true);
    auto ref = torch::fake_quantize_per_tensor_affine(
        x_ref, qp.scale.item<double>(), qp.zero_point.item<int64_t>(), quant_min(spec),
        quant_max(spec));
    auto grad_ref = torch::autograd::grad({ref}, {x_ref}, {grad_out})[0];
    EXPECT_TRUE(torch::equal(ours, ref)) << to_string(spec);
    EXPECT_TRUE(torch::equal(grad_ours, grad_ref)) << to_string(spec);
    EXPECT_GT((grad_ours == 0).sum().item<int64_t>(), 0) << "some values must be clipped";
  }
}

TEST(FakeQuantize, PerChannelForwardAndGradientEqualLibTorch) {
  auto x = heavy_tailed({5, 3, 7}, 2).requires_grad_(true);
  for (int64_t axis : {0, 1, 2}) {
    auto spec = QuantSpec().granularity(Granularity::kPerChannel).axis(axis);
    auto [lo, hi] = reduce_min_max(x.detach(), spec);
    auto qp = calculate_qparams(lo * 0.7, hi * 0.7, spec);
    auto ours = fake_quantize(x, qp);
    auto grad_out = torch::randn_like(ours);
    auto grad_ours = torch::autograd::grad({ours}, {x}, {grad_out})[0];
    auto x_ref = x.detach().clone().requires_grad_(true);
    auto ref = torch::fake_quantize_per_channel_affine(x_ref, qp.scale, qp.zero_point, axis,
                                                       quant_min(spec), quant_max(spec));
    auto grad_ref = torch::autograd::grad({ref}, {x_ref}, {grad_out})[0];
    EXPECT_TRUE(torch::equal(ours, ref)) << "axis " << axis;
    EXPECT_TRUE(torch::equal(grad_ours, grad_ref)) << "axis " << axis;
  }
}

TEST(FakeQuantize, PlainSteGradientPassesEverywhere) {
  auto x = heavy_tailed({33}, 3).requires_grad_(true);
  auto qp = per_tensor_qparams(x.detach(), QuantSpec());
  auto y = fake_quantize(x, qp, GradientMode::kSte);
  auto grad = torch::autograd::grad({y.sum()}, {x})[0];
  EXPECT_TRUE(torch::equal(grad, torch::ones_like(x)));
}

TEST(FakeQuantize, EqualsDequantizeOfQuantize) {
  auto x = heavy_tailed({65, 3}, 4);
  for (auto spec : {QuantSpec(), QuantSpec(QuantDtype::kUInt8).symmetric(false),
                    QuantSpec(QuantDtype::kUInt4).symmetric(false)}) {
    auto qp = per_tensor_qparams(x, spec);
    auto q = quantize(x, qp);
    EXPECT_EQ(q.scalar_type(), storage_type(spec.dtype()));
    EXPECT_GE(q.to(torch::kInt).min().item<int>(), quant_min(spec));
    EXPECT_LE(q.to(torch::kInt).max().item<int>(), quant_max(spec));
    EXPECT_TRUE(torch::equal(dequantize(q, qp), fake_quantize(x, qp))) << to_string(spec);
  }
}

TEST(FakeQuantize, PerBlockMatchesPerChannelOnEachBlock) {
  auto w = heavy_tailed({6, 64}, 5);
  auto spec = QuantSpec(QuantDtype::kInt4).granularity(Granularity::kPerBlock).axis(1)
                  .block_size(16);
  auto [lo, hi] = reduce_min_max(w, spec);
  auto qp = calculate_qparams(lo, hi, spec);
  EXPECT_EQ(qp.scale.sizes(), torch::IntArrayRef({6, 4}));
  auto ours = fake_quantize(w, qp);
  // Reference: treat each of the 6 * 4 blocks as a channel.
  auto rows = w.reshape({24, 16});
  auto ref = torch::fake_quantize_per_channel_affine(rows, qp.scale.reshape({24}),
                                                     qp.zero_point.reshape({24}), 0, -8, 7);
  EXPECT_TRUE(torch::equal(ours, ref.reshape({6, 64})));
  EXPECT_TRUE(torch::equal(dequantize(quantize(w, qp), qp), ours));
  // Within one block the error is at most half a step: symmetric int4 maps amax to 7.5 steps,
  // so the largest positive value is clipped by exactly half a step.
  auto step = qp.scale.repeat_interleave(16, 1);
  EXPECT_TRUE(((ours - w).abs() <= step * 0.5001).all().item<bool>());
}

TEST(FakeQuantize, PerBlockAlongLeadingAxis) {
  auto w = heavy_tailed({32, 5}, 6);
  auto spec = QuantSpec().granularity(Granularity::kPerBlock).axis(0).block_size(8);
  auto [lo, hi] = reduce_min_max(w, spec);
  auto qp = calculate_qparams(lo, hi, spec);
  EXPECT_EQ(qp.scale.sizes(), torch::IntArrayRef({4, 5}));
  auto out = fake_quantize(w, qp);
  auto step = qp.scale.repeat_interleave(8, 0);
  EXPECT_TRUE(((out - w).abs() <= step * 0.5001).all().item<bool>());
}

TEST(FakeQuantize, Fp8RoundTripUsesE4M3Grid) {
  auto x = torch::tensor({0.0f, 1.0f, 1.0625f, 3.3f, -500.0f, 448.0f});
  auto qp = qparams_from_amax(torch::tensor(448.0f), QuantSpec(QuantDtype::kFp8E4M3));
  auto q = quantize(x, qp);
  EXPECT_EQ(q.scalar_type(), torch::kFloat8_e4m3fn);
  auto y = dequantize(q, qp);
  auto expected = x.clamp(-448, 448).to(torch::kFloat8_e4m3fn).to(torch::kFloat);
  EXPECT_TRUE(torch::equal(y, expected));
  auto xg = x.clone().requires_grad_(true);
  auto grad = torch::autograd::grad({fake_quantize(xg, qp).sum()}, {xg})[0];
  EXPECT_EQ(grad[4].item<float>(), 0.0f) << "clipped value gets no gradient";
  EXPECT_EQ(grad[3].item<float>(), 1.0f);
}

TEST(FakeQuantize, LearnableMatchesLibTorchLsq) {
  auto x = heavy_tailed({9, 4}, 7).requires_grad_(true);
  auto spec = QuantSpec(QuantDtype::kUInt8).symmetric(false);
  auto scale = torch::tensor({0.05f}).requires_grad_(true);
  auto zp = torch::tensor({120.0f}).requires_grad_(true);
  const double factor = lsq_grad_factor(x.numel(), spec);
  EXPECT_DOUBLE_EQ(factor, 1.0 / std::sqrt(36.0 * 255.0));
  auto ours = fake_quantize_learnable(x, scale, zp, spec, factor);
  auto g = torch::autograd::grad({ours.sum()}, {x, scale, zp});
  auto x2 = x.detach().clone().requires_grad_(true);
  auto s2 = scale.detach().clone().requires_grad_(true);
  auto z2 = zp.detach().clone().requires_grad_(true);
  auto ref = torch::_fake_quantize_learnable_per_tensor_affine(x2, s2, z2, 0, 255, factor);
  auto g2 = torch::autograd::grad({ref.sum()}, {x2, s2, z2});
  EXPECT_TRUE(torch::equal(ours, ref));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(g[i], g2[i])) << "gradient " << i;
  EXPECT_NE(g[1].item<float>(), 0.0f);
}

TEST(FakeQuantize, BadInputsAreClearErrors) {
  auto qp = calculate_qparams(torch::tensor(-1.0f), torch::tensor(1.0f), QuantSpec());
  EXPECT_THROW(fake_quantize(torch::ones({3}, torch::kInt), qp), c10::ValueError);
  EXPECT_THROW(quantize(torch::ones({3}, torch::kComplexFloat), qp), c10::ValueError);
  EXPECT_THROW(dequantize(torch::ones({3}, torch::kFloat), qp), c10::ValueError);
  auto per_channel = calculate_qparams(-torch::ones({4}), torch::ones({4}),
                                       QuantSpec().granularity(Granularity::kPerChannel));
  EXPECT_THROW(fake_quantize(torch::ones({3, 2}), per_channel), c10::ValueError);
  EXPECT_THROW(fake_quantize(torch::ones({3, 2}), QParams{}), c10::ValueError);
  auto block = QuantSpec().granularity(Granularity::kPerBlock).axis(0).block_size(4);
  EXPECT_THROW(fake_quantize_learnable(torch::ones({4}), torch::ones({1}), torch::zeros({1}),
                                       block),
               c10::NotImplementedError);
}

TEST(FakeQuantize, EmptyTensorGivesEmptyResult) {
  auto qp = calculate_qparams(torch::tensor(-1.0f), torch::tensor(1.0f), QuantSpec());
  EXPECT_EQ(fake_quantize(torch::empty({0, 3}), qp).numel(), 0);
}

TEST(FakeQuantize, NonFiniteInputsComeOutNaNAnywhereInLargeTensors) {
  // Large enough for several parallel chunks of the non-finite check; odd length for the tail.
  const QuantSpec spec;
  for (int64_t at_index : {int64_t{0}, int64_t{70000}, int64_t{200002}}) {
    torch::manual_seed(5);
    auto x = torch::randn({200003});
    const QParams qp = per_tensor_qparams(x, spec);
    x[at_index] = std::numeric_limits<float>::infinity();
    x[at_index / 2 + 1] = std::numeric_limits<float>::quiet_NaN();
    for (bool learnable : {false, true}) {
      const auto y = learnable
                         ? fake_quantize_learnable(x, qp.scale.reshape({1}).to(torch::kFloat),
                                                   qp.zero_point.reshape({1}).to(torch::kFloat),
                                                   spec, 1.0)
                         : fake_quantize(x, qp);
      EXPECT_TRUE(std::isnan(y[at_index].item<float>())) << at_index << " learnable " << learnable;
      EXPECT_TRUE(std::isnan(y[at_index / 2 + 1].item<float>())) << at_index;
      EXPECT_EQ(y.isnan().sum().item<int64_t>(), 2) << at_index << " learnable " << learnable;
    }
  }
}
