#pragma once

#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "tquant/formats.h"

namespace tquant {

/// Default lower bound of a scale: float32 machine epsilon, as in torch.ao.quantization.
constexpr double kDefaultScaleEps = std::numeric_limits<float>::epsilon();

/// Quantization parameters of one tensor:  real = scale * (q - zero_point).
///
/// Shapes follow the spec's granularity:
///   per-tensor:  scale and zero_point are 0-dim;
///   per-channel: [C] where C is the size of the tensor along spec.axis;
///   per-block:   the tensor's shape with dim `axis` replaced by size / block_size.
/// scale is float32, zero_point int32 (always 0 for symmetric signed formats and fp8).
struct QParams {
  at::Tensor scale;
  at::Tensor zero_point;
  QuantSpec spec;

  bool defined() const { return scale.defined(); }
};

/// min/max to scale and zero point, as torch.ao.quantization does it:
///   the range is first widened to include 0;
///   symmetric: scale = max(|min|, max) / ((qmax - qmin) / 2), zero point 0 (signed) or the
///              middle code (unsigned: 128 for uint8, 8 for uint4);
///   affine:    scale = (max - min) / (qmax - qmin), zero_point = qmin - round(min / scale),
///              clamped to [qmin, qmax];
///   scale = max(scale, eps), so an all-zero range gives scale eps instead of 0 or NaN.
/// min_val and max_val must have the shape the granularity asks for (see QParams).
///
/// Example (per-tensor int8 from a tensor's range):
///   auto [lo, hi] = tquant::reduce_min_max(x, spec);
///   tquant::QParams qp = tquant::calculate_qparams(lo, hi, spec);
///   at::Tensor q = tquant::quantize(x, qp);   // tquant/functional.h
QParams calculate_qparams(const at::Tensor& min_val, const at::Tensor& max_val,
                          const QuantSpec& spec, double eps = kDefaultScaleEps);

/// Symmetric range [-amax, amax] to quantization parameters (NVIDIA's "amax" convention).
QParams qparams_from_amax(const at::Tensor& amax, const QuantSpec& spec,
                          double eps = kDefaultScaleEps);

/// Dynamic per-token parameters of a [M, K] tensor (one scale per row, computed from the data
/// at run time): amax[m] = max_k |x[m, k]|, then qparams_from_amax with `spec` made per-channel
/// along axis 0. `spec` must be symmetric, integer and per-tensor; for the int8 narrow-range
/// preset, scale[m] = max(amax[m] / 127, eps) in float32, the rule of int8_linear_dynamic.
QParams per_token_qparams(const at::Tensor& x2d, const QuantSpec& spec,
                          double eps = kDefaultScaleEps);

/// Min and max of x reduced to the spec's granularity (0-dim, [C], or the block shape).
/// Errors name `what` when the axis is out of range or a block does not divide the axis.
std::pair<at::Tensor, at::Tensor> reduce_min_max(const at::Tensor& x, const QuantSpec& spec,
                                                 const std::string& what = "tensor");

/// Checks that qparams fit tensor x (axis in range, scale shape as the granularity asks).
void check_qparams_match(const QParams& qparams, const at::Tensor& x, const std::string& what);

namespace detail {

/// A tensor viewed as rows of one block (or one channel) each, and how to undo the view.
/// Per-block along `axis` with block size B: x.movedim(axis, -1).reshape(-1, B).
struct RowView {
  at::Tensor rows;                  // [R, B]
  std::vector<int64_t> moved_shape;  // shape of x.movedim(axis, -1)
  int64_t axis = 0;
};
RowView block_rows(const at::Tensor& x, const QuantSpec& spec, const std::string& what);
at::Tensor from_block_rows(const at::Tensor& rows, const RowView& view);
/// Per-block qparams flattened to one value per row of block_rows.
at::Tensor block_param_rows(const at::Tensor& param, int64_t axis);

}  // namespace detail

}  // namespace tquant
