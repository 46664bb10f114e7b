#pragma once

// Internal: the integer GEMM of a converted QuantLinear ("int8_static", "int8_dynamic", "w4a8",
// "w4a8:block=B"): the int8 weights it runs on, derived once from the module's buffers (int4
// codes unpacked, cut into blocks, prepacked for the CPU), and the per-call dispatch to the CPU
// (tquant/gemm.h) or CUDA (tquant/cuda_int8.h) INT8 Linear.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "tquant/gemm.h"

namespace tquant::detail {

/// The weight as the INT8 GEMMs take it, in `blocks` pieces along the input dimension:
///   y[m, n] = sum_b  acc_b[m, n] * s_x * scale_b[n]  (+ bias[n]),
///   acc_b = q_x[m, b*B : (b+1)*B] . codes_b[n, :]  (int32),
/// one piece (B = K) when the weight has one scale per output channel.
struct LinearGemmWeights {
  /// Input features per piece (K for one piece).
  int64_t block_cols = 0;
  /// int8 [N, block_cols] per piece, on the device of the module's buffers.
  std::vector<at::Tensor> codes;
  /// float32 [N] per piece, same device.
  std::vector<at::Tensor> scales;
  /// CPU buffers only: each piece prepacked for the CPU INT8 GEMM (prepare_int8_weight).
  std::vector<Int8Weight> packed;
};

/// Builds LinearGemmWeights from int8 codes [N, K] and scales [N] (one piece) or [N, K / B]
/// (K / B pieces of B columns).
LinearGemmWeights linear_gemm_weights(const at::Tensor& codes, const at::Tensor& scale);

/// y = x W^T + b on the INT8 GEMMs, x [..., K] on CPU (any float dtype; computed in float32) or
/// CUDA: static per-tensor input quantization when `input_scale` is set, dynamic per-token
/// otherwise (one piece only: per-token scales are per whole row). On CPU an input row with a
/// NaN or Inf gives a NaN output row (as int8_linear_static). `what()` names the module in errors
/// and in the once-only warning about the slow CUDA reference path (called only then).
/// `input_multiplier` (float32 [K] on x's device, or undefined; SmoothQuant's 1 / s) multiplies x
/// per input channel: inside the quantize pass on CPU (int8_linear_static's input_multiplier),
/// as one elementwise op before the kernels on CUDA.
/// `gelu` returns GELU(y) (exact, erf): inside the GEMM's epilogue for one piece (oneDNN's post-op
/// on CPU static, the fused dequantize kernel on CUDA), as at::gelu_ after the sum otherwise.
at::Tensor linear_int8_gemm(const at::Tensor& x, std::optional<double> input_scale,
                            const LinearGemmWeights& weights, const at::Tensor& bias,
                            const std::function<std::string()>& what,
                            const at::Tensor& input_multiplier = {}, bool gelu = false);

}  // namespace tquant::detail
