#include "tquant/qparams.h"

#include <ATen/ATen.h>

namespace tquant {

namespace {

int64_t unsigned_symmetric_zero_point(const QuantSpec& spec) {
  // torch.ao uses 128 for uint8; (qmin + qmax + 1) / 2 gives 128 for 0..255 and 1..255, 8 for uint4.
  return (quant_min(spec) + quant_max(spec) + 1) / 2;
}

}  // namespace

QParams calculate_qparams(const at::Tensor& min_val, const at::Tensor& max_val,
                          const QuantSpec& spec, double eps) {
  check_spec(spec);
  TORCH_CHECK_VALUE(min_val.defined() && max_val.defined(),
                    "calculate_qparams: min and max must be defined tensors");
  TORCH_CHECK_VALUE(min_val.sizes() == max_val.sizes(),
                    "calculate_qparams: expected min and max of the same shape, got ",
                    min_val.sizes(), " and ", max_val.sizes());
  TORCH_CHECK_VALUE(min_val.numel() > 0,
                    "calculate_qparams: no range recorded yet (min and max are empty); "
                    "observe data before asking for quantization parameters");
  auto min_f = min_val.to(at::kFloat);
  auto max_f = max_val.to(at::kFloat);
  TORCH_CHECK_VALUE(min_f.isfinite().all().item<bool>() && max_f.isfinite().all().item<bool>(),
                    "calculate_qparams: expected a finite range, got min ", min_f.min().item<float>(),
                    " and max ", max_f.max().item<float>(),
                    " (observe data before asking for quantization parameters)");
  TORCH_CHECK_VALUE((min_f <= max_f).all().item<bool>(),
                    "calculate_qparams: expected min <= max everywhere");

  const int64_t qmin = quant_min(spec);
  const int64_t qmax = quant_max(spec);
  auto min_neg = at::minimum(min_f, at::zeros_like(min_f));
  auto max_pos = at::maximum(max_f, at::zeros_like(max_f));
  auto eps_t = at::full({}, eps, min_f.options());

  at::Tensor scale;
  at::Tensor zero_point;
  if (spec.symmetric()) {
    auto amax = at::maximum(-min_neg, max_pos);
    scale = at::maximum(amax / (static_cast<double>(qmax - qmin) / 2), eps_t);
    const int64_t zp = is_signed(spec.dtype()) ? 0 : unsigned_symmetric_zero_point(spec);
    zero_point = at::full(scale.sizes(), zp, scale.options().dtype(at::kInt));
  } else {
    scale = at::maximum((max_pos - min_neg) / static_cast<double>(qmax - qmin), eps_t);
    zero_point = (qmin - at::round(min_neg / scale).to(at::kInt)).clamp(qmin, qmax).to(at::kInt);
  }
  return QParams{scale, zero_point, spec};
}

QParams qparams_from_amax(const at::Tensor& amax, const QuantSpec& spec, double eps) {
  TORCH_CHECK_VALUE(spec.symmetric(), "qparams_from_amax expects a symmetric spec, got ",
                    to_string(spec));
  auto amax_f = amax.to(at::kFloat).abs();
  return calculate_qparams(-amax_f, amax_f, spec, eps);
}

namespace detail {

RowView block_rows(const at::Tensor& x, const QuantSpec& spec, const std::string& what) {
  const int64_t axis = canonical_axis(spec.axis(), x.dim(), what);
  const int64_t size = x.size(axis);
  TORCH_CHECK_VALUE(size % spec.block_size() == 0, what, ": per-block quantization along axis ",
                    axis, " expects its size to be a multiple of the block size ",
                    spec.block_size(), ", got size ", size);
  auto moved = x.movedim(axis, -1);
  RowView view;
  view.moved_shape = moved.sizes().vec();
  view.axis = axis;
  view.rows = moved.reshape({-1, spec.block_size()});
  return view;
}

at::Tensor from_block_rows(const at::Tensor& rows, const RowView& view) {
  return rows.reshape(view.moved_shape).movedim(-1, view.axis);
}

at::Tensor block_param_rows(const at::Tensor& param, int64_t axis) {
  return param.movedim(axis, -1).reshape({-1});
}

}  // namespace detail

QParams per_token_qparams(const at::Tensor& x2d, const QuantSpec& spec, double eps) {
  TORCH_CHECK_VALUE(x2d.dim() == 2, "per_token_qparams: expected a [M, K] tensor, got shape ",
                    x2d.sizes());
  TORCH_CHECK_VALUE(spec.symmetric() && is_integer(spec.dtype()) &&
                        spec.granularity() == Granularity::kPerTensor,
                    "per_token_qparams: expected a symmetric integer per-tensor spec, got ",
                    to_string(spec));
  QuantSpec row_spec = spec;
  row_spec.granularity(Granularity::kPerChannel).axis(0);
  const at::Tensor amax = x2d.detach().abs().amax({1}).to(at::kFloat);
  return qparams_from_amax(amax, row_spec, eps);
}

std::pair<at::Tensor, at::Tensor> reduce_min_max(const at::Tensor& x, const QuantSpec& spec,
                                                 const std::string& what) {
  TORCH_CHECK_VALUE(x.numel() > 0, what, ": expected a non-empty tensor, got shape ", x.sizes());
  switch (spec.granularity()) {
    case Granularity::kPerTensor: {
      auto [lo, hi] = at::aminmax(x);
      return {lo, hi};
    }
    case Granularity::kPerChannel: {
      const int64_t axis = canonical_axis(spec.axis(), x.dim(), what);
      // amin + amax: aminmax over a dimension runs a scalar loop in ATen 2.11 (4-5x slower on
      // a transposed view, see docs/benchmarks.md).
      auto rows = x.movedim(axis, 0).reshape({x.size(axis), -1});
      return {at::amin(rows, 1), at::amax(rows, 1)};
    }
    case Granularity::kPerBlock: {
      auto view = detail::block_rows(x, spec, what);
      auto lo = at::amin(view.rows, 1);
      auto hi = at::amax(view.rows, 1);
      auto shape = view.moved_shape;
      shape.back() /= spec.block_size();
      return {lo.reshape(shape).movedim(-1, view.axis), hi.reshape(shape).movedim(-1, view.axis)};
    }
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled Granularity");
}

void check_qparams_match(const QParams& qparams, const at::Tensor& x, const std::string& what) {
  TORCH_CHECK_VALUE(qparams.defined(), what, ": quantization parameters are not set");
  const auto& spec = qparams.spec;
  switch (spec.granularity()) {
    case Granularity::kPerTensor:
      TORCH_CHECK_VALUE(qparams.scale.numel() == 1, what,
                        ": per-tensor quantization expects one scale, got ",
                        qparams.scale.numel());
      return;
    case Granularity::kPerChannel: {
      const int64_t axis = canonical_axis(spec.axis(), x.dim(), what);
      TORCH_CHECK_VALUE(qparams.scale.dim() == 1 && qparams.scale.size(0) == x.size(axis), what,
                        ": per-channel quantization along axis ", axis, " expects ",
                        x.size(axis), " scales, got shape ", qparams.scale.sizes());
      return;
    }
    case Granularity::kPerBlock: {
      const int64_t axis = canonical_axis(spec.axis(), x.dim(), what);
      auto expected = x.sizes().vec();
      TORCH_CHECK_VALUE(expected[axis] % spec.block_size() == 0, what, ": size ", expected[axis],
                        " along axis ", axis, " is not a multiple of block size ",
                        spec.block_size());
      expected[axis] /= spec.block_size();
      TORCH_CHECK_VALUE(qparams.scale.sizes() == at::IntArrayRef(expected), what,
                        ": per-block scales expected shape ", at::IntArrayRef(expected), ", got ",
                        qparams.scale.sizes());
      return;
    }
  }
}

}  // namespace tquant
