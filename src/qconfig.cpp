#include "tquant/qconfig.h"

#include <utility>

#include "tquant/histogram_observer.h"
#include "tquant/observer.h"

namespace tquant {

QuantizerFactory fake_quantize_factory(FakeQuantizeOptions options) {
  // Build one quantizer now so a broken observer factory fails where the config is made,
  // not later inside set_qconfig.
  FakeQuantize probe(options);
  (void)probe;
  return [options]() { return FakeQuantize(options); };
}

void check_qconfig(const QConfig& qconfig, const std::string& what) {
  TORCH_CHECK_VALUE(qconfig.quantizes_activations() || qconfig.quantizes_weights(), what,
                    ": expected a QConfig with an activation or a weight quantizer factory, "
                    "got one with neither");
}

QuantSpec int8_per_channel_weight_spec() {
  return QuantSpec(QuantDtype::kInt8)
      .symmetric(true)
      .narrow_range(true)
      .granularity(Granularity::kPerChannel)
      .axis(0);
}

QuantSpec int8_per_tensor_activation_spec() {
  return QuantSpec(QuantDtype::kInt8)
      .symmetric(true)
      .narrow_range(true)
      .granularity(Granularity::kPerTensor);
}

QuantSpec int4_per_block_weight_spec(int64_t block_size) {
  TORCH_CHECK_VALUE(block_size >= 1, "int4_per_block_weight_spec: expected block_size >= 1, got ",
                    block_size);
  auto spec = QuantSpec(QuantDtype::kInt4)
                  .symmetric(true)
                  .narrow_range(true)
                  .granularity(Granularity::kPerBlock)
                  .axis(1)
                  .block_size(block_size);
  check_spec(spec);
  return spec;
}

namespace {

MinMaxObserverOptions min_max(QuantSpec spec, const PresetOptions& options) {
  return MinMaxObserverOptions(spec).non_finite(options.non_finite());
}

QuantizerFactory per_channel_int8_weight(const PresetOptions& options) {
  return fake_quantize_factory(FakeQuantizeOptions(observer_factory<PerChannelMinMaxObserver>(
      min_max(int8_per_channel_weight_spec(), options))));
}

}  // namespace

QConfig int8_static_qconfig(const PresetOptions& options) {
  auto activation = fake_quantize_factory(FakeQuantizeOptions(observer_factory<HistogramObserver>(
      HistogramObserverOptions(int8_per_tensor_activation_spec())
          .method(CalibrationMethod::kPercentile)
          .non_finite(options.non_finite())
          .grid(options.histogram_grid()))));
  return QConfig{std::move(activation), per_channel_int8_weight(options)};
}

QConfig int8_qat_qconfig(const PresetOptions& options) {
  auto activation = fake_quantize_factory(
      FakeQuantizeOptions(observer_factory<MovingAverageMinMaxObserver>(
          min_max(int8_per_tensor_activation_spec(), options))));
  return QConfig{std::move(activation), per_channel_int8_weight(options)};
}

QConfig int8_dynamic_qconfig(const PresetOptions& options) {
  auto activation = fake_quantize_factory(
      FakeQuantizeOptions(
          observer_factory<MinMaxObserver>(min_max(int8_per_tensor_activation_spec(), options)))
          .dynamic(true));
  return QConfig{std::move(activation), per_channel_int8_weight(options)};
}

QConfig weight_only_int8_qconfig(const PresetOptions& options) {
  return QConfig{QuantizerFactory(), per_channel_int8_weight(options)};
}

QuantSpec int4_per_channel_weight_spec() {
  return QuantSpec(QuantDtype::kInt4)
      .symmetric(true)
      .narrow_range(true)
      .granularity(Granularity::kPerChannel)
      .axis(0);
}

namespace {

// The int4 weight quantizer of every int4 preset: block_size 0 = one scale per output channel.
QuantizerFactory int4_weight(int64_t block_size, const PresetOptions& options, const char* preset) {
  TORCH_CHECK_VALUE(block_size >= 0, preset, ": expected block_size >= 0 (0: one scale per "
                    "output channel), got ", block_size);
  if (block_size == 0) {
    return fake_quantize_factory(FakeQuantizeOptions(observer_factory<PerChannelMinMaxObserver>(
        min_max(int4_per_channel_weight_spec(), options))));
  }
  return fake_quantize_factory(FakeQuantizeOptions(
      observer_factory<MinMaxObserver>(min_max(int4_per_block_weight_spec(block_size), options))));
}

}  // namespace

QConfig weight_only_int4_qconfig(int64_t block_size, const PresetOptions& options) {
  return QConfig{QuantizerFactory(), int4_weight(block_size, options, "weight_only_int4_qconfig")};
}

// ---- W4A8: int4 weights with int8 activations ------------------------------------------------

QConfig w4a8_qconfig(int64_t block_size, const PresetOptions& options) {
  QConfig qconfig = int8_static_qconfig(options);
  qconfig.weight = int4_weight(block_size, options, "w4a8_qconfig");
  return qconfig;
}

QConfig w4a8_qat_qconfig(int64_t block_size, const PresetOptions& options) {
  QConfig qconfig = int8_qat_qconfig(options);
  qconfig.weight = int4_weight(block_size, options, "w4a8_qat_qconfig");
  return qconfig;
}

// ---- end W4A8 --------------------------------------------------------------------------------

// ---- LSQ: learned scales (FakeQuantizeOptions::learnable) --------------------------------------

namespace {

/// A learned-scale quantizer (LSQ defaults) whose observer gives the initial scale.
template <typename Observer>
QuantizerFactory lsq_quantizer(QuantSpec spec, const PresetOptions& options) {
  return fake_quantize_factory(
      FakeQuantizeOptions(observer_factory<Observer>(min_max(std::move(spec), options)))
          .learnable(LearnableScaleOptions()));
}

QConfig lsq_qconfig(QuantSpec weight_spec, const PresetOptions& options) {
  return QConfig{lsq_quantizer<MinMaxObserver>(int8_per_tensor_activation_spec(), options),
                 lsq_quantizer<PerChannelMinMaxObserver>(std::move(weight_spec), options)};
}

}  // namespace

QConfig int8_learnable_qat_qconfig(const PresetOptions& options) {
  return lsq_qconfig(int8_per_channel_weight_spec(), options);
}

QConfig w4a8_learnable_qat_qconfig(const PresetOptions& options) {
  return lsq_qconfig(int4_per_channel_weight_spec(), options);
}

// ---- end LSQ ---------------------------------------------------------------------------------

}  // namespace tquant
