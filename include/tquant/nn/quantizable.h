#pragma once

#include <optional>
#include <string>

#include <torch/nn/module.h>

#include "tquant/nn/quant_mode.h"
#include "tquant/qconfig.h"

namespace tquant {

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
};

/// The Quantizable interface of a module, or nullptr when it is not a tquant module.
inline Quantizable* as_quantizable(torch::nn::Module& module) {
  return dynamic_cast<Quantizable*>(&module);
}

}  // namespace tquant
