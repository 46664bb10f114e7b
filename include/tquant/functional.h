#pragma once

#include <ATen/core/Tensor.h>

#include "tquant/qparams.h"

namespace tquant {

/// Gradient of fake quantization with respect to its input.
///   kSte:        straight-through: d out / d x = 1 everywhere.
///   kSteClipped: straight-through inside the representable range, 0 where x was clamped
///                (LibTorch's fake_quantize_* ops and NVIDIA's tools do this).
enum class GradientMode { kSte, kSteClipped };

/// Integer codes (or fp8 values) of x:  q = clamp(round(x * (1 / scale)) + zero_point, qmin, qmax).
/// Rounding is half-to-even and 1 / scale is taken in float32, exactly as LibTorch's kernels do.
/// The result has the spec's storage type (int8, uint8 or float8_e4m3fn); int4 codes lie in
/// [-8, 7] (or [0, 15]) of an int8 / uint8 tensor.
///
/// Example:
///   auto qp = tquant::calculate_qparams(x.min(), x.max(), tquant::QuantSpec());
///   at::Tensor q = tquant::quantize(x, qp);          // int8
///   at::Tensor y = tquant::dequantize(q, qp);        // float32, y ~= x
at::Tensor quantize(const at::Tensor& x, const QParams& qparams);

/// real = scale * (q - zero_point), in `out_dtype` (float32 by default).
at::Tensor dequantize(const at::Tensor& q, const QParams& qparams,
                      c10::ScalarType out_dtype = c10::kFloat);

/// dequantize(quantize(x)) in x's dtype, differentiable with respect to x. A NaN or +-Inf
/// element of x comes out NaN (no code represents it), so the rows of a GEMM it feeds are NaN
/// as in float, never a finite number.
/// Per-tensor and per-channel integer formats run LibTorch's fake_quantize_* kernels (so values
/// and clipped gradients equal theirs bit for bit); per-block runs them on a row view.
at::Tensor fake_quantize(const at::Tensor& x, const QParams& qparams,
                         GradientMode mode = GradientMode::kSteClipped);

/// Learned step size quantization (LSQ, Esser et al. 2019): fake quantization that is
/// differentiable with respect to x, scale and zero_point. `zero_point` is a float tensor.
/// grad_factor scales the gradients of scale and zero point; LSQ uses 1 / sqrt(numel * qmax).
/// Per-tensor and per-channel integer specs only; runs LibTorch's _fake_quantize_learnable_* ops
/// (values and gradients are theirs), except that a NaN or +-Inf element of x comes out NaN as
/// in fake_quantize.
at::Tensor fake_quantize_learnable(const at::Tensor& x, const at::Tensor& scale,
                                   const at::Tensor& zero_point, const QuantSpec& spec,
                                   double grad_factor = 1.0);

/// LSQ's gradient scale for a tensor of `numel` elements: 1 / sqrt(numel * qmax).
double lsq_grad_factor(int64_t numel, const QuantSpec& spec);

}  // namespace tquant
