#pragma once

// Internal: the CPU INT8 Linear on tquant's exact int16 multiply-add GEMM (int16_madd_gemm.h),
// the path Int8GemmPath::kInt16Madd of include/tquant/gemm.h, used where oneDNN's int8 kernels
// would saturate (no VNNI).

#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

namespace tquant::detail {

/// The weight codes q_w [N, K] int8 packed for the kernel: int16 [Int16PairLayout::elements()].
at::Tensor pack_weight_for_int16_madd(const at::Tensor& qweight);

/// y [M, N] float32 from x [M, K] float32 contiguous, int8 codes of x (as tquant::quantize):
///   per tensor (input_scale given):  q_x = code(x * mult, s_x),  y = acc * (s_x * s_w[n]) + b[n]
///   per token (no input_scale):      s_x[m] = max(amax_m / 127, eps),
///                                    y = (acc * s_w[n]) * s_x[m] + b[n]
/// acc = sum_k q_x[m, k] * q_w[n, k] exactly (int32). mult (float32 [K] or undefined) is
/// SmoothQuant's per-column multiplier. Rows of x holding a NaN or Inf are appended to
/// `nonfinite` (their outputs are meaningless; the caller makes them NaN).
at::Tensor int8_linear_int16_madd(const at::Tensor& x, std::optional<double> input_scale,
                                  const at::Tensor& packed_weight, int64_t out_features,
                                  const at::Tensor& weight_scale,
                                  const std::optional<at::Tensor>& bias, const at::Tensor& mult,
                                  std::vector<int64_t>* nonfinite);

}  // namespace tquant::detail
