#pragma once

// Internal helpers shared by the quantizable twins (QuantLinear, QuantConv2d, QuantMatMul,
// QuantEmbedding, QuantStub), so every module switches modes and installs quantizers by
// exactly the same rules.

#include <optional>
#include <string>

#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include "tquant/fake_quantize.h"
#include "tquant/nn/quant_mode.h"
#include "tquant/qconfig.h"

namespace tquant::detail {

/// Sets a quantizer's observer and fake-quant switches for `mode`:
///   kFloat:     both off;
///   kObserve:   observer on, fake quant off;
///   kFakeQuant: a quantizer whose observer has seen data is frozen (update_qparams once,
///               observer off); one that has seen nothing keeps observing at every step.
/// No-op on an empty holder.
void configure_quantizer(FakeQuantize& quantizer, QuantMode mode);

/// Builds a quantizer with `factory` on `device` and registers it on `module` as child `name`
/// (replacing an earlier child of that name). An empty factory unregisters the child and returns
/// an empty holder. `what` names the module in errors.
FakeQuantize install_quantizer(torch::nn::Module& module, const std::string& name,
                               const QuantizerFactory& factory,
                               const std::optional<c10::Device>& device,
                               const std::string& what);

/// LibTorch's initialization of Linear and ConvNd (and Python's): kaiming_uniform_(weight,
/// a = sqrt(5)), then bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) when defined; the same calls in
/// the same order, so equal seeds give equal parameters.
void reset_weight_and_bias(at::Tensor& weight, at::Tensor& bias);

/// Checks a set_mode call: a converted module cannot change mode again, and kConverted is
/// reached only through convert() (it builds the integer weights). `what` names the module.
void check_mode_change(QuantMode from, QuantMode to, const std::string& what);

/// Unregisters child `name` (if registered) and empties `holder`.
void unregister_quantizer(torch::nn::Module& module, const std::string& name,
                          FakeQuantize& holder);

/// Registers buffer `name` with `value`, or points the already registered buffer at `value`
/// (LibTorch cannot unregister buffers). Returns the registered tensor.
at::Tensor set_buffer(torch::nn::Module& module, const std::string& name, at::Tensor value);

/// The device of a quantizer's buffers, or nullopt for an empty holder; modules without
/// parameters keep new quantizers where the old ones were.
std::optional<c10::Device> quantizer_device(const FakeQuantize& quantizer);

/// Checks that a weight quantizer gives one scale per row (axis 0) when its spec is
/// per-channel: output channels of a convolution weight, rows of an embedding table.
/// Per-tensor and per-block specs pass. `axis_meaning` says what axis 0 is, for the error.
void check_weight_axis0(const FakeQuantize& quantizer, const std::string& what,
                        const std::string& axis_meaning);

}  // namespace tquant::detail
