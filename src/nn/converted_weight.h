#pragma once

// Internal: integer weight codes and scales for converted modules (QuantLinear, QuantEmbedding,
// QuantMatMul), and the scheme strings save_state writes for them.

#include <cstdint>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "tquant/fake_quantize.h"
#include "tquant/formats.h"

namespace tquant::detail {

/// A weight [N, K] as symmetric integer codes with their scales: real ~= code * scale.
struct WeightCodes {
  /// int8 [N, K]; int4 codes lie in [-8, 7] of the int8 tensor.
  at::Tensor codes;
  /// float32 [N] (one scale per row) or [N, K / block] (one per block along dim 1).
  at::Tensor scale;
  /// 0: one scale per row; B > 0: one scale per B consecutive columns.
  int64_t block = 0;
};

/// The codes of `weight` [N, K] under the quantizer's frozen parameters (the very codes
/// fake-quantization rounds to). A quantizer that has seen nothing observes the weight first.
/// Symmetric integer specs only: per-tensor (scale expanded to one per row), per-channel along
/// axis 0, per-block along axis 1. Returns nullopt and sets `reason` for other specs.
std::optional<WeightCodes> weight_codes(FakeQuantizeImpl& quantizer, const at::Tensor& weight,
                                        std::string* reason);

/// real = code * scale in float32; scale [] , [rows] or [rows, cols / block] as in WeightCodes
/// (`codes` may be any gathered subset of rows with its matching scale rows).
at::Tensor dequantize_codes(const at::Tensor& codes, const at::Tensor& scale);

/// Narrow-range int8 codes of an activation with a per-tensor scale [] (any device), held as
/// float32 values (exact integers) for a float GEMM of the codes:
/// clamp(round(x * (1 / scale)), -127, 127), 1 / scale in float32 and half-to-even rounding as
/// LibTorch's fake-quantize kernels, so the codes equal those fake quantization rounds to.
at::Tensor int8_codes_as_float(const at::Tensor& x, const at::Tensor& scale);

/// True for the spec the INT8 GEMMs take: int8, symmetric, narrow range (codes in [-127, 127]).
bool is_int8_gemm_spec(const QuantSpec& spec);

/// Scheme strings: "<kind>" or "<kind>:block=<B>" (kind e.g. "int8_static", "weight_only").
struct ParsedScheme {
  std::string kind;
  int64_t block = 0;
};
std::string format_scheme(const std::string& kind, int64_t block);
/// Throws naming `what` when the text is not "<kind>[:block=B]" with kind among `kinds`.
ParsedScheme parse_scheme(const std::string& scheme, std::initializer_list<const char*> kinds,
                          const std::string& what);

/// Placeholder codes (zeros) and scales (ones) of the shapes weight_codes gives for an [N, K]
/// weight, for make_converted.
WeightCodes placeholder_codes(int64_t rows, int64_t cols, int64_t block, const std::string& what);

}  // namespace tquant::detail
