#include <gtest/gtest.h>

#include "tquant/fake_quantize.h"
#include "tquant/histogram_observer.h"

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
