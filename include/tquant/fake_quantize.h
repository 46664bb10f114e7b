#pragma once

#include <optional>
#include <string>
#include <utility>

#include "tquant/functional.h"
#include "tquant/observer.h"

namespace tquant {

/// How a quantizer learns its scale (Learned Step Size Quantization, LSQ, Esser et al. 2019;
/// LSQ+ when the zero point is learned too), with torch.ao's _LearnableFakeQuantize semantics.
/// Used by FakeQuantizeOptions::learnable and LearnableFakeQuantize.
struct LearnableScaleOptions {
  /// Multiply the scale and zero-point gradients by 1 / sqrt(numel * qmax) (LSQ paper,
  /// lsq_grad_factor), so the scale moves at the rate of the weights.
  TORCH_ARG(bool, use_grad_scaling) = true;
  /// Learn the zero point too (affine specs only); it is then a float parameter, rounded and
  /// clamped to [qmin, qmax] when read as QParams.
  TORCH_ARG(bool, learn_zero_point) = false;
  /// Smallest scale: the learned scale is clamped to eps (in place) before every forward and
  /// when read as QParams, so an optimizer step that drives it to <= 0 cannot flip its sign.
  TORCH_ARG(double, eps) = kDefaultScaleEps;
};

/// Options of FakeQuantize: the observer it owns and the gradient it passes.
///
/// Example:
///   auto options = tquant::FakeQuantizeOptions(
///       tquant::observer_factory<tquant::MovingAverageMinMaxObserver>(
///           tquant::MinMaxObserverOptions()));
///   // The same with a learned scale (LSQ): "scale" becomes a trainable parameter.
///   auto lsq = tquant::FakeQuantizeOptions(
///       tquant::observer_factory<tquant::MovingAverageMinMaxObserver>(
///           tquant::MinMaxObserverOptions()))
///       .learnable(tquant::LearnableScaleOptions());
struct FakeQuantizeOptions {
  explicit FakeQuantizeOptions(ObserverFactory observer) : observer_(std::move(observer)) {}
  TORCH_ARG(ObserverFactory, observer);
  /// Gradient with respect to the input. A learnable quantizer passes LSQ's, which is
  /// kSteClipped for the input; it rejects kSte.
  TORCH_ARG(GradientMode, gradient) = GradientMode::kSteClipped;
  /// Learned scale (LSQ): "scale" (and with learn_zero_point "zero_point") is registered as a
  /// trainable parameter under the same name instead of a buffer, initialized from the observer
  /// (see FakeQuantizeImpl). Per-tensor and per-channel integer specs; not with dynamic().
  TORCH_ARG(std::optional<LearnableScaleOptions>, learnable) = std::nullopt;
  /// Dynamic per-token quantization: every forward computes one scale per row of its input
  /// (the input viewed as [M, K], K its last dimension) from the data itself (per_token_qparams)
  /// instead of using frozen parameters. The observer's spec gives dtype and range and must be
  /// symmetric, integer and per-tensor; the observer only records during observe mode.
  TORCH_ARG(bool, dynamic) = false;
};

/// Quantize-dequantize (QDQ) node for QAT and for simulating a quantized model.
///
/// forward(x):
///   observer enabled:   the observer records x; if fake quantization is also enabled the
///                       scale / zero_point buffers are refreshed from it (as torch.ao's
///                       FakeQuantize does every step; prefer min-max observers for QAT);
///   fake quant enabled: returns fake_quantize(x, scale, zero_point) with the chosen gradient;
///   otherwise:          returns x.
/// With options.dynamic(), fake quantization uses per-row parameters computed from x at every
/// call (the INT8 dynamic scheme), and scale / zero_point stay unused.
/// The observer is the registered child "observer"; scale, zero_point and the two flags are
/// buffers, so state_dict, to(device) and clone() carry them.
///
/// With options.learnable() (LSQ), "scale" is a trainable parameter (so model.parameters()
/// hands it to the optimizer) and "zero_point" stays an int32 buffer unless learn_zero_point
/// makes it a float parameter; names and shapes are those of the fixed quantizer. The scale
/// follows the observer while the observer is enabled (calibration initializes it: forward and
/// update_qparams() copy the observer's qparams into the parameter, without autograd); once the
/// observer is off the parameter is what trains and what update_qparams(), qparams() and
/// convert() use. Forward then runs fake_quantize_learnable with LSQ's gradient after clamping
/// the scale to eps; a NaN or Inf scale (a diverged step) is an error naming the quantizer.
class FakeQuantizeImpl : public torch::nn::Cloneable<FakeQuantizeImpl> {
 public:
  explicit FakeQuantizeImpl(FakeQuantizeOptions options_);

  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  void enable_observer(bool enabled = true);
  void enable_fake_quant(bool enabled = true);
  bool observer_enabled() const;
  bool fake_quant_enabled() const;

  /// Recomputes scale and zero_point from the observer and stores them. A learnable quantizer
  /// does so only while its observer is enabled or before it has a scale; otherwise it keeps
  /// (and returns) the learned values.
  QParams update_qparams();
  /// The stored parameters (undefined scale before the first update). For a learnable
  /// quantizer: the learned scale clamped to eps (throws if it is NaN or Inf) and the zero point
  /// rounded and clamped to int32 [qmin, qmax], as copies.
  QParams qparams() const;
  /// Whether the scale is a learned parameter (options.learnable()).
  bool is_learnable() const { return options.learnable().has_value(); }
  [[deprecated("use is_learnable()")]] bool learnable() const { return is_learnable(); }
  /// The observer as its interface.
  ObserverBase& observer_ref() const;

  /// The quantizer's qualified name in its model ("fc1.input_quantizer"), put in front of every
  /// error its forward and update_qparams raise. The passes (prepare, prepare_qat, calibrate,
  /// convert, load_state, enable_observers, ...) set it; empty for a quantizer no pass has seen.
  void set_qualified_name(std::string name) { qualified_name_ = std::move(name); }
  const std::string& qualified_name() const { return qualified_name_; }

  FakeQuantizeOptions options;
  std::shared_ptr<torch::nn::Module> observer;
  at::Tensor scale;
  at::Tensor zero_point;
  at::Tensor observer_enabled_flag;
  at::Tensor fake_quant_enabled_flag;

 private:
  at::Tensor forward_unnamed(const at::Tensor& x);

  std::string qualified_name_;
};
TORCH_MODULE(FakeQuantize);

/// Options of LearnableFakeQuantize (LSQ / LSQ+ with torch.ao's _LearnableFakeQuantize
/// semantics).
struct LearnableFakeQuantizeOptions {
  explicit LearnableFakeQuantizeOptions(ObserverFactory observer)
      : observer_(std::move(observer)) {}
  /// Gives the initial scale and zero point while the observer is enabled.
  TORCH_ARG(ObserverFactory, observer);
  /// Multiply the scale and zero-point gradients by 1 / sqrt(numel * qmax) (LSQ paper).
  TORCH_ARG(bool, use_grad_scaling) = true;
  /// Learn the zero point too (affine specs only).
  TORCH_ARG(bool, learn_zero_point) = false;
  TORCH_ARG(double, eps) = kDefaultScaleEps;

 public:
  /// The three LSQ settings above as LearnableScaleOptions.
  LearnableScaleOptions scale_options() const {
    return LearnableScaleOptions()
        .use_grad_scaling(use_grad_scaling_)
        .learn_zero_point(learn_zero_point_)
        .eps(eps_);
  }
};

/// Fake quantization whose scale (and optionally zero point) are trainable parameters.
/// Typical use: calibrate with the observer enabled, then disable it and train; the
/// parameters "scale" and "zero_point" go to the optimizer with the model's other parameters.
/// It runs the same LSQ code as a FakeQuantize with FakeQuantizeOptions::learnable, which is
/// what the quantizable modules take through a QConfig (int8_learnable_qat_qconfig); this
/// standalone module keeps torch.ao's layout: a [1] scale per tensor and a float "zero_point" parameter.
class LearnableFakeQuantizeImpl : public torch::nn::Cloneable<LearnableFakeQuantizeImpl> {
 public:
  explicit LearnableFakeQuantizeImpl(LearnableFakeQuantizeOptions options_);

  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  void enable_observer(bool enabled = true);
  void enable_fake_quant(bool enabled = true);
  bool observer_enabled() const;
  bool fake_quant_enabled() const;

  /// Current parameters as QParams (zero point rounded to int32).
  QParams qparams() const;
  ObserverBase& observer_ref() const;

  LearnableFakeQuantizeOptions options;
  std::shared_ptr<torch::nn::Module> observer;
  at::Tensor scale;
  at::Tensor zero_point;
  at::Tensor observer_enabled_flag;
  at::Tensor fake_quant_enabled_flag;
};
TORCH_MODULE(LearnableFakeQuantize);

}  // namespace tquant
