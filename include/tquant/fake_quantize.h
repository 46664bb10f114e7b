#pragma once

#include <string>
#include <utility>

#include "tquant/functional.h"
#include "tquant/observer.h"

namespace tquant {

/// Options of FakeQuantize: the observer it owns and the gradient it passes.
///
/// Example:
///   auto options = tquant::FakeQuantizeOptions(
///       tquant::observer_factory<tquant::MovingAverageMinMaxObserver>(
///           tquant::MinMaxObserverOptions()));
struct FakeQuantizeOptions {
  explicit FakeQuantizeOptions(ObserverFactory observer) : observer_(std::move(observer)) {}
  TORCH_ARG(ObserverFactory, observer);
  TORCH_ARG(GradientMode, gradient) = GradientMode::kSteClipped;
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

  /// Recomputes scale and zero_point from the observer and stores them.
  QParams update_qparams();
  /// The stored parameters (undefined scale before the first update).
  QParams qparams() const;
  /// The observer as its interface.
  ObserverBase& observer_ref() const;

  /// The quantizer's qualified name in its model ("fc1.input_quantizer"), put in front of every
  /// error its forward and update_qparams raise. The passes (prepare, prepare_qat, calibrate,
  /// convert, load_state, freeze_observers, ...) set it; empty for a quantizer no pass has seen.
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
};

/// Fake quantization whose scale (and optionally zero point) are trainable parameters.
/// Typical use: calibrate with the observer enabled, then disable it and train; the
/// parameters "scale" and "zero_point" go to the optimizer with the model's other parameters.
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
