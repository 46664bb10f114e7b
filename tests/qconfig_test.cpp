#include <gtest/gtest.h>

#include "tquant/qconfig.h"

#include <torch/torch.h>

#include "tquant/histogram_observer.h"
#include "tquant/observer.h"

using namespace tquant;

namespace {

template <typename ObserverImpl>
ObserverImpl* observer_of(const FakeQuantize& quantizer) {
  return quantizer->observer->as<ObserverImpl>();
}

void expect_int8_per_channel_weights(const QConfig& qconfig) {
  ASSERT_TRUE(qconfig.quantizes_weights());
  FakeQuantize weight = qconfig.weight();
  auto* observer = observer_of<PerChannelMinMaxObserverImpl>(weight);
  ASSERT_NE(observer, nullptr) << "weights use PerChannelMinMaxObserver";
  const QuantSpec& spec = observer->quant_spec();
  EXPECT_EQ(spec.dtype(), QuantDtype::kInt8);
  EXPECT_TRUE(spec.symmetric());
  EXPECT_TRUE(spec.narrow_range());
  EXPECT_EQ(spec.granularity(), Granularity::kPerChannel);
  EXPECT_EQ(spec.axis(), 0);
  EXPECT_EQ(weight->options.gradient(), GradientMode::kSteClipped);
}

void expect_int8_per_tensor_activation(const QuantSpec& spec) {
  EXPECT_EQ(spec.dtype(), QuantDtype::kInt8);
  EXPECT_TRUE(spec.symmetric());
  EXPECT_TRUE(spec.narrow_range());
  EXPECT_EQ(spec.granularity(), Granularity::kPerTensor);
}

}  // namespace

TEST(QConfig, Int8StaticUsesPercentileHistogramActivationsAndPerChannelWeights) {
  auto qconfig = int8_static_qconfig();
  ASSERT_TRUE(qconfig.quantizes_activations());
  FakeQuantize activation = qconfig.activation();
  auto* histogram = observer_of<HistogramObserverImpl>(activation);
  ASSERT_NE(histogram, nullptr) << "activations use HistogramObserver";
  EXPECT_EQ(histogram->options.method(), CalibrationMethod::kPercentile);
  EXPECT_DOUBLE_EQ(histogram->options.search().percentile(), 99.99);
  expect_int8_per_tensor_activation(histogram->quant_spec());
  expect_int8_per_channel_weights(qconfig);
}

TEST(QConfig, Int8QatUsesMovingAverageActivationsAndPerChannelWeights) {
  auto qconfig = int8_qat_qconfig();
  ASSERT_TRUE(qconfig.quantizes_activations());
  FakeQuantize activation = qconfig.activation();
  auto* observer = observer_of<MovingAverageMinMaxObserverImpl>(activation);
  ASSERT_NE(observer, nullptr) << "activations use MovingAverageMinMaxObserver";
  EXPECT_DOUBLE_EQ(observer->options.averaging_constant(), 0.01);
  expect_int8_per_tensor_activation(observer->quant_spec());
  expect_int8_per_channel_weights(qconfig);
}

TEST(QConfig, WeightOnlyInt8LeavesActivationsFloat) {
  auto qconfig = weight_only_int8_qconfig();
  EXPECT_FALSE(qconfig.quantizes_activations());
  expect_int8_per_channel_weights(qconfig);
}

TEST(QConfig, WeightOnlyInt4QuantizesBlocksAlongInputFeatures) {
  auto qconfig = weight_only_int4_qconfig();
  EXPECT_FALSE(qconfig.quantizes_activations());
  FakeQuantize weight = qconfig.weight();
  auto* observer = observer_of<MinMaxObserverImpl>(weight);
  ASSERT_NE(observer, nullptr) << "int4 blocks use MinMaxObserver";
  const QuantSpec& spec = observer->quant_spec();
  EXPECT_EQ(spec.dtype(), QuantDtype::kInt4);
  EXPECT_TRUE(spec.symmetric());
  EXPECT_TRUE(spec.narrow_range());
  EXPECT_EQ(spec.granularity(), Granularity::kPerBlock);
  EXPECT_EQ(spec.axis(), 1);
  EXPECT_EQ(spec.block_size(), 128);

  FakeQuantize small_blocks = weight_only_int4_qconfig(32).weight();
  EXPECT_EQ(small_blocks->observer_ref().quant_spec().block_size(), 32);
  torch::manual_seed(0);
  auto w = torch::randn({3, 64});
  small_blocks(w);
  auto qp = small_blocks->qparams();
  EXPECT_EQ(qp.scale.sizes(), torch::IntArrayRef({3, 2}));
  // scale = max |w| of the block / 7.
  auto block_amax = w.abs().reshape({3, 2, 32}).amax(-1);
  EXPECT_TRUE(torch::allclose(qp.scale, block_amax / 7.0));
}

TEST(QConfig, Int4BlockSizeZeroIsPerChannelAndNegativeIsRejected) {
  // block_size 0 means one scale per output channel in every int4 preset (as w4a8_qconfig(0)).
  FakeQuantize per_channel = weight_only_int4_qconfig(0).weight();
  const QuantSpec& spec = per_channel->observer_ref().quant_spec();
  EXPECT_EQ(spec.dtype(), QuantDtype::kInt4);
  EXPECT_EQ(spec.granularity(), Granularity::kPerChannel);
  EXPECT_EQ(spec.axis(), 0);
  EXPECT_EQ(to_string(spec), to_string(w4a8_qconfig(0).weight()->observer_ref().quant_spec()));
  torch::manual_seed(0);
  auto w = torch::randn({3, 17});
  per_channel(w);
  EXPECT_TRUE(torch::allclose(per_channel->qparams().scale.reshape({-1}),
                              w.abs().amax(1) / 7.0));
  for (int64_t bad : {-1, -4}) {
    EXPECT_THROW(weight_only_int4_qconfig(bad), c10::ValueError);
    EXPECT_THROW(w4a8_qconfig(bad), c10::ValueError);
  }
}

TEST(QConfig, PresetWeightScaleIsChannelAmaxOver127) {
  FakeQuantize weight = int8_static_qconfig().weight();
  torch::manual_seed(1);
  auto w = torch::randn({5, 17});
  weight(w);
  auto qp = weight->qparams();
  EXPECT_EQ(qp.scale.sizes(), torch::IntArrayRef({5}));
  EXPECT_TRUE(torch::allclose(qp.scale, std::get<0>(w.abs().max(1)) / 127.0));
  EXPECT_TRUE(torch::equal(qp.zero_point, torch::zeros({5}, torch::kInt)));
}

TEST(QConfig, FactoriesBuildIndependentQuantizers) {
  auto qconfig = int8_qat_qconfig();
  FakeQuantize first = qconfig.activation();
  FakeQuantize second = qconfig.activation();
  EXPECT_NE(first.ptr().get(), second.ptr().get());
  EXPECT_NE(first->observer.get(), second->observer.get());
  first(torch::randn({4}));
  EXPECT_TRUE(first->observer_ref().has_data());
  EXPECT_FALSE(second->observer_ref().has_data()) << "no shared observer state";
}

TEST(QConfig, CustomFactoryIsUsedAsGiven) {
  auto spec = QuantSpec(QuantDtype::kUInt8).symmetric(false);
  QConfig qconfig{fake_quantize_factory(FakeQuantizeOptions(observer_factory<MinMaxObserver>(
                                            MinMaxObserverOptions(spec)))
                                            .gradient(GradientMode::kSte)),
                  QuantizerFactory()};
  EXPECT_TRUE(qconfig.quantizes_activations());
  EXPECT_FALSE(qconfig.quantizes_weights());
  FakeQuantize activation = qconfig.activation();
  EXPECT_EQ(activation->options.gradient(), GradientMode::kSte);
  EXPECT_EQ(activation->observer_ref().quant_spec().dtype(), QuantDtype::kUInt8);
  EXPECT_FALSE(activation->observer_ref().quant_spec().symmetric());
}

TEST(QConfig, EmptyConfigIsRejectedByCheck) {
  EXPECT_THROW(check_qconfig(QConfig{}, "test module"), c10::ValueError);
  EXPECT_NO_THROW(check_qconfig(weight_only_int8_qconfig(), "test module"));
}

TEST(QConfig, BrokenObserverFactoryFailsWhenTheConfigIsMade) {
  ObserverFactory not_an_observer = [] {
    return std::shared_ptr<torch::nn::Module>(torch::nn::Linear(2, 2).ptr());
  };
  EXPECT_THROW(fake_quantize_factory(FakeQuantizeOptions(not_an_observer)), c10::Error);
}
