#include "tquant/int8_attention.h"
#include "tquant/gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include "attention_softmax.h"
#include "int8_vnni_gemm.h"

namespace tquant {

namespace {

using detail::VnniLayout;

constexpr float kQMax = 127.0f;
// Query rows per block: bounds the scores buffer to kQueryBlock x Lk int32 per task.
constexpr int64_t kQueryBlock = 64;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

float reciprocal_f32(double scale) { return 1.0f / static_cast<float>(scale); }

void check_scale(double scale, const char* operand) {
  detail::check_int8_scale(scale, "int8 attention", operand);
}

// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized once inlined (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// exp(x) for x <= 0 (softmax after subtracting the row maximum): x = n ln2 + r, |r| <= ln2 / 2,
// e^r by Cephes' degree-6 polynomial for expf, times 2^n by vscalefps. Relative error ~2 ulp;
// x < -87.3 gives ~0 (as expf, to within a denormal).
TQUANT_AVX512_VNNI inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

// One row of the softmax: scores[j] = acc[j] * alpha + mask[j] (mask may be null), probs =
// softmax(scores), out[j] = code(probs[j]) in [0, 127] as bytes. `row` is float scratch of n.
// The rule of attention_softmax.h: every score -inf gives codes 0 (output 0); returns false
// when the row is NaN in float (a NaN or +inf score).
TQUANT_AVX512_VNNI bool softmax_codes_row(const int32_t* acc, const float* mask, int64_t n,
                                     float alpha, float inv_probs, float* row, uint8_t* out) {
  const __m512 valpha = _mm512_set1_ps(alpha);
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __mmask16 nan = 0;
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = detail::tail_mask16(n - j);
    __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, acc + j)), valpha);
    if (mask != nullptr) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, mask + j));
    nan |= _mm512_mask_cmp_ps_mask(m, s, s, _CMP_UNORD_Q);
    _mm512_mask_storeu_ps(row + j, m, s);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, s);
  }
  const float max = _mm512_reduce_max_ps(vmax);
  if (nan != 0 || max == std::numeric_limits<float>::infinity()) return false;
  if (max == -std::numeric_limits<float>::infinity()) {
    std::memset(out, 0, static_cast<size_t>(n));
    return true;
  }
  const __m512 vshift = _mm512_set1_ps(max);
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = detail::tail_mask16(n - j);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + j), vshift));
    _mm512_mask_storeu_ps(row + j, m, e);
    vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
  }
  // probs = e * (1 / sum) as at::softmax, then the code of probs.
  const __m512 vnorm = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
  const __m512 vinv = _mm512_set1_ps(inv_probs);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = detail::tail_mask16(n - j);
    const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + j), vnorm);
    const __m512 s = _mm512_min_ps(_mm512_mul_ps(p, vinv), _mm512_set1_ps(kQMax));
    const __m512i r = _mm512_cvt_roundps_epi32(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm512_mask_cvtepi32_storeu_epi8(out + j, m, r);
  }
  return true;
}

#pragma GCC diagnostic pop

// Float view of an optional attention mask, expanded to [B, H, Lq, Lk] with unit stride along
// Lk: additive float as is, bool as 0 (attend) / -inf.
at::Tensor additive_mask(const at::Tensor& mask, at::IntArrayRef shape) {
  if (!mask.defined()) return mask;
  at::Tensor m = mask;
  if (m.scalar_type() == at::kBool) {
    m = at::zeros(m.sizes(), m.options().dtype(at::kFloat))
            .masked_fill_(m.logical_not(), -std::numeric_limits<float>::infinity());
  }
  TORCH_CHECK_VALUE(at::isFloatingType(m.scalar_type()),
                    "int8 attention: expected a float or bool attn_mask, got ", m.scalar_type());
  m = m.to(at::kFloat).expand(shape);
  return m.stride(-1) == 1 ? m : m.contiguous();
}

struct AttentionShape {
  int64_t batch, heads, lq, lk, d, dv;
};

AttentionShape check_attention_inputs(const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, bool cpu_only) {
  TORCH_CHECK_VALUE(q.defined() && k.defined() && v.defined() && q.dim() == 4 && k.dim() == 4 &&
                        v.dim() == 4,
                    "int8 attention: expected q, k, v of shape [B, H, L, D], got ",
                    q.defined() ? q.sizes() : at::IntArrayRef{}, ", ",
                    k.defined() ? k.sizes() : at::IntArrayRef{}, ", ",
                    v.defined() ? v.sizes() : at::IntArrayRef{});
  const AttentionShape s{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
  TORCH_CHECK_VALUE(s.d > 0, "int8 attention: expected D > 0 (the softmax scale is 1 / sqrt(D)), "
                    "got q ", q.sizes());
  TORCH_CHECK_VALUE(s.d <= kMaxInt8GemmK && s.lk <= kMaxInt8GemmK, "int8 attention: expected D "
                    "and Lk of at most ", kMaxInt8GemmK, " (int32 sums of 127 * 127 products), "
                    "got D = ", s.d, ", Lk = ", s.lk);
  TORCH_CHECK_VALUE(k.size(0) == s.batch && v.size(0) == s.batch && k.size(1) == s.heads &&
                        v.size(1) == s.heads && k.size(3) == s.d && v.size(2) == s.lk,
                    "int8 attention: expected q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv], "
                    "got ", q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  for (const auto* t : {&q, &k, &v}) {
    TORCH_CHECK_VALUE(at::isFloatingType(t->scalar_type()) && t->device() == q.device() &&
                          (!cpu_only || t->device().is_cpu()),
                      "int8 attention: expected float tensors on ", cpu_only ? "the CPU" : "one device",
                      ", got ", t->scalar_type(), " on ", t->device());
  }
  return s;
}

// Rows of a [B, H, L, D] float tensor with unit stride along D.
at::Tensor float_rows(const at::Tensor& x) {
  at::Tensor f = x.to(at::kFloat);
  return f.stride(-1) == 1 ? f : f.contiguous();
}

}  // namespace

bool int8_cpu_kernels_available() { return detail::cpu_has_avx512_vnni(); }

at::Tensor int8_attention_cpu(const at::Tensor& q_in, const at::Tensor& k_in,
                              const at::Tensor& v_in, const at::Tensor& attn_mask,
                              const AttentionScales& scales, double softmax_scale) {
  RECORD_FUNCTION("tquant::int8_attention_cpu", std::vector<c10::IValue>());
  const AttentionShape s = check_attention_inputs(q_in, k_in, v_in, /*cpu_only=*/true);
  check_scale(scales.query, "query");
  check_scale(scales.key, "key");
  check_scale(scales.probs, "probs");
  check_scale(scales.value, "value");
  TORCH_CHECK_VALUE(!attn_mask.defined() || attn_mask.device().is_cpu(),
                    "int8_attention_cpu: expected attn_mask on the CPU, got ", attn_mask.device());
  if (!int8_cpu_kernels_available() || s.d == 0 || s.lk == 0 || s.dv == 0 || s.lq == 0 ||
      s.batch * s.heads == 0) {
    // The same layout as the kernel's: a [B, H, Lq, Dv] view of contiguous [B, Lq, H, Dv].
    return int8_attention_ref(q_in, k_in, v_in, attn_mask, scales, softmax_scale)
        .transpose(1, 2)
        .contiguous()
        .transpose(1, 2);
  }
  const at::Tensor q = float_rows(q_in), k = float_rows(k_in), v = float_rows(v_in);
  const at::Tensor mask = additive_mask(attn_mask, {s.batch, s.heads, s.lq, s.lk});
  const double sm = softmax_scale > 0 ? softmax_scale : 1.0 / std::sqrt(static_cast<double>(s.d));
  const float alpha = static_cast<float>(scales.query * scales.key * sm);
  const float out_scale = static_cast<float>(scales.probs * scales.value);
  const float inv_q = reciprocal_f32(scales.query), inv_k = reciprocal_f32(scales.key);
  const float inv_p = reciprocal_f32(scales.probs), inv_v = reciprocal_f32(scales.value);

  at::Tensor out = at::empty({s.batch, s.lq, s.heads, s.dv}, q.options());
  const VnniLayout k_layout = VnniLayout::for_shape(s.d, s.lk);   // B = k^T: [D, Lk]
  const VnniLayout v_layout = VnniLayout::for_shape(s.lk, s.dv);  // B = v:   [Lk, Dv]
  const int64_t lda_q = k_layout.k4 * 4, lda_p = v_layout.k4 * 4;
  const int64_t ld_scores = k_layout.n16 * 16, ld_ctx = v_layout.n16 * 16;

  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const float* mp = mask.defined() ? mask.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();

  at::parallel_for(0, s.batch * s.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> qa(static_cast<size_t>(kQueryBlock * lda_q));
    std::vector<int8_t> kb(static_cast<size_t>(k_layout.bytes()));
    std::vector<int32_t> comp(static_cast<size_t>(ld_scores), 0);
    std::vector<int8_t> vb(static_cast<size_t>(v_layout.bytes()));
    std::vector<int32_t> scores(static_cast<size_t>(kQueryBlock * ld_scores));
    std::vector<float> row(static_cast<size_t>(ld_scores));
    std::vector<uint8_t> pa(static_cast<size_t>(kQueryBlock * lda_p), 0);
    std::vector<int32_t> ctx(static_cast<size_t>(kQueryBlock * ld_ctx));
    std::vector<int8_t> scratch;
    std::vector<char> row_ok(static_cast<size_t>(kQueryBlock));
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / s.heads, h = bh % s.heads;
      const float* qs = qp + b * q.stride(0) + h * q.stride(1);
      const float* ks = kp + b * k.stride(0) + h * k.stride(1);
      const float* vs = vp + b * v.stride(0) + h * v.stride(1);
      const bool k_finite =
          detail::pack_b_avx512(ks, s.lk, s.d, k.stride(2), inv_k, /*rows_are_k=*/false,
                                k_layout, kb.data(), comp.data(), nullptr, scratch);
      const bool v_finite =
          detail::pack_b_avx512(vs, s.lk, s.dv, v.stride(2), inv_v, /*rows_are_k=*/true,
                                v_layout, vb.data(), nullptr, nullptr, scratch);
      const bool kv_finite = k_finite && v_finite;
      for (int64_t i0 = 0; i0 < s.lq; i0 += kQueryBlock) {
        const int64_t rows = std::min(kQueryBlock, s.lq - i0);
        for (int64_t i = 0; i < rows; ++i) {
          if (i0 + i + detail::kPrefetchRows < s.lq) {
            detail::prefetch_row(qs + (i0 + i + detail::kPrefetchRows) * q.stride(2), s.d);
          }
          // Signed codes + 128 as uint8; comp removes 128 * column sums of k's codes.
          row_ok[i] = detail::quantize_row_avx512(qs + (i0 + i) * q.stride(2), s.d, inv_q, 128,
                                   qa.data() + i * lda_q);
        }
        detail::gemm_u8s8s32_vnni(qa.data(), lda_q, kb.data(), k_layout, comp.data(),
                                  scores.data(), ld_scores, rows, s.lk);
        for (int64_t i = 0; i < rows; ++i) {
          const float* mrow = mp == nullptr ? nullptr
                                            : mp + b * mask.stride(0) + h * mask.stride(1) +
                                                  (i0 + i) * mask.stride(2);
          row_ok[i] = row_ok[i] && softmax_codes_row(scores.data() + i * ld_scores, mrow, s.lk,
                                                     alpha, inv_p, row.data(),
                                                     pa.data() + i * lda_p);
        }
        detail::gemm_u8s8s32_vnni(pa.data(), lda_p, vb.data(), v_layout, nullptr, ctx.data(),
                                  ld_ctx, rows, s.dv);
        for (int64_t i = 0; i < rows; ++i) {
          float* orow = op + ((b * s.lq + i0 + i) * s.heads + h) * s.dv;
          if (kv_finite && row_ok[i]) {
            detail::dequantize_row_avx512(ctx.data() + i * ld_ctx, s.dv, out_scale, orow);
          } else {
            std::fill(orow, orow + s.dv, kNaN);
          }
        }
      }
    }
  });
  return out.permute({0, 2, 1, 3}).to(q_in.scalar_type());
}

at::Tensor int8_attention_ref(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& attn_mask, const AttentionScales& scales,
                              double softmax_scale) {
  const AttentionShape s = check_attention_inputs(q, k, v, /*cpu_only=*/false);
  const auto codes = detail::int8_codes_or_nan_ref;
  const double sm = softmax_scale > 0 ? softmax_scale : 1.0 / std::sqrt(static_cast<double>(s.d));
  const float alpha = static_cast<float>(scales.query * scales.key * sm);
  const at::ScalarType qk_dtype = detail::exact_codes_dtype(s.d);
  at::Tensor scores = at::matmul(codes(q, scales.query, qk_dtype),
                                 codes(k, scales.key, qk_dtype).transpose(-2, -1))
                          .to(at::kFloat)
                          .mul_(alpha);
  const at::Tensor mask = additive_mask(attn_mask, {s.batch, s.heads, s.lq, s.lk});
  if (mask.defined()) scores.add_(mask);
  const at::Tensor probs = detail::attention_softmax(scores);
  const at::ScalarType pv_dtype = detail::exact_codes_dtype(s.lk);
  const at::Tensor context =
      at::matmul(codes(probs, scales.probs, pv_dtype), codes(v, scales.value, pv_dtype));
  const float out_scale = static_cast<float>(scales.probs * scales.value);
  return context.to(at::kFloat).mul_(out_scale).to(q.scalar_type());
}

}  // namespace tquant
