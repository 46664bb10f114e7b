#include "int8_vnni_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <ATen/ATen.h>

#include "nn/converted_weight.h"

namespace tquant::detail {

bool cpu_has_avx512_vnni() {
  static const bool use = cpu_isa() >= CpuIsa::kAvx512CoreVnni;
  return use;
}

namespace {

// Register tile: kRows rows of A by kBlocks 16-column blocks of B; kRows * kBlocks accumulators
// plus kBlocks B vectors and one broadcast stay within the 32 zmm registers.
constexpr int kMaxRows = 6;
constexpr int kMaxBlocks = 4;

// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized once inlined (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// One tile: rows [0, kRows) of a, column blocks [0, kBlocks) of b (b points at the tile's first
// block); `columns` is how many of the tile's kBlocks * 16 columns exist (the rest is padding).
template <int kRows, int kBlocks>
TQUANT_AVX512_VNNI void tile_vnni(
    const uint8_t* a, int64_t lda, const int8_t* b, int64_t k4, const int32_t* comp, int32_t* c,
    int64_t ldc, int64_t columns) {
  __m512i acc[kRows][kBlocks];
  for (int i = 0; i < kRows; ++i) {
    for (int j = 0; j < kBlocks; ++j) acc[i][j] = _mm512_setzero_si512();
  }
  for (int64_t kk = 0; kk < k4; ++kk) {
    __m512i bv[kBlocks];
    for (int j = 0; j < kBlocks; ++j) bv[j] = _mm512_loadu_si512(b + (j * k4 + kk) * 64);
    for (int i = 0; i < kRows; ++i) {
      int32_t four;  // A[i, 4kk .. 4kk + 3], broadcast to every 32-bit lane
      std::memcpy(&four, a + i * lda + kk * 4, sizeof(four));
      const __m512i av = _mm512_set1_epi32(four);
      for (int j = 0; j < kBlocks; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], av, bv[j]);
    }
  }
  for (int j = 0; j < kBlocks; ++j) {
    const int64_t left = columns - 16 * j;
    if (left <= 0) break;
    const __mmask16 mask =
        left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
    const __m512i cv =
        comp != nullptr ? _mm512_maskz_loadu_epi32(mask, comp + 16 * j) : _mm512_setzero_si512();
    for (int i = 0; i < kRows; ++i) {
      _mm512_mask_storeu_epi32(c + i * ldc + 16 * j, mask, _mm512_sub_epi32(acc[i][j], cv));
    }
  }
}

#pragma GCC diagnostic pop

using TileFn = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, const int32_t*,
                        int32_t*, int64_t, int64_t);

template <int kRows>
TileFn tile_for_blocks(int blocks) {
  switch (blocks) {
    case 1: return &tile_vnni<kRows, 1>;
    case 2: return &tile_vnni<kRows, 2>;
    case 3: return &tile_vnni<kRows, 3>;
    default: return &tile_vnni<kRows, 4>;
  }
}

TileFn tile_for(int rows, int blocks) {
  switch (rows) {
    case 1: return tile_for_blocks<1>(blocks);
    case 2: return tile_for_blocks<2>(blocks);
    case 3: return tile_for_blocks<3>(blocks);
    case 4: return tile_for_blocks<4>(blocks);
    case 5: return tile_for_blocks<5>(blocks);
    default: return tile_for_blocks<6>(blocks);
  }
}

}  // namespace

void gemm_u8s8s32_vnni(const uint8_t* a, int64_t lda, const int8_t* b_packed, VnniLayout layout,
                       const int32_t* comp, int32_t* c, int64_t ldc, int64_t m, int64_t n) {
  for (int64_t nb = 0; nb < layout.n16; nb += kMaxBlocks) {
    const int blocks = static_cast<int>(std::min<int64_t>(kMaxBlocks, layout.n16 - nb));
    const int64_t columns = std::min<int64_t>(blocks * 16, n - nb * 16);
    const int8_t* b = b_packed + nb * layout.k4 * 64;
    const int32_t* comp_tile = comp != nullptr ? comp + nb * 16 : nullptr;
    int64_t i = 0;
    const TileFn full = tile_for(kMaxRows, blocks);
    for (; i + kMaxRows <= m; i += kMaxRows) {
      full(a + i * lda, lda, b, layout.k4, comp_tile, c + i * ldc + nb * 16, ldc, columns);
    }
    if (i < m) {
      tile_for(static_cast<int>(m - i), blocks)(a + i * lda, lda, b, layout.k4, comp_tile,
                                                c + i * ldc + nb * 16, ldc, columns);
    }
  }
}

void gemm_u8s8s32_ref(const uint8_t* a, int64_t lda, const int8_t* b_packed, VnniLayout layout,
                      const int32_t* comp, int32_t* c, int64_t ldc, int64_t m, int64_t n) {
  const int64_t k_padded = layout.k4 * 4;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      int32_t sum = 0;
      for (int64_t k = 0; k < k_padded; ++k) {
        sum += static_cast<int32_t>(a[i * lda + k]) *
               static_cast<int32_t>(b_packed[layout.offset(k, j)]);
      }
      c[i * ldc + j] = sum - (comp != nullptr ? comp[j] : 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Operand preparation.

namespace {

constexpr float kQMax = 127.0f;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"


// Codes of 16 lanes as int32 (clamp then round: the bounds are integers, so the order does not
// matter); `bad` collects lanes that are NaN or +-Inf (x - x is not 0 there).
TQUANT_AVX512_VNNI inline __m512i codes16(const float* x, __mmask16 m, __m512 inv, __mmask16* bad) {
  const __m512 v = _mm512_maskz_loadu_ps(m, x);
  *bad |= _mm512_mask_cmp_ps_mask(m, _mm512_sub_ps(v, v), _mm512_setzero_ps(), _CMP_NEQ_UQ);
  __m512 s = _mm512_mul_ps(v, inv);
  s = _mm512_min_ps(_mm512_max_ps(s, _mm512_set1_ps(-kQMax)), _mm512_set1_ps(kQMax));
  return _mm512_cvt_roundps_epi32(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

}  // namespace

TQUANT_AVX512_VNNI bool quantize_row_avx512(const float* x, int64_t n, float inv, int32_t offset,
                                       uint8_t* out) {
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i voff = _mm512_set1_epi32(offset);
  __mmask16 bad = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    const __m512i r = _mm512_add_epi32(codes16(x + i, m, vinv, &bad), voff);
    _mm512_mask_cvtepi32_storeu_epi8(out + i, m, r);
  }
  return bad == 0;
}

TQUANT_AVX512_VNNI void dequantize_row_avx512(const int32_t* acc, int64_t n, float scale, float* out) {
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask16(n - j);
    const __m512 v = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, acc + j));
    _mm512_mask_storeu_ps(out + j, m, _mm512_mul_ps(v, vscale));
  }
}

#pragma GCC diagnostic pop

at::Tensor int8_codes_or_nan_ref(const at::Tensor& x, double scale, at::ScalarType dtype) {
  const at::Tensor f = x.to(at::kFloat);
  const at::Tensor codes = int8_codes_as_float(f, at::full({}, scale, f.options()));
  const at::Tensor nan = at::full({}, std::numeric_limits<float>::quiet_NaN(), f.options());
  return at::where(at::isfinite(f), codes, nan).to(dtype);
}

void check_int8_scale(double scale, const char* op, const char* what) {
  const float as_float = static_cast<float>(scale);
  TORCH_CHECK_VALUE(std::isfinite(scale) && scale > 0.0 && std::isfinite(1.0f / as_float), op,
                    ": expected a finite ", what, " scale > 0 whose float32 reciprocal is finite "
                    "(scale >= ", 1.0f / std::numeric_limits<float>::max(), "), got ", scale);
}

at::ScalarType exact_codes_dtype(int64_t k) {
  constexpr int64_t kExactFloat32Terms = (int64_t{1} << 24) / (127 * 127);  // 1040
  return k <= kExactFloat32Terms ? at::kFloat : at::kDouble;
}

void prefetch_row(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(x + i, 0, 3);
}

bool pack_b_avx512(const float* x, int64_t rows, int64_t n, int64_t stride, float inv,
                   bool rows_are_k, VnniLayout layout, int8_t* packed, int32_t* comp,
                   char* bad_columns, std::vector<int8_t>& scratch) {
  std::memset(packed, 0, static_cast<size_t>(layout.bytes()));
  const int64_t columns = rows_are_k ? n : rows;  // columns of B
  if (comp != nullptr) std::fill(comp, comp + columns, 0);
  if (bad_columns != nullptr) std::fill(bad_columns, bad_columns + columns, 0);
  scratch.resize(static_cast<size_t>(n));
  int8_t* codes = scratch.data();
  bool all_finite = true;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * stride;
    if (r + kPrefetchRows < rows) prefetch_row(xr + kPrefetchRows * stride, n);
    const bool finite = quantize_row_avx512(xr, n, inv, 0, reinterpret_cast<uint8_t*>(codes));
    all_finite = all_finite && finite;
    if (rows_are_k) {  // B[r, c] = codes[c]
      for (int64_t c = 0; c < n; ++c) packed[layout.offset(r, c)] = codes[c];
      if (comp != nullptr) {
        for (int64_t c = 0; c < n; ++c) comp[c] += 128 * codes[c];
      }
      if (!finite && bad_columns != nullptr) {
        for (int64_t c = 0; c < n; ++c) bad_columns[c] |= !std::isfinite(xr[c]);
      }
    } else {  // B[c, r] = codes[c]
      int32_t sum = 0;
      for (int64_t c = 0; c < n; ++c) {
        packed[layout.offset(c, r)] = codes[c];
        sum += codes[c];
      }
      if (comp != nullptr) comp[r] = 128 * sum;
      if (bad_columns != nullptr) bad_columns[r] = !finite;
    }
  }
  return all_finite;
}

}  // namespace tquant::detail
