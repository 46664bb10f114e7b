#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "tquant/fake_quantize.h"
#include "tquant/formats.h"
#include "tquant/histogram_observer.h"

namespace tquant {

/// Builds a fresh quantizer (a FakeQuantize module with its own observer) on every call, so
/// each quantizable module gets quantizers that share no state with any other module.
using QuantizerFactory = std::function<FakeQuantize()>;

/// A factory that builds FakeQuantize(options) on every call.
///
/// Example:
///   auto factory = tquant::fake_quantize_factory(tquant::FakeQuantizeOptions(
///       tquant::observer_factory<tquant::MinMaxObserver>(tquant::MinMaxObserverOptions())));
///   tquant::FakeQuantize quantizer = factory();
QuantizerFactory fake_quantize_factory(FakeQuantizeOptions options);

/// How one module is quantized: a factory for the quantizer of its input activation and one for
/// the quantizer of its weight (torch.ao's QConfig(activation, weight), with FakeQuantize
/// modules as the quantizers).
///
/// An empty factory means "leave that tensor in floating point": weight-only configs have no
/// activation factory, and a module given one registers no "input_quantizer" child.
///
/// Example:
///   tquant::QuantLinear fc(torch::nn::LinearOptions(768, 768));
///   fc->set_qconfig(tquant::int8_static_qconfig());
///
///   // A custom config: affine uint8 activations with a running min-max observer.
///   tquant::QConfig custom{
///       tquant::fake_quantize_factory(tquant::FakeQuantizeOptions(
///           tquant::observer_factory<tquant::MinMaxObserver>(tquant::MinMaxObserverOptions(
///               tquant::QuantSpec(tquant::QuantDtype::kUInt8).symmetric(false))))),
///       tquant::int8_static_qconfig().weight};
struct QConfig {
  /// Quantizer of a module's input activation; empty keeps activations in floating point.
  QuantizerFactory activation;
  /// Quantizer of a module's weight; empty keeps the weight in floating point.
  QuantizerFactory weight;

  bool quantizes_activations() const { return static_cast<bool>(activation); }
  bool quantizes_weights() const { return static_cast<bool>(weight); }
};

/// Checks that a QConfig quantizes something; `what` names the module in the error.
void check_qconfig(const QConfig& qconfig, const std::string& what);

/// Spec of the preset int8 weights: symmetric, narrow range, one scale per output channel
/// (axis 0 of a [out_features, in_features] weight):
///   scale[c] = max(|min_c|, |max_c|) / 127,  zero_point = 0,  q in [-127, 127].
/// Narrow range as in TensorRT and NVIDIA's quantization tools: scale = amax / 127 and the
/// integer GEMM never meets -128, so the weight range stays symmetric.
QuantSpec int8_per_channel_weight_spec();

/// Spec of the preset int8 activations: symmetric, narrow range, one scale per tensor:
///   scale = amax / 127,  zero_point = 0,  q in [-127, 127].
/// Symmetric (not torch.ao's affine uint8) so an int8 x int8 GEMM needs no zero-point
/// correction, as in TensorRT's explicit-quantization networks.
QuantSpec int8_per_tensor_activation_spec();

/// Spec of the preset int4 weights: symmetric, narrow range, one scale per `block_size`
/// consecutive input features (axis 1 of a [out_features, in_features] weight):
///   scale[o, b] = max |w[o, b*B : (b+1)*B]| / 7,  zero_point = 0,  q in [-7, 7].
/// in_features must be a multiple of block_size.
QuantSpec int4_per_block_weight_spec(int64_t block_size = 128);

/// Options every preset below takes.
///
/// Example (calibration data with a few NaN / Inf values that should be left out):
///   tquant::QConfig qconfig = tquant::int8_static_qconfig(
///       tquant::PresetOptions().non_finite(tquant::NonFinitePolicy::kIgnore));
struct PresetOptions {
  /// What the preset's observers (activation and weight) do with NaN and +-Inf in the data they
  /// watch during calibration or QAT: kError throws, naming the quantizer and the count
  /// ("fc1.input_quantizer: HistogramObserver: expected finite values, got 1 NaN or Inf ...");
  /// kIgnore leaves them out of the statistics with a warning. Fake quantization itself always
  /// turns a non-finite element into NaN (see fake_quantize).
  TORCH_ARG(NonFinitePolicy, non_finite) = NonFinitePolicy::kError;
  /// Grid of the presets' histogram observers: kStreaming (one calibration pass) or kShared
  /// (calibrate runs the loop twice; N ranks give the same ranges as one process bit for bit,
  /// docs/distributed.md).
  TORCH_ARG(HistogramGrid, histogram_grid) = HistogramGrid::kStreaming;
};

/// Post-training static int8 (calibrate, then simulate or convert):
///   weight:     PerChannelMinMaxObserver, int8_per_channel_weight_spec() (axis 0);
///   activation: HistogramObserver, int8_per_tensor_activation_spec(), percentile method with
///               NVIDIA's default percentile 99.99: amax is the left edge of the histogram bin
///               where the cumulative count of |x| reaches 99.99 %. The method can be changed
///               after calibration with set_calibration_method.
/// Gradients: clipped straight-through (GradientMode::kSteClipped).
QConfig int8_static_qconfig(const PresetOptions& options = {});

/// Quantization-aware training with int8 (torch.ao's default QAT config, symmetric):
///   activation: MovingAverageMinMaxObserver (averaging constant c = 0.01:
///               min <- min + c * (batch_min - min), likewise max), int8_per_tensor_activation_spec();
///   weight:     PerChannelMinMaxObserver, int8_per_channel_weight_spec() (axis 0).
/// Min-max observers are cheap enough to run at every training step, as FakeQuantize does
/// while its observer is enabled. Gradients: clipped straight-through.
QConfig int8_qat_qconfig(const PresetOptions& options = {});

/// Dynamic int8 (torch.ao's quantize_dynamic, per token): nothing to calibrate;
///   activation: dynamic per-token FakeQuantize (FakeQuantizeOptions::dynamic): each row of the
///               input gets scale = max(amax_row / 127, eps) at run time,
///               int8_per_tensor_activation_spec() range (narrow, [-127, 127]);
///   weight:     PerChannelMinMaxObserver, int8_per_channel_weight_spec() (axis 0).
/// Converted QuantLinear modules run int8_linear_dynamic. Gradients: clipped straight-through.
QConfig int8_dynamic_qconfig(const PresetOptions& options = {});
/// Weight-only int8: activations stay floating point;
///   weight: PerChannelMinMaxObserver, int8_per_channel_weight_spec() (axis 0).
QConfig weight_only_int8_qconfig(const PresetOptions& options = {});

/// Weight-only int4 (the storage layout AWQ / GPTQ int4 weights use; the scales here come from
/// min-max, there is no AWQ or GPTQ search): activations stay floating point;
///   block_size  > 0: weight MinMaxObserver, int4_per_block_weight_spec(block_size) (axis 1, the
///                    input dim; in_features must be a multiple of block_size);
///   block_size == 0: one scale per output channel, PerChannelMinMaxObserver,
///                    int4_per_channel_weight_spec() (as w4a8_qconfig(0)).
/// convert() gives "weight_only:block=B" or "weight_only". Throws if block_size < 0.
QConfig weight_only_int4_qconfig(int64_t block_size = 128,
                                  const PresetOptions& options = {});

// ---- W4A8: int4 weights with int8 activations ------------------------------------------------

/// Spec of int4 weights with one scale per output channel (axis 0 of a [out_features,
/// in_features] weight): symmetric, narrow range,
///   scale[o] = max |w[o, :]| / 7,  zero_point = 0,  q in [-7, 7].
QuantSpec int4_per_channel_weight_spec();

/// W4A8, post-training static: int8 activations exactly as int8_static_qconfig (HistogramObserver,
/// percentile 99.99, int8_per_tensor_activation_spec()) and int4 weights:
///   block_size == 0: one scale per output channel, PerChannelMinMaxObserver,
///                    int4_per_channel_weight_spec();
///   block_size  > 0: one scale per `block_size` consecutive input features (a "group"),
///                    MinMaxObserver, int4_per_block_weight_spec(block_size); in_features must be
///                    a multiple of block_size.
/// convert() gives the scheme "w4a8" (per channel, runs on the INT8 GEMM at INT8 speed) or
/// "w4a8:block=B" (one INT8 GEMM per block; docs/backends.md); the int4 codes are stored two per
/// byte ("weight_int4", docs/formats.md). Gradients: clipped straight-through. Throws if
/// block_size < 0.
///
/// Example:
///   tquant::prepare(model, tquant::QConfigMapping(tquant::w4a8_qconfig()));        // per channel
///   tquant::prepare(model, tquant::QConfigMapping(tquant::w4a8_qconfig(128)));     // groups of 128
QConfig w4a8_qconfig(int64_t block_size = 0, const PresetOptions& options = {});

/// W4A8 for quantization-aware training: activations as int8_qat_qconfig
/// (MovingAverageMinMaxObserver, int8_per_tensor_activation_spec()), int4 weights as
/// w4a8_qconfig(block_size). Throws if block_size < 0.
QConfig w4a8_qat_qconfig(int64_t block_size = 0, const PresetOptions& options = {});

// ---- end W4A8 --------------------------------------------------------------------------------

// ---- LSQ: learned scales (FakeQuantizeOptions::learnable) --------------------------------------

/// Quantization-aware training with learned int8 scales (LSQ, Esser et al. 2019): the quantizers
/// are FakeQuantize modules with FakeQuantizeOptions::learnable (LearnableScaleOptions(): LSQ
/// gradient scaling on, zero point fixed at 0), so each module's "input_quantizer.scale" and
/// "weight_quantizer.scale" are trainable parameters in model.parameters(), under the same
/// state_dict names and shapes as with int8_qat_qconfig:
///   activation: MinMaxObserver, int8_per_tensor_activation_spec(): one learned scale per
///               tensor, initialized to amax / 127 of the calibration data;
///   weight:     PerChannelMinMaxObserver, int8_per_channel_weight_spec() (axis 0): one learned
///               scale per output channel, initialized to amax_c / 127 of the weight.
/// Calibrate first (tquant::calibrate freezes the observers, leaving the scales to the
/// optimizer); while an observer is on, its scale is reset from it at every forward.
/// convert() uses the learned scales. docs/qat.md has the recipe.
///
/// Example:
///   tquant::prepare_qat(model, tquant::QConfigMapping(tquant::int8_learnable_qat_qconfig()));
///   tquant::calibrate(model, [&] { for (auto& x : calibration) model->forward(x); });
///   torch::optim::AdamW optimizer(model->parameters(), ...);  // trains weights and scales
QConfig int8_learnable_qat_qconfig(const PresetOptions& options = {});

/// W4A8 with learned scales: activations as int8_learnable_qat_qconfig, weights int4 with one
/// learned scale per output channel (PerChannelMinMaxObserver, int4_per_channel_weight_spec(),
/// initialized to amax_c / 7). convert() gives the scheme "w4a8" with the learned scales.
QConfig w4a8_learnable_qat_qconfig(const PresetOptions& options = {});

[[deprecated("use int8_learnable_qat_qconfig")]] inline QConfig int8_lsq_qat_qconfig(
    const PresetOptions& options = {}) {
  return int8_learnable_qat_qconfig(options);
}
[[deprecated("use w4a8_learnable_qat_qconfig")]] inline QConfig w4a8_lsq_qat_qconfig(
    const PresetOptions& options = {}) {
  return w4a8_learnable_qat_qconfig(options);
}

// ---- end LSQ ---------------------------------------------------------------------------------

}  // namespace tquant
