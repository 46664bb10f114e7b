// Reference twins of the CUDA INT8 kernels: plain ATen ops, any device. They perform the same
// float32 operations in the same order as the kernels (kernels/int8_kernels.cu), so integer
// outputs match bit for bit; the GEMM twins are exact through float64 (docs/backends.md, CUDA).

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cfloat>

#include "int8_checks.h"
#include "tquant/cuda_int8.h"

namespace tquant {

namespace {

using detail::DeviceRule;

// A float32 0-dim tensor on `like`'s device. Arithmetic with a device tensor (rather than a CPU
// scalar) keeps ATen from rewriting x / s as x * (1 / s) on CUDA.
at::Tensor scalar_on(float v, const at::Tensor& like) {
  return at::full({}, v, like.options().dtype(at::kFloat));
}

at::Tensor quantize_codes(const at::Tensor& xf, const at::Tensor& inv) {
  return at::round(xf * inv).clamp(-127, 127).to(at::kChar);
}

// y = ((float(acc) * x_scale) * w_scale) + bias, then GELU: float32, one rounding per step.
at::Tensor epilogue_float(const at::Tensor& acc, const at::Tensor& x_scale,
                          const at::Tensor& w_scale, const std::optional<at::Tensor>& bias,
                          bool gelu) {
  const int64_t M = acc.size(0);
  auto xs = x_scale.to(acc.device()).reshape({x_scale.numel() == 1 ? 1 : M, 1});
  auto y = acc.to(at::kFloat) * xs;
  y = y * w_scale.unsqueeze(0);
  if (bias.has_value() && bias->defined()) y = y + bias->to(at::kFloat).unsqueeze(0);
  if (gelu) y = at::gelu(y);
  return y;
}

}  // namespace

at::Tensor int8_gemm_cuda_ref(const at::Tensor& x_q, const at::Tensor& w_q) {
  detail::check_int8_gemm_args(x_q, w_q, "int8_gemm_cuda_ref", DeviceRule::kAny);
  // Products are at most 2^14 and K <= kInt8GemmMaxK, so every partial sum is an integer below
  // 2^31 < 2^53: float64 is exact in any summation order.
  return at::matmul(x_q.to(at::kDouble), w_q.to(at::kDouble).t()).to(at::kInt);
}

at::Tensor int8_bmm_cuda_ref(const at::Tensor& a_q, const at::Tensor& b_q) {
  detail::check_int8_bmm_args(a_q, b_q, "int8_bmm_cuda_ref", DeviceRule::kAny);
  return at::bmm(a_q.to(at::kDouble), b_q.to(at::kDouble).transpose(1, 2)).to(at::kInt);
}

at::Tensor quantize_per_tensor_int8_cuda_ref(const at::Tensor& x, double scale) {
  constexpr const char* op = "quantize_per_tensor_int8_cuda_ref";
  detail::check_float_activation(x, op, DeviceRule::kAny);
  detail::check_positive_scale(scale, op, "scale");
  const float inv = 1.0f / static_cast<float>(scale);
  return quantize_codes(x.to(at::kFloat), scalar_on(inv, x));
}

std::pair<at::Tensor, at::Tensor> quantize_per_token_int8_cuda_ref(const at::Tensor& x) {
  constexpr const char* op = "quantize_per_token_int8_cuda_ref";
  detail::check_float_activation(x, op, DeviceRule::kAny);
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": expected x of shape [..., K], got a 0-dim tensor");
  const int64_t K = x.size(-1);
  auto x2 = x.to(at::kFloat).reshape({detail::leading_rows(x), K});
  if (K == 0) {
    return {at::empty(x.sizes(), x.options().dtype(at::kChar)),
            at::full({x2.size(0)}, FLT_EPSILON, x2.options())};
  }
  // at::amax and clamp_min propagate NaN: a row with a NaN gets scale NaN (so does the kernel).
  auto amax = x2.abs().amax({1});
  auto scale = (amax / scalar_on(127.0f, x)).clamp_min(FLT_EPSILON);
  auto inv = at::reciprocal(scale);
  auto q = quantize_codes(x2, inv.unsqueeze(1));
  return {q.view(x.sizes()), scale};
}

at::Tensor dequantize_int32_cuda_ref(const at::Tensor& acc, const at::Tensor& x_scale,
                                     const at::Tensor& w_scale,
                                     const std::optional<at::Tensor>& bias, bool gelu,
                                     at::ScalarType out_dtype) {
  constexpr const char* op = "dequantize_int32_cuda_ref";
  detail::check_epilogue_args(acc, x_scale, w_scale, bias, op, DeviceRule::kAny);
  detail::check_out_dtype(out_dtype, op);
  return epilogue_float(acc, x_scale, w_scale, bias, gelu).to(out_dtype);
}

at::Tensor requantize_int32_cuda_ref(const at::Tensor& acc, const at::Tensor& x_scale,
                                     const at::Tensor& w_scale,
                                     const std::optional<at::Tensor>& bias, double out_scale,
                                     bool gelu) {
  constexpr const char* op = "requantize_int32_cuda_ref";
  detail::check_epilogue_args(acc, x_scale, w_scale, bias, op, DeviceRule::kAny);
  detail::check_positive_scale(out_scale, op, "out_scale");
  const float inv = 1.0f / static_cast<float>(out_scale);
  return quantize_codes(epilogue_float(acc, x_scale, w_scale, bias, gelu), scalar_on(inv, acc));
}

at::Tensor int8_linear_cuda_ref(const at::Tensor& x, std::optional<double> input_scale,
                                const at::Tensor& w_q, const at::Tensor& w_scale,
                                const std::optional<at::Tensor>& bias, bool gelu) {
  constexpr const char* op = "int8_linear_cuda_ref";
  detail::check_linear_args(x, input_scale, w_q, w_scale, bias, op, DeviceRule::kAny);
  const int64_t K = w_q.size(1);
  const int64_t N = w_q.size(0);
  auto out_shape = x.sizes().vec();
  out_shape.back() = N;
  auto x2 = x.reshape({detail::leading_rows(x), K});
  at::Tensor q;
  at::Tensor xs;
  if (input_scale.has_value()) {
    q = quantize_per_tensor_int8_cuda_ref(x2, *input_scale);
    xs = at::full({1}, static_cast<float>(*input_scale), x.options().dtype(at::kFloat));
  } else {
    std::tie(q, xs) = quantize_per_token_int8_cuda_ref(x2);
  }
  auto acc = int8_gemm_cuda_ref(q, w_q);
  return dequantize_int32_cuda_ref(acc, xs, w_scale, bias, gelu, x.scalar_type())
      .view(out_shape);
}

}  // namespace tquant
