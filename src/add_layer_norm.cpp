#include "tquant/add_layer_norm.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include "avx512_util.h"

namespace tquant {
namespace {

// GCC 12 warns that _mm512_reduce_add_ps's header code reads an uninitialized __Y (a false
// positive of its intrinsic headers; gemm_cpu.cpp silences it the same way).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// One row of H: s = x + r is stored in out (it stays in L1 for the next two passes), then the
// mean, the biased variance of s around it (two passes, as exact as Welford for these H), and
// out = (s - mean) * (rstd * w) + b.
TQUANT_AVX512F void add_layer_norm_row(const float* x, const float* r, const float* w,
                                       const float* b, float* out, int64_t h, float eps) {
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < h; j += 16) {
    const __mmask16 m = detail::tail_mask16(h - j);
    const __m512 s = _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + j), _mm512_maskz_loadu_ps(m, r + j));
    _mm512_mask_storeu_ps(out + j, m, s);
    sum = _mm512_add_ps(sum, s);
  }
  const float mean = _mm512_reduce_add_ps(sum) / static_cast<float>(h);
  const __m512 vmean = _mm512_set1_ps(mean);
  __m512 sq = _mm512_setzero_ps();
  for (int64_t j = 0; j < h; j += 16) {
    const __mmask16 m = detail::tail_mask16(h - j);
    const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, out + j), vmean);
    sq = _mm512_fmadd_ps(d, d, sq);
  }
  const float var = _mm512_reduce_add_ps(sq) / static_cast<float>(h);
  const __m512 rstd = _mm512_set1_ps(1.0f / std::sqrt(var + eps));
  for (int64_t j = 0; j < h; j += 16) {
    const __mmask16 m = detail::tail_mask16(h - j);
    const __m512 scale = w ? _mm512_mul_ps(rstd, _mm512_maskz_loadu_ps(m, w + j)) : rstd;
    const __m512 shift = b ? _mm512_maskz_loadu_ps(m, b + j) : _mm512_setzero_ps();
    const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, out + j), vmean);
    _mm512_mask_storeu_ps(out + j, m, _mm512_fmadd_ps(d, scale, shift));
  }
}

#pragma GCC diagnostic pop

void check_inputs(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
                  const at::Tensor& bias) {
  TORCH_CHECK_VALUE(x.defined() && residual.defined(),
                    "add_layer_norm: x and residual must be defined tensors");
  TORCH_CHECK_VALUE(x.dim() >= 1, "add_layer_norm: expected x of shape [..., H], got a 0-dim "
                    "tensor");
  TORCH_CHECK_VALUE(x.sizes() == residual.sizes(), "add_layer_norm: expected residual of the "
                    "shape of x ", x.sizes(), ", got ", residual.sizes());
  TORCH_CHECK_VALUE(x.scalar_type() == residual.scalar_type() && x.device() == residual.device(),
                    "add_layer_norm: expected residual as ", x.scalar_type(), " on ", x.device(),
                    " like x, got ", residual.scalar_type(), " on ", residual.device());
  const int64_t h = x.size(-1);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"weight", weight},
                                {"bias", bias}}) {
    if (!t.defined()) continue;
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == h, "add_layer_norm: expected ", name,
                      " of shape [", h, "] (the last dim of x), got ", t.sizes());
  }
}

bool fused_kernel_applies(const at::Tensor& x, const at::Tensor& residual,
                          const at::Tensor& weight, const at::Tensor& bias) {
  auto plain = [](const at::Tensor& t) {
    return !t.defined() ||
           (t.scalar_type() == at::kFloat && t.device().is_cpu() && t.is_contiguous());
  };
  // The kernel has no backward: anything autograd would record runs the reference.
  auto recorded = [](const at::Tensor& t) { return t.defined() && t.requires_grad(); };
  const bool needs_grad = at::GradMode::is_enabled() && (recorded(x) || recorded(residual) ||
                                                         recorded(weight) || recorded(bias));
  return detail::kernels_use_avx512() && x.numel() > 0 && plain(x) && plain(residual) && plain(weight) &&
         plain(bias) && !needs_grad;
}

}  // namespace

at::Tensor add_layer_norm(const at::Tensor& x, const at::Tensor& residual,
                          const at::Tensor& weight, const at::Tensor& bias, double eps) {
  RECORD_FUNCTION("tquant::add_layer_norm", std::vector<c10::IValue>());
  check_inputs(x, residual, weight, bias);
  const at::Tensor xc = x.contiguous();
  const at::Tensor rc = residual.contiguous();
  if (!fused_kernel_applies(xc, rc, weight, bias)) {
    return add_layer_norm_ref(x, residual, weight, bias, eps);
  }
  const int64_t h = x.size(-1);
  const int64_t rows = x.numel() / h;
  at::Tensor out = at::empty_like(xc);
  const float* xp = xc.const_data_ptr<float>();
  const float* rp = rc.const_data_ptr<float>();
  const float* wp = weight.defined() ? weight.const_data_ptr<float>() : nullptr;
  const float* bp = bias.defined() ? bias.const_data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const auto feps = static_cast<float>(eps);
  // About 64 KiB of input rows per task.
  const int64_t grain = std::max<int64_t>(1, 8192 / h);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      add_layer_norm_row(xp + i * h, rp + i * h, wp, bp, op + i * h, h, feps);
    }
  });
  return out;
}

at::Tensor add_layer_norm_ref(const at::Tensor& x, const at::Tensor& residual,
                              const at::Tensor& weight, const at::Tensor& bias, double eps) {
  check_inputs(x, residual, weight, bias);
  return at::layer_norm(x + residual, {x.size(-1)}, weight, bias, eps);
}

}  // namespace tquant
