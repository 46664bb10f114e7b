#include <gtest/gtest.h>

#include "tquant/qparams.h"

#include <torch/torch.h>

using namespace tquant;

TEST(QParams, SymmetricInt8UsesHalfTheCodeSpan) {
  auto qp = calculate_qparams(torch::tensor(-2.0f), torch::tensor(1.0f), QuantSpec());
  EXPECT_FLOAT_EQ(qp.scale.item<float>(), 2.0f / 127.5f);
  EXPECT_EQ(qp.zero_point.item<int>(), 0);
  EXPECT_EQ(qp.scale.dim(), 0);
}

TEST(QParams, NarrowSymmetricMatchesNvidiaAmaxOver127) {
  auto qp = calculate_qparams(torch::tensor(-3.0f), torch::tensor(3.0f),
                              QuantSpec().narrow_range(true));
  EXPECT_FLOAT_EQ(qp.scale.item<float>(), 3.0f / 127.0f);
}

TEST(QParams, UnsignedSymmetricZeroPointIsMiddleCode) {
  auto qp = calculate_qparams(torch::tensor(-1.0f), torch::tensor(1.0f),
                              QuantSpec(QuantDtype::kUInt8));
  EXPECT_EQ(qp.zero_point.item<int>(), 128);
  auto qp4 = calculate_qparams(torch::tensor(-1.0f), torch::tensor(1.0f),
                               QuantSpec(QuantDtype::kUInt4));
  EXPECT_EQ(qp4.zero_point.item<int>(), 8);
}

TEST(QParams, AffineRangeIncludesZero) {
  // min > 0 is widened to 0, so zero stays exactly representable.
  auto qp = calculate_qparams(torch::tensor(0.5f), torch::tensor(2.55f),
                              QuantSpec(QuantDtype::kUInt8).symmetric(false));
  EXPECT_FLOAT_EQ(qp.scale.item<float>(), 2.55f / 255.0f);
  EXPECT_EQ(qp.zero_point.item<int>(), 0);
  auto neg = calculate_qparams(torch::tensor(-1.0f), torch::tensor(3.0f),
                               QuantSpec(QuantDtype::kUInt8).symmetric(false));
  EXPECT_EQ(neg.zero_point.item<int>(), 64);  // 0 - round(-1 / (4 / 255)) = 64
}

TEST(QParams, ZeroRangeGivesEpsScaleNotNaN) {
  auto qp = calculate_qparams(torch::tensor(0.0f), torch::tensor(0.0f), QuantSpec());
  EXPECT_FLOAT_EQ(qp.scale.item<float>(), static_cast<float>(kDefaultScaleEps));
  auto affine = calculate_qparams(torch::tensor(0.0f), torch::tensor(0.0f),
                                  QuantSpec(QuantDtype::kUInt8).symmetric(false));
  EXPECT_TRUE(std::isfinite(affine.scale.item<float>()));
  EXPECT_EQ(affine.zero_point.item<int>(), 0);
}

TEST(QParams, Fp8ScaleMapsAmaxTo448) {
  auto qp = qparams_from_amax(torch::tensor(896.0f), QuantSpec(QuantDtype::kFp8E4M3));
  EXPECT_FLOAT_EQ(qp.scale.item<float>(), 2.0f);
}

TEST(QParams, EmptyOrNonFiniteRangeIsAClearError) {
  EXPECT_THROW(calculate_qparams(torch::empty({0}), torch::empty({0}), QuantSpec()),
               c10::ValueError);
  EXPECT_THROW(calculate_qparams(torch::tensor(INFINITY), torch::tensor(-INFINITY), QuantSpec()),
               c10::ValueError);
  EXPECT_THROW(calculate_qparams(torch::tensor(1.0f), torch::tensor(0.0f), QuantSpec()),
               c10::ValueError);
}

TEST(QParams, ReduceMinMaxPerChannelAndPerBlockShapes) {
  torch::manual_seed(0);
  auto x = torch::randn({3, 17, 8});
  auto [lo, hi] = reduce_min_max(x, QuantSpec().granularity(Granularity::kPerChannel).axis(1));
  EXPECT_EQ(lo.sizes(), torch::IntArrayRef({17}));
  EXPECT_TRUE(torch::equal(hi, x.amax({0, 2})));
  EXPECT_TRUE(torch::equal(lo, x.amin({0, 2})));
  auto [blo, bhi] = reduce_min_max(
      x, QuantSpec().granularity(Granularity::kPerBlock).axis(2).block_size(4));
  EXPECT_EQ(blo.sizes(), torch::IntArrayRef({3, 17, 2}));
  EXPECT_TRUE(torch::equal(bhi, x.reshape({3, 17, 2, 4}).amax(-1)));
  EXPECT_THROW(reduce_min_max(x, QuantSpec().granularity(Granularity::kPerBlock).axis(1)
                                     .block_size(4)),
               c10::ValueError);
  EXPECT_THROW(reduce_min_max(x, QuantSpec().granularity(Granularity::kPerChannel).axis(5)),
               c10::IndexError);
  EXPECT_THROW(reduce_min_max(torch::empty({0, 4}), QuantSpec()), c10::ValueError);
}
