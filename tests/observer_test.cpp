#include <gtest/gtest.h>

#include "tquant/observer.h"

#include <torch/torch.h>

using namespace tquant;

namespace {

/// Collects TORCH_WARN messages while alive.
struct WarningCollector : c10::WarningHandler {
  std::vector<std::string> messages;
  void process(const c10::Warning& warning) override { messages.push_back(warning.msg()); }
};

}  // namespace

TEST(MinMaxObserver, TracksRunningExtremesAcrossBatches) {
  MinMaxObserver observer;
  EXPECT_FALSE(observer->has_data());
  observer->observe(torch::tensor({-1.0f, 2.0f}));
  observer->observe(torch::tensor({-3.0f, 0.5f}));
  EXPECT_FLOAT_EQ(observer->min_val.item<float>(), -3.0f);
  EXPECT_FLOAT_EQ(observer->max_val.item<float>(), 2.0f);
  auto qp = observer->calculate_qparams();
  EXPECT_FLOAT_EQ(qp.scale.item<float>(), 3.0f / 127.5f);
}

TEST(MinMaxObserver, ForwardReturnsInputUnchanged) {
  MinMaxObserver observer;
  auto x = torch::randn({4, 5});
  EXPECT_TRUE(observer(x).is_same(x));
}

TEST(MovingAverageMinMaxObserver, AveragesWithConstant) {
  MovingAverageMinMaxObserver observer;
  EXPECT_DOUBLE_EQ(observer->options.averaging_constant(), 0.01);
  observer->observe(torch::tensor({-1.0f, 1.0f}));
  observer->observe(torch::tensor({-3.0f, 101.0f}));
  EXPECT_FLOAT_EQ(observer->min_val.item<float>(), -1.0f + 0.01f * (-3.0f + 1.0f));
  EXPECT_FLOAT_EQ(observer->max_val.item<float>(), 1.0f + 0.01f * 100.0f);
}

TEST(PerChannelMinMaxObserver, ReducesAlongAnyAxis) {
  PerChannelMinMaxObserver observer(
      MinMaxObserverOptions(QuantSpec().granularity(Granularity::kPerChannel).axis(1)));
  auto x = torch::arange(24, torch::kFloat).reshape({2, 3, 4}) - 10;
  observer->observe(x);
  EXPECT_TRUE(torch::equal(observer->min_val, x.amin({0, 2})));
  EXPECT_TRUE(torch::equal(observer->max_val, x.amax({0, 2})));
  EXPECT_EQ(observer->calculate_qparams().scale.sizes(), torch::IntArrayRef({3}));
}

TEST(PerChannelMinMaxObserver, MismatchedChannelCountIsAClearError) {
  PerChannelMinMaxObserver observer;
  observer->observe(torch::randn({3, 5}));
  try {
    observer->observe(torch::randn({4, 5}));
    FAIL() << "expected an error";
  } catch (const c10::ValueError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("PerChannelMinMaxObserver"), std::string::npos) << message;
    EXPECT_NE(message.find("[3]"), std::string::npos) << message;
    EXPECT_NE(message.find("[4, 5]"), std::string::npos) << message;
  }
}

TEST(MovingAveragePerChannelMinMaxObserver, AveragesEachChannel) {
  MovingAveragePerChannelMinMaxObserver observer(
      MinMaxObserverOptions().averaging_constant(0.5));
  observer->observe(torch::tensor({{0.0f, 2.0f}, {-4.0f, 0.0f}}));
  observer->observe(torch::tensor({{0.0f, 4.0f}, {-8.0f, 0.0f}}));
  EXPECT_TRUE(torch::allclose(observer->max_val, torch::tensor({3.0f, 0.0f})));
  EXPECT_TRUE(torch::allclose(observer->min_val, torch::tensor({0.0f, -6.0f})));
}

TEST(MinMaxObserver, QParamsBeforeDataIsAClearError) {
  MinMaxObserver observer;
  try {
    observer->calculate_qparams();
    FAIL() << "expected an error";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("no data observed"), std::string::npos);
  }
}

TEST(MinMaxObserver, RejectsEmptyIntegerAndComplexInputs) {
  MinMaxObserver observer;
  EXPECT_THROW(observer->observe(torch::empty({0})), c10::ValueError);
  EXPECT_THROW(observer->observe(torch::ones({3}, torch::kInt)), c10::TypeError);
  EXPECT_THROW(observer->observe(torch::ones({3}, torch::kComplexFloat)), c10::TypeError);
  EXPECT_FALSE(observer->has_data());
}

TEST(MinMaxObserver, NonFiniteValuesAreAnErrorByDefault) {
  MinMaxObserver observer;
  try {
    observer->observe(torch::tensor({1.0f, NAN, INFINITY}));
    FAIL() << "expected an error";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("2 NaN or Inf"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(observer->has_data()) << "a rejected batch must not change the state";
}

TEST(MinMaxObserver, IgnorePolicyDropsNonFiniteValuesWithAWarning) {
  WarningCollector collector;
  c10::WarningUtils::WarningHandlerGuard guard(&collector);
  MinMaxObserver observer(MinMaxObserverOptions().non_finite(NonFinitePolicy::kIgnore));
  observer->observe(torch::tensor({1.0f, NAN, -INFINITY, -2.0f}));
  EXPECT_FLOAT_EQ(observer->min_val.item<float>(), -2.0f);
  EXPECT_FLOAT_EQ(observer->max_val.item<float>(), 1.0f);
  ASSERT_EQ(collector.messages.size(), 1u);
  EXPECT_NE(collector.messages[0].find("ignoring 2"), std::string::npos);
}

TEST(PerChannelMinMaxObserver, IgnorePolicyWorksPerChannel) {
  WarningCollector collector;
  c10::WarningUtils::WarningHandlerGuard guard(&collector);
  PerChannelMinMaxObserver observer(MinMaxObserverOptions().non_finite(NonFinitePolicy::kIgnore));
  observer->observe(torch::tensor({{1.0f, NAN}, {-3.0f, 2.0f}}));
  EXPECT_TRUE(torch::equal(observer->min_val, torch::tensor({1.0f, -3.0f})));
  EXPECT_TRUE(torch::equal(observer->max_val, torch::tensor({1.0f, 2.0f})));
}

TEST(MinMaxObserver, MergeCombinesShards) {
  MinMaxObserver a, b, whole;
  auto x = torch::randn({64});
  auto y = torch::randn({64}) * 3;
  a->observe(x);
  b->observe(y);
  whole->observe(x);
  whole->observe(y);
  a->merge(*b);
  EXPECT_TRUE(torch::equal(a->min_val, whole->min_val));
  EXPECT_TRUE(torch::equal(a->max_val, whole->max_val));
  MovingAverageMinMaxObserver other_kind;
  EXPECT_THROW(a->merge(*other_kind), c10::TypeError);
}

TEST(MinMaxObserver, StateDictAndCloneCarryTheRange) {
  MinMaxObserver observer;
  observer->observe(torch::tensor({-1.5f, 4.0f}));
  auto copy = std::dynamic_pointer_cast<MinMaxObserverImpl>(observer->clone());
  ASSERT_TRUE(copy);
  EXPECT_FLOAT_EQ(copy->max_val.item<float>(), 4.0f);
  EXPECT_EQ(observer->named_buffers().size(), 2u);
  EXPECT_TRUE(observer->named_buffers().contains("min_val"));
}

TEST(MinMaxObserver, PerBlockGranularity) {
  MinMaxObserver observer(MinMaxObserverOptions(
      QuantSpec(QuantDtype::kInt4).granularity(Granularity::kPerBlock).axis(1).block_size(4)));
  observer->observe(torch::randn({3, 8}));
  EXPECT_EQ(observer->calculate_qparams().scale.sizes(), torch::IntArrayRef({3, 2}));
}

TEST(Observer, FactoryBuildsFreshObservers) {
  auto factory = observer_factory<MinMaxObserver>(MinMaxObserverOptions());
  auto a = factory();
  auto b = factory();
  EXPECT_NE(a.get(), b.get());
  as_observer(*a).observe(torch::ones({2}));
  EXPECT_TRUE(as_observer(*a).has_data());
  EXPECT_FALSE(as_observer(*b).has_data());
  torch::nn::Linear not_an_observer(2, 2);
  EXPECT_THROW(as_observer(*not_an_observer), c10::TypeError);
}
