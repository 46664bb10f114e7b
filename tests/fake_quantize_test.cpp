#include <gtest/gtest.h>

#include "tquant/fake_quantize.h"
#include "tquant/histogram_observer.h"
#include "tquant/nn/quant_linear.h"

#include <limits>

#include <torch/torch.h>

using namespace tquant;

namespace {

FakeQuantize min_max_fake_quant(QuantSpec spec = QuantSpec()) {
  return FakeQuantize(FakeQuantizeOptions(
      observer_factory<MinMaxObserver>(MinMaxObserverOptions(spec))));
}

}  // namespace

TEST(FakeQuantizeModule, ObservesThenFakeQuantizesLikeTheFunction) {
  auto fq = min_max_fake_quant();
  torch::manual_seed(0);
  auto x = torch::randn({17, 5});
  auto y = fq(x);
  auto qp = calculate_qparams(x.min(), x.max(), QuantSpec());
  EXPECT_TRUE(torch::equal(y, fake_quantize(x, qp)));
  EXPECT_TRUE(torch::equal(fq->scale, qp.scale));
}

TEST(FakeQuantizeModule, SwitchesControlObservingAndQuantizing) {
  auto fq = min_max_fake_quant();
  fq->enable_fake_quant(false);
  auto x = torch::randn({8});
  EXPECT_TRUE(fq(x).is_same(x)) << "observe only: returns the input";
  EXPECT_EQ(fq->scale.numel(), 0) << "qparams are computed only when fake quant is on";
  fq->update_qparams();
  fq->enable_observer(false);
  fq->enable_fake_quant(true);
  auto frozen = fq->scale.clone();
  fq(x * 100);  // observer off: the range stays
  EXPECT_TRUE(torch::equal(frozen, fq->scale));
}

TEST(FakeQuantizeModule, FakeQuantWithoutQParamsIsAClearError) {
  auto fq = min_max_fake_quant();
  fq->enable_observer(false);
  EXPECT_THROW(fq(torch::randn({3})), c10::ValueError);
}

TEST(FakeQuantizeModule, GradientFlowsThroughStraightThrough) {
  // Narrow range maps max |x| to code 127 exactly, so no value is clipped.
  auto fq = min_max_fake_quant(QuantSpec().narrow_range(true));
  auto x = torch::randn({33}, torch::requires_grad());
  auto grad = torch::autograd::grad({fq(x).sum()}, {x})[0];
  EXPECT_TRUE(torch::equal(grad, torch::ones_like(x)));
}

TEST(FakeQuantizeModule, StateDictHoldsObserverAndQParams) {
  auto fq = min_max_fake_quant(QuantSpec().granularity(Granularity::kPerChannel));
  fq(torch::randn({3, 4}));
  auto names = fq->named_buffers().keys();
  for (const std::string name : {"scale", "zero_point", "observer_enabled", "fake_quant_enabled",
                                 "observer.min_val", "observer.max_val"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  }
  auto copy = std::dynamic_pointer_cast<FakeQuantizeImpl>(fq->clone());
  ASSERT_TRUE(copy);
  EXPECT_TRUE(torch::equal(copy->scale, fq->scale));
  EXPECT_TRUE(torch::equal(as_observer(*copy->observer).calculate_qparams().scale, fq->scale));
}

TEST(FakeQuantizeModule, WorksWithHistogramObserver) {
  FakeQuantize fq(FakeQuantizeOptions(observer_factory<HistogramObserver>(
      HistogramObserverOptions().method(CalibrationMethod::kEntropy))));
  fq->enable_fake_quant(false);
  for (int i = 0; i < 3; ++i) fq(torch::randn({1024}));
  fq->update_qparams();
  fq->enable_observer(false);
  fq->enable_fake_quant(true);
  EXPECT_GT(fq->scale.item<float>(), 0.0f);
  EXPECT_EQ(fq(torch::randn({5})).sizes(), torch::IntArrayRef({5}));
}

TEST(LearnableFakeQuantizeModule, InitializesFromObserverThenLearnsScale) {
  LearnableFakeQuantize lfq(LearnableFakeQuantizeOptions(
      observer_factory<MinMaxObserver>(MinMaxObserverOptions())));
  torch::manual_seed(1);
  auto x = torch::randn({256});
  lfq(x);
  const float initial = lfq->scale.item<float>();
  EXPECT_FLOAT_EQ(initial, calculate_qparams(x.min(), x.max(), QuantSpec()).scale.item<float>());
  lfq->enable_observer(false);
  torch::optim::SGD optimizer(lfq->parameters(), torch::optim::SGDOptions(0.01));
  // Train the scale to shrink the range: penalize the output's magnitude.
  for (int step = 0; step < 20; ++step) {
    optimizer.zero_grad();
    auto loss = (lfq(x) - x * 0.5).pow(2).mean();
    loss.backward();
    optimizer.step();
  }
  EXPECT_NE(lfq->scale.item<float>(), initial);
  EXPECT_GT(lfq->scale.item<float>(), 0.0f);
  EXPECT_EQ(lfq->qparams().scale.dim(), 0);
}

TEST(LearnableFakeQuantizeModule, RejectsUnsupportedSpecs) {
  auto fp8 = observer_factory<MinMaxObserver>(MinMaxObserverOptions(QuantSpec(QuantDtype::kFp8E4M3)));
  EXPECT_THROW(LearnableFakeQuantize(LearnableFakeQuantizeOptions(fp8)), c10::NotImplementedError);
  auto sym = observer_factory<MinMaxObserver>(MinMaxObserverOptions());
  EXPECT_THROW(LearnableFakeQuantize(LearnableFakeQuantizeOptions(sym).learn_zero_point(true)),
               c10::ValueError);
}

TEST(FakeQuantizeModule, RunsOnCuda_CUDA) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: skipped";
  auto fq = min_max_fake_quant();
  fq->to(torch::kCUDA);
  auto x = torch::randn({64}, torch::kCUDA);
  auto y = fq(x);
  auto qp = calculate_qparams(x.min(), x.max(), QuantSpec());
  EXPECT_TRUE(torch::equal(y.cpu(), fake_quantize(x, qp).cpu()));
}

TEST(FakeQuantizeModule, NonFiniteInputComesOutNaNNeverAFiniteCode) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (const auto spec : {QuantSpec(), QuantSpec().narrow_range(true),
                          QuantSpec().granularity(Granularity::kPerChannel).axis(0),
                          QuantSpec(QuantDtype::kUInt8).symmetric(false),
                          QuantSpec(QuantDtype::kFp8E4M3)}) {
    SCOPED_TRACE(to_string(spec));
    auto fq = min_max_fake_quant(spec);
    torch::manual_seed(3);
    fq(torch::randn({3, 17}));  // calibrate
    fq->enable_observer(false);
    at::Tensor x = torch::randn({3, 17});
    x[0][4] = nan;
    x[1][0] = inf;
    x[2][16] = -inf;
    const at::Tensor y = fq(x);
    const at::Tensor non_finite = ~torch::isfinite(x);
    EXPECT_TRUE(torch::isnan(y).eq(non_finite).all().item<bool>()) << y;
  }
}

TEST(FakeQuantizeModule, DynamicPerTokenNonFiniteElementIsNaNOtherRowsUnchanged) {
  auto fq = FakeQuantize(FakeQuantizeOptions(observer_factory<MinMaxObserver>(
                             MinMaxObserverOptions(QuantSpec().narrow_range(true))))
                             .dynamic(true));
  fq->enable_observer(false);
  torch::manual_seed(4);
  at::Tensor x = torch::randn({4, 9});
  const at::Tensor clean = fq(x);
  x[1][3] = std::numeric_limits<float>::quiet_NaN();
  x[2][0] = std::numeric_limits<float>::infinity();
  const at::Tensor y = fq(x);
  EXPECT_TRUE(torch::isnan(y[1][3]).item<bool>());
  EXPECT_TRUE(torch::isnan(y[2][0]).item<bool>());
  EXPECT_TRUE(torch::equal(y[0], clean[0]));
  EXPECT_TRUE(torch::equal(y[3], clean[3]));
  // A following GEMM: the rows that saw a non-finite value are NaN, as in float.
  const at::Tensor out = torch::mm(y, torch::randn({9, 5}));
  EXPECT_TRUE(torch::isnan(out[1]).all().item<bool>());
  EXPECT_TRUE(torch::isnan(out[2]).all().item<bool>());
  EXPECT_TRUE(torch::isfinite(out[0]).all().item<bool>());
}

TEST(FakeQuantizeModule, FakeQuantizedLinearGivesNaNRowsForNonFiniteInputsAsFloatDoes) {
  for (const QConfig& qconfig : {int8_static_qconfig(), int8_dynamic_qconfig()}) {
    torch::manual_seed(5);
    QuantLinear fc(9, 6);
    fc->set_qconfig(qconfig);
    fc->set_mode(QuantMode::kObserve);
    fc(torch::randn({8, 9}));
    fc->set_mode(QuantMode::kFakeQuant);
    at::Tensor x = torch::randn({4, 9});
    x[1][2] = std::numeric_limits<float>::quiet_NaN();
    x[3][8] = -std::numeric_limits<float>::infinity();
    const at::Tensor y = fc(x);
    EXPECT_TRUE(torch::isnan(y[1]).all().item<bool>()) << y;
    EXPECT_TRUE(torch::isnan(y[3]).all().item<bool>()) << y;
    EXPECT_TRUE(torch::isfinite(y[0]).all().item<bool>()) << y;
    EXPECT_TRUE(torch::isfinite(y[2]).all().item<bool>()) << y;
  }
}
