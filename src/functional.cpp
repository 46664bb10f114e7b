#include "tquant/functional.h"

#include <cmath>
#include <limits>
#include <string>
#include <tuple>

#include <immintrin.h>

#include <atomic>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include "avx512_util.h"

namespace tquant {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Whether x[0, n) holds a NaN or Inf (x - x is 0 exactly for finite x), 16 lanes at a time.
TQUANT_AVX512F bool has_nonfinite_avx512(const float* x, int64_t n) {
  const __m512 zero = _mm512_setzero_ps();
  __mmask16 bad = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), zero, _CMP_NEQ_UQ);
  }
  for (; i < n; ++i) bad |= !std::isfinite(x[i]);
  return bad != 0;
}

// Whether x holds a NaN or Inf: one read pass over float32 CPU tensors on AVX-512 CPUs (the
// common case of fake quantization in QAT and calibration), ATen's isfinite otherwise.
bool has_nonfinite(const at::Tensor& x) {
  if (!(detail::kernels_use_avx512() && x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous())) {
    return !at::isfinite(x).all().item<bool>();
  }
  const float* data = x.const_data_ptr<float>();
  std::atomic<bool> found{false};
  at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    if (!found.load(std::memory_order_relaxed) && has_nonfinite_avx512(data + begin, end - begin)) {
      found.store(true, std::memory_order_relaxed);
    }
  });
  return found.load();
}

// `result` with NaN wherever x is NaN or Inf: a quantized format has no code for them (LibTorch's
// kernels clamp them to a finite code), so they come out NaN and whatever consumes them (the rows
// of a following GEMM) is NaN as in float, never a finite number. Only inputs that hold one pay
// for more than the check.
at::Tensor nan_where_nonfinite(const at::Tensor& result, const at::Tensor& x) {
  if (!has_nonfinite(x)) return result;
  return result.masked_fill(at::isfinite(x).logical_not_(),
                            std::numeric_limits<double>::quiet_NaN());
}

/// Returns a precomputed fake-quant result; backward passes the gradient through, masked by
/// `mask` (0 where the input was clamped) when `clip` is set.
struct StraightThrough : public torch::autograd::Function<StraightThrough> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& result,
                            const at::Tensor& mask, bool clip) {
    (void)x;
    ctx->saved_data["clip"] = clip;
    ctx->save_for_backward({mask});
    return result;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto& grad = grad_outputs[0];
    const bool clip = ctx->saved_data["clip"].toBool();
    auto passed = clip ? grad * ctx->get_saved_variables()[0] : grad;
    return {passed, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

void check_float_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(x.defined(), op, ": input tensor is undefined");
  TORCH_CHECK_VALUE(at::isFloatingType(x.scalar_type()) && !at::isComplexType(x.scalar_type()),
                    op, ": expected a floating-point tensor (float32, float16 or bfloat16), got ",
                    x.scalar_type());
}

/// Shape [1, .., C, .., 1] that broadcasts a per-channel parameter along `axis`.
at::Tensor channel_view(const at::Tensor& param, int64_t axis, int64_t rank) {
  std::vector<int64_t> shape(rank, 1);
  shape[axis] = param.numel();
  return param.reshape(shape);
}

/// Applies `fn(x_view, scale_view, zp_view)` where the views make per-tensor, per-channel and
/// per-block parameters broadcast against x; per-block results are mapped back to x's shape.
template <typename Fn>
at::Tensor with_broadcast_params(const at::Tensor& x, const QParams& qp, const char* op, Fn fn) {
  check_qparams_match(qp, x, op);
  const auto& spec = qp.spec;
  switch (spec.granularity()) {
    case Granularity::kPerTensor:
      return fn(x, qp.scale.reshape({}), qp.zero_point.reshape({}));
    case Granularity::kPerChannel: {
      const int64_t axis = canonical_axis(spec.axis(), x.dim(), op);
      return fn(x, channel_view(qp.scale, axis, x.dim()),
                channel_view(qp.zero_point, axis, x.dim()));
    }
    case Granularity::kPerBlock: {
      auto view = detail::block_rows(x, spec, op);
      auto rows = fn(view.rows, detail::block_param_rows(qp.scale, view.axis).unsqueeze(1),
                     detail::block_param_rows(qp.zero_point, view.axis).unsqueeze(1));
      return detail::from_block_rows(rows, view);
    }
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled Granularity");
}

at::Tensor fp8_codes(const at::Tensor& x, const at::Tensor& scale) {
  const double limit = static_cast<double>(quant_max(QuantSpec(QuantDtype::kFp8E4M3)));
  return (x.to(at::kFloat) * scale.reciprocal()).clamp(-limit, limit).to(at::kFloat8_e4m3fn);
}

/// Fake quantization without autograd: the result and the mask of unclamped elements.
std::tuple<at::Tensor, at::Tensor> fake_quantize_with_mask(const at::Tensor& x,
                                                           const QParams& qp) {
  const auto& spec = qp.spec;
  const int64_t qmin = quant_min(spec);
  const int64_t qmax = quant_max(spec);
  if (spec.dtype() == QuantDtype::kFp8E4M3) {
    at::Tensor mask;
    auto out = with_broadcast_params(x, qp, "fake_quantize", [&](auto xs, auto s, auto) {
      auto scaled = xs.to(at::kFloat) * s.reciprocal();
      mask = scaled.abs() <= static_cast<double>(qmax);
      return (fp8_codes(xs, s).to(at::kFloat) * s).to(xs.scalar_type());
    });
    if (spec.granularity() == Granularity::kPerBlock) {
      mask = detail::from_block_rows(mask, detail::block_rows(x, spec, "fake_quantize"));
    }
    return {out, mask};
  }
  auto zp = qp.zero_point.to(at::kInt);
  switch (spec.granularity()) {
    case Granularity::kPerTensor: {
      check_qparams_match(qp, x, "fake_quantize");
      auto enabled = at::ones({1}, x.options().dtype(at::kLong));
      return at::_fake_quantize_per_tensor_affine_cachemask_tensor_qparams(
          x, qp.scale.reshape({1}).to(at::kFloat), zp.reshape({1}), enabled, qmin, qmax);
    }
    case Granularity::kPerChannel: {
      check_qparams_match(qp, x, "fake_quantize");
      const int64_t axis = canonical_axis(spec.axis(), x.dim(), "fake_quantize");
      return at::fake_quantize_per_channel_affine_cachemask(x, qp.scale.to(at::kFloat), zp, axis,
                                                            qmin, qmax);
    }
    case Granularity::kPerBlock: {
      check_qparams_match(qp, x, "fake_quantize");
      auto view = detail::block_rows(x, spec, "fake_quantize");
      auto [out, mask] = at::fake_quantize_per_channel_affine_cachemask(
          view.rows.contiguous(), detail::block_param_rows(qp.scale, view.axis).to(at::kFloat),
          detail::block_param_rows(zp, view.axis), 0, qmin, qmax);
      return {detail::from_block_rows(out, view), detail::from_block_rows(mask, view)};
    }
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled Granularity");
}

}  // namespace

at::Tensor quantize(const at::Tensor& x, const QParams& qparams) {
  check_float_input(x, "quantize");
  const auto& spec = qparams.spec;
  if (spec.dtype() == QuantDtype::kFp8E4M3) {
    return with_broadcast_params(x, qparams, "quantize",
                                 [](auto xs, auto s, auto) { return fp8_codes(xs, s); });
  }
  const int64_t qmin = quant_min(spec);
  const int64_t qmax = quant_max(spec);
  return with_broadcast_params(x, qparams, "quantize", [&](auto xs, auto s, auto zp) {
    auto codes = at::round(xs.to(at::kFloat) * s.to(at::kFloat).reciprocal()) + zp;
    return codes.clamp(qmin, qmax).to(storage_type(spec.dtype()));
  });
}

at::Tensor dequantize(const at::Tensor& q, const QParams& qparams, c10::ScalarType out_dtype) {
  TORCH_CHECK_VALUE(q.defined(), "dequantize: input tensor is undefined");
  const auto expected = storage_type(qparams.spec.dtype());
  TORCH_CHECK_VALUE(q.scalar_type() == expected, "dequantize: expected codes of type ", expected,
                    " for ", to_string(qparams.spec.dtype()), ", got ", q.scalar_type());
  return with_broadcast_params(q, qparams, "dequantize", [&](auto qs, auto s, auto zp) {
    return ((qs.to(at::kFloat) - zp) * s).to(out_dtype);
  });
}

at::Tensor fake_quantize(const at::Tensor& x, const QParams& qparams, GradientMode mode) {
  check_float_input(x, "fake_quantize");
  check_qparams_match(qparams, x, "fake_quantize");
  at::Tensor result;
  at::Tensor mask;
  {
    at::NoGradGuard no_grad;
    std::tie(result, mask) = fake_quantize_with_mask(x.detach(), qparams);
    result = nan_where_nonfinite(result, x.detach());
  }
  if (!x.requires_grad()) return result;
  return StraightThrough::apply(x, result, mask, mode == GradientMode::kSteClipped);
}

at::Tensor fake_quantize_learnable(const at::Tensor& x, const at::Tensor& scale,
                                   const at::Tensor& zero_point, const QuantSpec& spec,
                                   double grad_factor) {
  check_float_input(x, "fake_quantize_learnable");
  TORCH_CHECK_NOT_IMPLEMENTED(is_integer(spec.dtype()),
                              "fake_quantize_learnable supports integer formats, got ",
                              to_string(spec.dtype()));
  const int64_t qmin = quant_min(spec);
  const int64_t qmax = quant_max(spec);
  at::Tensor result;
  switch (spec.granularity()) {
    case Granularity::kPerTensor:
      TORCH_CHECK_VALUE(scale.numel() == 1 && zero_point.numel() == 1,
                        "fake_quantize_learnable: per-tensor expects one scale and zero point, "
                        "got ", scale.numel(), " and ", zero_point.numel());
      result = at::_fake_quantize_learnable_per_tensor_affine(x, scale.reshape({1}),
                                                              zero_point.reshape({1}), qmin, qmax,
                                                              grad_factor);
      break;
    case Granularity::kPerChannel: {
      const int64_t axis = canonical_axis(spec.axis(), x.dim(), "fake_quantize_learnable");
      TORCH_CHECK_VALUE(scale.numel() == x.size(axis) && zero_point.numel() == x.size(axis),
                        "fake_quantize_learnable: per-channel along axis ", axis, " expects ",
                        x.size(axis), " scales and zero points, got ", scale.numel(), " and ",
                        zero_point.numel());
      result = at::_fake_quantize_learnable_per_channel_affine(x, scale, zero_point, axis, qmin,
                                                               qmax, grad_factor);
      break;
    }
    case Granularity::kPerBlock:
      TORCH_CHECK_NOT_IMPLEMENTED(false, "fake_quantize_learnable supports per-tensor and "
                                         "per-channel granularity, got per_block");
  }
  // As fake_quantize: LibTorch's kernels clamp NaN / Inf to a finite code; they come out NaN.
  return nan_where_nonfinite(result, x.detach());
}

double lsq_grad_factor(int64_t numel, const QuantSpec& spec) {
  TORCH_CHECK_VALUE(numel > 0, "lsq_grad_factor: expected numel > 0, got ", numel);
  return 1.0 / std::sqrt(static_cast<double>(numel) * static_cast<double>(quant_max(spec)));
}

}  // namespace tquant
