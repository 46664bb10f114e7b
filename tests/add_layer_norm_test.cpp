// tquant::add_layer_norm (the fused residual add + LayerNorm) against its reference twin and
// against torch::nn::LayerNorm.

#include <torch/torch.h>

#include <gtest/gtest.h>

#include <limits>

#include "tquant/tquant.h"

namespace tquant {
namespace {

// float32 LayerNorm of rows up to a few thousand values: the fused kernel and ATen sum in a
// different order, so results agree to a few ulps of the output's magnitude.
constexpr double kRtol = 1e-5;
constexpr double kAtol = 1e-5;

struct Case {
  at::Tensor x, residual, weight, bias;
};

Case make_case(std::vector<int64_t> shape, uint64_t seed) {
  torch::manual_seed(seed);
  const int64_t h = shape.back();
  Case c;
  c.x = torch::randn(shape) * 3.0 + 0.5;
  c.residual = torch::randn(shape);
  c.weight = torch::rand({h}) + 0.5;
  c.bias = torch::randn({h}) * 0.1;
  return c;
}

TEST(AddLayerNorm, MatchesTorchLayerNormOnOddWidths) {
  torch::NoGradGuard no_grad;
  for (int64_t h : {1, 3, 17, 33, 65, 384, 1000}) {
    const Case c = make_case({3, 5, h}, static_cast<uint64_t>(h));
    torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({h}).eps(1e-12));
    norm->weight.copy_(c.weight);
    norm->bias.copy_(c.bias);
    const at::Tensor expected = norm(c.x + c.residual);
    const at::Tensor got =
        add_layer_norm(c.x, c.residual, norm->weight, norm->bias, norm->options.eps());
    EXPECT_TRUE(torch::allclose(got, expected, kRtol, kAtol))
        << "H = " << h << ", max |diff| " << (got - expected).abs().max().item<float>();
    EXPECT_TRUE(torch::allclose(got, add_layer_norm_ref(c.x, c.residual, c.weight, c.bias, 1e-12),
                                kRtol, kAtol));
  }
}

TEST(AddLayerNorm, WithoutAffineParametersIsPlainNormalization) {
  torch::NoGradGuard no_grad;
  const Case c = make_case({7, 48}, 1);
  const at::Tensor got = add_layer_norm(c.x, c.residual, at::Tensor(), at::Tensor(), 1e-5);
  const at::Tensor expected = at::layer_norm(c.x + c.residual, {48}, {}, {}, 1e-5);
  EXPECT_TRUE(torch::allclose(got, expected, kRtol, kAtol));
  EXPECT_NEAR(got.mean(-1).abs().max().item<float>(), 0.0, 1e-5);
}

TEST(AddLayerNorm, NonContiguousInputsGiveTheSameResult) {
  torch::NoGradGuard no_grad;
  const Case c = make_case({4, 6, 40}, 2);
  const at::Tensor xt = c.x.transpose(0, 1).contiguous().transpose(0, 1);  // strided view
  ASSERT_FALSE(xt.is_contiguous());
  const at::Tensor got = add_layer_norm(xt, c.residual, c.weight, c.bias, 1e-12);
  EXPECT_TRUE(torch::allclose(got, add_layer_norm_ref(c.x, c.residual, c.weight, c.bias, 1e-12),
                              kRtol, kAtol));
}

TEST(AddLayerNorm, NonFiniteValueMakesItsRowNaNOnly) {
  torch::NoGradGuard no_grad;
  Case c = make_case({5, 33}, 3);
  c.x.index_put_({2, 7}, std::numeric_limits<float>::quiet_NaN());
  c.residual.index_put_({4, 0}, std::numeric_limits<float>::infinity());
  const at::Tensor got = add_layer_norm(c.x, c.residual, c.weight, c.bias, 1e-12);
  EXPECT_TRUE(got[2].isnan().all().item<bool>());
  EXPECT_TRUE(got[4].isnan().all().item<bool>());
  for (int64_t row : {0, 1, 3}) EXPECT_TRUE(got[row].isfinite().all().item<bool>()) << row;
}

TEST(AddLayerNorm, GradientsFlowThroughTheReferenceWhenTraining) {
  const Case c = make_case({2, 3, 16}, 4);
  const at::Tensor x = c.x.clone().requires_grad_(true);
  const at::Tensor w = c.weight.clone().requires_grad_(true);
  add_layer_norm(x, c.residual, w, c.bias, 1e-5).pow(2).sum().backward();
  const at::Tensor x2 = c.x.clone().requires_grad_(true);
  const at::Tensor w2 = c.weight.clone().requires_grad_(true);
  at::layer_norm(x2 + c.residual, {16}, w2, c.bias, 1e-5).pow(2).sum().backward();
  EXPECT_TRUE(torch::allclose(x.grad(), x2.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(w.grad(), w2.grad(), 1e-5, 1e-5));
}

TEST(AddLayerNorm, BadShapesNameWhatWasExpected) {
  const Case c = make_case({2, 8}, 5);
  EXPECT_THROW(
      {
        try {
          add_layer_norm(c.x, c.residual.narrow(1, 0, 4), c.weight, c.bias, 1e-5);
        } catch (const c10::Error& e) {
          EXPECT_NE(std::string(e.what()).find("expected residual of the shape of x"),
                    std::string::npos)
              << e.what();
          throw;
        }
      },
      c10::ValueError);
  EXPECT_THROW(add_layer_norm(c.x, c.residual, c.weight.narrow(0, 0, 3), c.bias, 1e-5),
               c10::ValueError);
  EXPECT_THROW(add_layer_norm(c.x, c.residual.to(at::kDouble), c.weight, c.bias, 1e-5),
               c10::ValueError);
}

}  // namespace
}  // namespace tquant
