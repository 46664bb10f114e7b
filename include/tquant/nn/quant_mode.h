#pragma once

#include <string>

namespace tquant {

/// What a quantizable module (QuantLinear, ...) does in forward. The passes change it in place;
/// the module object, its parameters and its children stay where they are.
///   kFloat:     exactly the torch module's computation; quantizers are bypassed.
///   kObserve:   the float computation, while the quantizers' observers record the input and
///               the weight (calibration, after `prepare`).
///   kFakeQuant: quantize-dequantize (QDQ) of input and weight, then the float computation,
///               with straight-through gradients (simulation, and QAT after `prepare_qat`).
///   kConverted: real integer execution after `convert`: the weight is stored as integer codes
///               with their scales (the float weight is dropped) and forward runs an INT8 GEMM
///               (or dequantizes the codes, for weight-only schemes). One-way: a converted
///               module cannot change mode again.
enum class QuantMode { kFloat, kObserve, kFakeQuant, kConverted };

/// "float", "observe", "fake_quant" or "converted".
inline std::string to_string(QuantMode mode) {
  switch (mode) {
    case QuantMode::kFloat:
      return "float";
    case QuantMode::kObserve:
      return "observe";
    case QuantMode::kFakeQuant:
      return "fake_quant";
    case QuantMode::kConverted:
      return "converted";
  }
  return "unknown";
}

}  // namespace tquant
