#pragma once

#include <optional>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include "tquant/fake_quantize.h"
#include "tquant/nn/quant_mode.h"
#include "tquant/qconfig.h"

namespace tquant {

/// What Quantizable::convert did to one module.
struct ConvertResult {
  /// True when the module now runs in QuantMode::kConverted.
  bool converted = false;
  /// The converted scheme (see Quantizable::converted_scheme) when converted.
  std::string scheme;
  /// Why the module was not converted (it stays as it was), when not converted.
  std::string reason;
};

/// The interface the passes (prepare, calibrate, convert, ...) use to drive a tquant module,
/// next to torch::nn::Module. Every quantizable twin of a torch module implements it
/// (QuantLinear, QuantConv2d, QuantMatMul, QuantEmbedding, QuantStub).
///
/// A pass finds these modules with dynamic_cast over named_modules() and changes their state
/// in place; the module objects never move, so a parent that calls `fc1(x)` through its own
/// member field runs the quantized computation.
class Quantizable {
 public:
  virtual ~Quantizable() = default;

  /// Builds fresh quantizers from the config (replacing earlier ones).
  virtual void set_qconfig(const QConfig& qconfig) = 0;
  /// The config given to set_qconfig, if any.
  virtual const std::optional<QConfig>& qconfig() const = 0;
  /// Changes what forward computes (see QuantMode).
  virtual void set_mode(QuantMode mode) = 0;
  virtual QuantMode mode() const = 0;
  /// Name of the tquant type for reports, e.g. "QuantLinear".
  virtual std::string quant_type_name() const = 0;

  /// Lowers the module to integer execution in place (see tquant::convert): integer weight
  /// codes and scales from its frozen quantizers, mode kConverted, float weight dropped.
  /// Modules whose scheme has no integer kernel return converted = false with the reason and
  /// stay unchanged. The default converts nothing.
  virtual ConvertResult convert() {
    return {false, "", quant_type_name() + " has no integer kernel; it stays as it is"};
  }
  /// The scheme of a converted module ("int8_static", "int8_static+relu", "int8_dynamic",
  /// "weight_only", "weight_only:block=B", "w4a8", "w4a8:block=B"); empty unless mode() is
  /// kConverted. Saved by save_state.
  virtual std::string converted_scheme() const { return ""; }
  /// Why convert() would keep this module simulated with its current QConfig whatever the data
  /// (its formats have no integer kernel), or "" when they do (or the module cannot tell before
  /// calibration). prepare reports it (QuantizedModule::convert_note), so a custom QConfig that
  /// will never convert is seen at once, not after calibration. The default says nothing.
  virtual std::string convert_note() const { return ""; }
  /// Puts a module (in any mode) into the converted layout of `scheme` with placeholder
  /// values, for load_state to fill: the same tensors, dtypes and shapes that convert() gives.
  virtual void make_converted(const std::string& scheme) {
    TORCH_CHECK_VALUE(false, quant_type_name(), ": cannot be converted (scheme '", scheme, "')");
  }
  /// Builds what a converted forward derives from the module's state (prepacked weights, host
  /// copies of scales), so that the first forward after convert or load_state is as fast as the
  /// rest and never builds anything while other threads call forward. convert() does it itself;
  /// load_state calls it after copying the saved tensors. The default does nothing.
  virtual void prepare_converted() {}

  // ---- SmoothQuant (tquant/smooth_quant.h, docs/smoothquant.md) ----
  /// The per-input-channel SmoothQuant factors s (float32 [in_features], buffer
  /// "smooth_factor"), or an undefined tensor when the module is not smoothed. save_state
  /// records their presence, so load_state re-creates the buffer in a fresh model.
  virtual at::Tensor get_smooth_factor() const { return {}; }
  /// Sets the factors; an undefined tensor asks for none (QuantLinear: an error once it has
  /// some, as LibTorch cannot unregister buffers). The default supports none.
  virtual void set_smooth_factor(const at::Tensor& factor) {
    TORCH_CHECK_NOT_IMPLEMENTED(!factor.defined(), quant_type_name(),
                                ": SmoothQuant factors are supported by QuantLinear only");
  }
  [[deprecated("use get_smooth_factor()")]] at::Tensor smoothing() const {
    return get_smooth_factor();
  }
  [[deprecated("use set_smooth_factor()")]] void set_smoothing(const at::Tensor& factor) {
    set_smooth_factor(factor);
  }
};

/// The QConfig, the mode and the mode rules every tquant module shares (QuantLinear,
/// QuantConv2d, QuantMatMul, QuantAttention, QuantEmbedding, the stubs), so each one checks,
/// installs and switches by exactly the same steps. set_qconfig and set_mode are fixed sequences
/// around a few hooks the module implements (its quantizers, how it builds them, its own extra
/// checks). Not a torch::nn::Module itself: a module derives from torch::nn::Cloneable<XImpl>
/// and from this; the state here is plain values, copied by clone() with the module.
class QuantizableBase : public Quantizable {
 public:
  /// check_qconfig, then the module's own check_module_qconfig (both before anything changes,
  /// so a rejected QConfig leaves the module as it was); then stores the config, builds fresh
  /// quantizers (install_quantizers, replacing earlier ones) and applies the current mode.
  void set_qconfig(const QConfig& qconfig) override;
  /// The QConfig given to set_qconfig, if any.
  const std::optional<QConfig>& qconfig() const override { return qconfig_; }
  /// Changes what forward computes. Refused: leaving kConverted, entering it other than through
  /// convert(), kObserve / kFakeQuant without a QConfig, and what check_module_mode refuses.
  /// Switching to kFakeQuant freezes every quantizer whose observer has seen data (see
  /// QuantMode).
  void set_mode(QuantMode mode) override;
  QuantMode mode() const override { return mode_; }

 protected:
  /// Names the module in errors, e.g. "QuantLinear(in_features=16, out_features=8)". The
  /// default is quant_type_name().
  virtual std::string error_name() const { return quant_type_name(); }
  /// The module's quantizer holders (some may be empty).
  virtual std::vector<FakeQuantize*> quantizers() = 0;
  /// Builds the quantizers from qconfig_ (set) and registers them as children.
  virtual void install_quantizers() = 0;
  /// The module's own checks of a QConfig, after check_qconfig. The default accepts it.
  virtual void check_module_qconfig(const QConfig& /*qconfig*/) const {}
  /// The module's own checks of a mode change, after the shared ones. The default accepts it.
  virtual void check_module_mode(QuantMode /*mode*/) const {}

  /// Sets every quantizer's observer and fake-quant switches for mode_.
  void apply_mode();
  /// For reset(), which clone() calls on the copy: with a QConfig stored, builds its quantizers
  /// again and applies the mode; without one, does nothing.
  void restore_quantizers();
  /// The device of the first non-empty quantizer, or nullopt: modules without parameters build
  /// new quantizers where the old ones were.
  std::optional<c10::Device> current_quantizer_device();

  std::optional<QConfig> qconfig_;
  QuantMode mode_ = QuantMode::kFloat;
};

/// The Quantizable interface of a module, or nullptr when it is not a tquant module.
inline Quantizable* as_quantizable(torch::nn::Module& module) {
  return dynamic_cast<Quantizable*>(&module);
}

}  // namespace tquant
