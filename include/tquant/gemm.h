#pragma once

// CPU INT8 Linear: int8 x int8 -> int32 GEMM with exact int32 sums on every x86-64 CPU, with the
// input quantization and the output dequantization around it: oneDNN's qlinear kernel (inside
// LibTorch) where it has VNNI, tquant's own int16 multiply-add kernel where oneDNN's int8
// kernels would saturate (AVX2, AVX-512 without VNNI). Plain interface: at::Tensor in,
// at::Tensor out (docs/backends.md).

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace tquant {

/// Which kernel runs the int8 GEMM (chosen once per process, see int8_gemm_path()).
///   kOneDnnQLinear: onednn::qlinear_pointwise with a prepacked weight; dequantization by the
///                   per-channel weight scale, the input scale and the bias fused in its epilogue.
///   kIntMm:         at::_int_mm (int32 accumulators) followed by one fused dequantization op.
///   kInt16Madd:     tquant's kernel: codes widened to int16, pairs multiplied and summed in int32
///                   (vpmaddwd; AVX-512 BW, AVX2 or portable code by cpu_isa()), dequantized in
///                   place. Exact on any CPU; the default where oneDNN has no VNNI.
enum class Int8GemmPath { kOneDnnQLinear, kIntMm, kInt16Madd };

std::string to_string(Int8GemmPath path);

/// The path the int8_linear_* functions take in this process, and why (for reports and benches).
/// kOneDnnQLinear when LibTorch has oneDNN, its onednn ops are registered and its int8 kernels
/// sum exactly on this CPU (VNNI or AMX, under ONEDNN_MAX_CPU_ISA; checked once on codes that
/// would saturate without it); kInt16Madd otherwise. TQUANT_INT8_GEMM=int_mm forces kIntMm where
/// at::_int_mm is exact, TQUANT_INT8_GEMM=int16_madd forces kInt16Madd.
Int8GemmPath int8_gemm_path();
std::string int8_gemm_path_reason();
/// Every path prepare_int8_weight accepts in this process: available, and exact on this CPU
/// (kInt16Madd always; the default path first).
std::vector<Int8GemmPath> int8_gemm_exact_paths();

/// An int8 weight prepared once from a float weight W [N, K] (out_features x in_features):
/// per-output-channel symmetric int8, narrow range,
///   scale[n] = max(amax_k |W[n, k]| / 127, eps)        (eps = FLT_EPSILON, kDefaultScaleEps)
///   q[n, k]  = clamp(round(W[n, k] * (1 / scale[n])), -127, 127)
///   real W[n, k] ~= scale[n] * q[n, k]                  (zero point 0)
/// Rounding as tquant::quantize (float32 reciprocal, half-to-even).
struct Int8Weight {
  /// [N, K] int8 codes, row-major; kept for the reference twins and the kIntMm path.
  at::Tensor qweight;
  /// [N] float32 per-channel scales.
  at::Tensor scale;
  /// The weight in the layout of the path: kOneDnnQLinear, oneDNN's prepacked blocked weight
  /// (opaque mkldnn tensor from onednn::qlinear_prepack); kIntMm, q^T as a contiguous [K, N] int8;
  /// kInt16Madd, int16 codes in pairs along K, 16 columns per block (src/int16_madd_gemm.h).
  at::Tensor packed;
  Int8GemmPath path = Int8GemmPath::kOneDnnQLinear;

  int64_t in_features() const { return qweight.size(1); }
  int64_t out_features() const { return qweight.size(0); }
  bool defined() const { return qweight.defined(); }
};

/// The largest K an int8 GEMM takes: K * 127 * 127 must fit in int32.
constexpr int64_t kMaxInt8GemmK = 133144;

/// Quantizes a float weight [N, K] as described in Int8Weight and prepacks it for `path`
/// (default: int8_gemm_path()). Asking for a path that is unavailable, or that would not sum
/// exactly on this CPU (kOneDnnQLinear or kIntMm without VNNI), is an error; so is K above
/// kMaxInt8GemmK.
Int8Weight prepare_int8_weight(const at::Tensor& weight,
                               std::optional<Int8GemmPath> path = std::nullopt);
/// Same, from int8 codes [N, K] and scales [N] that were computed elsewhere (e.g. by a QAT
/// weight quantizer with narrow range). Codes must lie in [-127, 127].
Int8Weight prepare_int8_weight(const at::Tensor& qweight, const at::Tensor& scale,
                               std::optional<Int8GemmPath> path = std::nullopt);

/// Static INT8 Linear, x: float32 [..., K], input_scale: per-tensor symmetric int8 scale s_x > 0.
///   q_x = clamp(round(x * (1 / s_x)), -127, 127)            (float32 reciprocal, half-to-even)
///   y[m, n] = (sum_k q_x[m, k] * q_w[n, k]) * s_x * s_w[n] + bias[n]        float32 [..., N]
/// input_multiplier (float32 [K], optional; SmoothQuant passes 1 / s, tquant/smooth_quant.h)
/// scales x per input channel inside the same quantize pass:
///   q_x[m, k] = clamp(round((x[m, k] * mult[k]) * (1 / s_x)), -127, 127)   (float32 products)
/// gelu: returns GELU(y) (exact, x * Phi(x), as at::gelu), inside the GEMM's epilogue on the
/// oneDNN path (a oneDNN post-op: no extra pass over y), as at::gelu_ after the _int_mm path.
///
/// Example (QuantLinear does this after convert; direct use needs no module):
///   tquant::Int8Weight w = tquant::prepare_int8_weight(linear->weight);   // once
///   at::Tensor y  = tquant::int8_linear_static(x, /*input_scale=*/0.02, w, linear->bias);
///   at::Tensor yd = tquant::int8_linear_dynamic(x, w, linear->bias);      // per-token scales
at::Tensor int8_linear_static(const at::Tensor& x, double input_scale, const Int8Weight& weight,
                              const std::optional<at::Tensor>& bias = std::nullopt,
                              const std::optional<at::Tensor>& input_multiplier = std::nullopt,
                              bool gelu = false);

/// Dynamic INT8 Linear: per-token (per-row of x viewed as [M, K]) symmetric scales computed at
/// run time,  s_x[m] = max(max_k |x[m, k]| / 127, eps),  then as int8_linear_static row by row.
/// With input_multiplier, x[m, k] * mult[k] replaces x[m, k] in both (one pass per row for the
/// maximum, one for the codes, as without it).
at::Tensor int8_linear_dynamic(const at::Tensor& x, const Int8Weight& weight,
                               const std::optional<at::Tensor>& bias = std::nullopt,
                               const std::optional<at::Tensor>& input_multiplier = std::nullopt);

/// The whole INT8 Linear on the CPU with the contract of int8_linear_cuda (tquant/cuda_int8.h):
/// static per-tensor when input_scale is set (int8_linear_static), dynamic per-token when it is
/// nullopt (int8_linear_dynamic, GELU applied after it); argument order (x, input_scale, weight,
/// bias, gelu) as on CUDA. Float in, float out; the codes stay inside. The weight is the
/// prepacked Int8Weight, where CUDA takes codes and scales (cuBLASLt needs no prepacking).
///
/// Example:
///   at::Tensor y = tquant::int8_linear_cpu(x, /*input_scale=*/0.02, w, bias);   // static
///   at::Tensor yd = tquant::int8_linear_cpu(x, std::nullopt, w, bias);         // per token
at::Tensor int8_linear_cpu(const at::Tensor& x, std::optional<double> input_scale,
                           const Int8Weight& weight,
                           const std::optional<at::Tensor>& bias = std::nullopt,
                           bool gelu = false);

/// Reference twins: plain torch ops, int32 accumulators computed exactly (int64 matmul), scales
/// applied in float64 and rounded once to float32. The library paths round in float32 inside the
/// GEMM epilogue, so they agree to kInt8LinearRelTol relative to max |y| (tests).
at::Tensor int8_linear_static_ref(const at::Tensor& x, double input_scale, const Int8Weight& weight,
                                  const std::optional<at::Tensor>& bias = std::nullopt,
                                  const std::optional<at::Tensor>& input_multiplier = std::nullopt,
                                  bool gelu = false);
at::Tensor int8_linear_dynamic_ref(const at::Tensor& x, const Int8Weight& weight,
                                   const std::optional<at::Tensor>& bias = std::nullopt,
                                   const std::optional<at::Tensor>& input_multiplier = std::nullopt);

/// Relative tolerance between a library path and its reference: a few float32 roundings of the
/// epilogue (acc -> float, * s_w, * s_x, + bias), each <= 2^-24 relative.
constexpr double kInt8LinearRelTol = 1e-5;

// Internal (the converted modules and the tests use it): not part of the API, may change in any
// release without deprecation.
namespace detail {

/// Whether oneDNN's int8 kernels sum exactly in this process: cpu_features().onednn_int8_exact,
/// confirmed once on codes that would saturate a pre-VNNI multiply (tquant/cpu_features.h).
bool onednn_int8_sums_exact();

/// q = clamp(round(x * (1 / scale)), -127, 127) as int8, x float32 [M, K] contiguous; one pass
/// (AVX-512 when the CPU has it, ATen ops otherwise).
at::Tensor quantize_per_tensor_int8(const at::Tensor& x, double scale);
/// Per-row: scale[m] = max(amax_k |x[m, k]| / 127, eps), q as above with each row's scale.
/// Returns {q int8 [M, K], scale float32 [M]}.
std::pair<at::Tensor, at::Tensor> quantize_per_token_int8(const at::Tensor& x);
/// Reference twins of the two quantizers (ATen ops only).
at::Tensor quantize_per_tensor_int8_ref(const at::Tensor& x, double scale);
std::pair<at::Tensor, at::Tensor> quantize_per_token_int8_ref(const at::Tensor& x);

/// The GEMM of the chosen path: y[m, n] = acc[m, n] * x_scale * w_scale[n] (+ bias[n]) in float32,
/// acc = q_x [M, K] int8 times q_w^T. With x_scale = 1 and w_scale = 1 and |acc| < 2^24 the
/// result is the exact integer accumulator (used by the tests).
at::Tensor int8_gemm_dequant(const at::Tensor& qx, double x_scale, const Int8Weight& weight,
                             const at::Tensor& w_scale, const std::optional<at::Tensor>& bias);

}  // namespace detail

}  // namespace tquant
