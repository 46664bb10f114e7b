#include "int16_madd_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tquant::detail {

namespace {

constexpr float kQMax = 127.0f;

#define TQUANT_AVX2 __attribute__((target("avx2,fma")))
#define TQUANT_AVX512BW __attribute__((target("avx512f,avx512bw")))

// GCC 12's vector headers trip -Wmaybe-uninitialized once inlined (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// ---- micro-kernels ---------------------------------------------------------------------------
// One tile: kRows rows of A by kBlocks 16-column blocks of B (b points at the tile's first
// block); `columns` is how many of the tile's columns exist (the rest is padding, not stored).

int32_t load_pair(const int16_t* a) {  // A[i, 2kk], A[i, 2kk + 1] as one 32-bit lane
  int32_t pair;
  std::memcpy(&pair, a, sizeof(pair));
  return pair;
}

// AVX-512 BW: 16 columns per zmm; kRows * kBlocks accumulators + kBlocks B vectors + the
// broadcasts and madd results GCC schedules ahead within the 32 zmm registers (4 x 4: at 6 x 4
// GCC 12 spills accumulators to the stack, which halves the speed).
template <int kRows, int kBlocks>
TQUANT_AVX512BW void tile_avx512(const int16_t* a, int64_t lda, const int16_t* b, int64_t k2,
                                 int32_t* c, int64_t ldc, int64_t columns) {
  __m512i acc[kRows][kBlocks];
#pragma GCC unroll 8
  for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < kBlocks; ++j) acc[i][j] = _mm512_setzero_si512();
  }
  for (int64_t kk = 0; kk < k2; ++kk) {
    __m512i bv[kBlocks];
#pragma GCC unroll 8
    for (int j = 0; j < kBlocks; ++j) bv[j] = _mm512_loadu_si512(b + (j * k2 + kk) * 32);
#pragma GCC unroll 8
    for (int i = 0; i < kRows; ++i) {
      const __m512i av = _mm512_set1_epi32(load_pair(a + i * lda + kk * 2));
#pragma GCC unroll 8
      for (int j = 0; j < kBlocks; ++j) {
        acc[i][j] = _mm512_add_epi32(acc[i][j], _mm512_madd_epi16(av, bv[j]));
      }
    }
  }
  // Every block stores under its mask (none past `columns`), with no early exit: a loop that
  // may stop early makes GCC keep the accumulators in memory.
#pragma GCC unroll 8
  for (int j = 0; j < kBlocks; ++j) {
    const int64_t left = std::max<int64_t>(0, std::min<int64_t>(16, columns - 16 * j));
    const __mmask16 mask = static_cast<__mmask16>((1u << left) - 1u);
#pragma GCC unroll 8
    for (int i = 0; i < kRows; ++i) _mm512_mask_storeu_epi32(c + i * ldc + 16 * j, mask, acc[i][j]);
  }
}

// AVX2: one 16-column block as two ymm; 6 rows x 2 ymm accumulators + 2 B + one broadcast
// within the 16 ymm registers.
template <int kRows>
TQUANT_AVX2 void tile_avx2(const int16_t* a, int64_t lda, const int16_t* b, int64_t k2,
                           int32_t* c, int64_t ldc, int64_t columns) {
  __m256i acc[kRows][2];
#pragma GCC unroll 8
  for (int i = 0; i < kRows; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
  for (int64_t kk = 0; kk < k2; ++kk) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + kk * 32));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + kk * 32 + 16));
#pragma GCC unroll 8
    for (int i = 0; i < kRows; ++i) {
      const __m256i av = _mm256_set1_epi32(load_pair(a + i * lda + kk * 2));
      acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(av, b0));
      acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(av, b1));
    }
  }
  // Masked stores (no early exit, which makes GCC keep the accumulators in memory).
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(columns)), lane);
  const __m256i mask1 =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(columns) - 8), lane);
#pragma GCC unroll 8
  for (int i = 0; i < kRows; ++i) {
    _mm256_maskstore_epi32(c + i * ldc, mask0, acc[i][0]);
    _mm256_maskstore_epi32(c + i * ldc + 8, mask1, acc[i][1]);
  }
}

// Portable: the same sums, one 16-column block, plain loops (vectorized by the compiler for the
// baseline instruction set; int32 products are exact).
void tile_portable(const int16_t* a, int64_t lda, const int16_t* b, int64_t k2, int32_t* c,
                   int64_t ldc, int64_t rows, int64_t columns) {
  for (int64_t i = 0; i < rows; ++i) {
    int32_t acc[16] = {};
    for (int64_t kk = 0; kk < k2; ++kk) {
      const int32_t a0 = a[i * lda + 2 * kk], a1 = a[i * lda + 2 * kk + 1];
      const int16_t* bk = b + kk * 32;
      for (int j = 0; j < 16; ++j) acc[j] += a0 * bk[2 * j] + a1 * bk[2 * j + 1];
    }
    std::memcpy(c + i * ldc, acc, static_cast<size_t>(columns) * sizeof(int32_t));
  }
}

using Avx512Tile = void (*)(const int16_t*, int64_t, const int16_t*, int64_t, int32_t*, int64_t,
                            int64_t);

template <int kRows>
Avx512Tile avx512_tile_for_blocks(int blocks) {
  switch (blocks) {
    case 1: return &tile_avx512<kRows, 1>;
    case 2: return &tile_avx512<kRows, 2>;
    case 3: return &tile_avx512<kRows, 3>;
    default: return &tile_avx512<kRows, 4>;
  }
}

Avx512Tile avx512_tile_for(int64_t rows, int blocks) {
  switch (rows) {
    case 1: return avx512_tile_for_blocks<1>(blocks);
    case 2: return avx512_tile_for_blocks<2>(blocks);
    case 3: return avx512_tile_for_blocks<3>(blocks);
    default: return avx512_tile_for_blocks<4>(blocks);
  }
}

Avx512Tile avx2_tile_for(int64_t rows) {
  switch (rows) {
    case 1: return &tile_avx2<1>;
    case 2: return &tile_avx2<2>;
    case 3: return &tile_avx2<3>;
    case 4: return &tile_avx2<4>;
    case 5: return &tile_avx2<5>;
    default: return &tile_avx2<6>;
  }
}

constexpr int64_t kTileRows = 6;
constexpr int64_t kAvx512TileRows = 4;

void gemm_avx512(const int16_t* a, int64_t lda, const int16_t* b_packed, Int16PairLayout layout,
                 int32_t* c, int64_t ldc, int64_t m, int64_t n) {
  constexpr int kMaxBlocks = 4;
  for (int64_t nb = 0; nb < layout.n16; nb += kMaxBlocks) {
    const int blocks = static_cast<int>(std::min<int64_t>(kMaxBlocks, layout.n16 - nb));
    const int64_t columns = std::min<int64_t>(blocks * 16, n - nb * 16);
    const int16_t* b = b_packed + nb * layout.k2 * 32;
    for (int64_t i = 0; i < m; i += kAvx512TileRows) {
      const int64_t rows = std::min(kAvx512TileRows, m - i);
      avx512_tile_for(rows, blocks)(a + i * lda, lda, b, layout.k2, c + i * ldc + nb * 16, ldc,
                                    columns);
    }
  }
}

void gemm_avx2(const int16_t* a, int64_t lda, const int16_t* b_packed, Int16PairLayout layout,
               int32_t* c, int64_t ldc, int64_t m, int64_t n) {
  for (int64_t nb = 0; nb < layout.n16; ++nb) {
    const int64_t columns = std::min<int64_t>(16, n - nb * 16);
    const int16_t* b = b_packed + nb * layout.k2 * 32;
    for (int64_t i = 0; i < m; i += kTileRows) {
      const int64_t rows = std::min(kTileRows, m - i);
      avx2_tile_for(rows)(a + i * lda, lda, b, layout.k2, c + i * ldc + nb * 16, ldc, columns);
    }
  }
}

void gemm_portable(const int16_t* a, int64_t lda, const int16_t* b_packed,
                   Int16PairLayout layout, int32_t* c, int64_t ldc, int64_t m, int64_t n) {
  for (int64_t nb = 0; nb < layout.n16; ++nb) {
    const int64_t columns = std::min<int64_t>(16, n - nb * 16);
    tile_portable(a, lda, b_packed + nb * layout.k2 * 32, layout.k2, c + nb * 16, ldc, m,
                  columns);
  }
}

// ---- quantizers --------------------------------------------------------------------------------

// Codes of 8 floats as int32 lanes: clamp, then round half-to-even (vcvtps2dq under the default
// MXCSR rounding, as at::round); `bad` collects lanes that are NaN or +-Inf (x - x is not 0).
// `x` is checked, `v` (x, or x * mult) is quantized.
TQUANT_AVX2 inline __m256i codes8(__m256 x, __m256 v, __m256 inv, __m256* bad) {
  *bad = _mm256_or_ps(*bad, _mm256_cmp_ps(_mm256_sub_ps(x, x), _mm256_setzero_ps(), _CMP_NEQ_UQ));
  __m256 s = _mm256_mul_ps(v, inv);
  s = _mm256_min_ps(_mm256_max_ps(s, _mm256_set1_ps(-kQMax)), _mm256_set1_ps(kQMax));
  return _mm256_cvtps_epi32(s);
}

TQUANT_AVX2 bool quantize_row_int16_avx2(const float* x, int64_t n, float inv, const float* mult,
                                         int16_t* out) {
  const __m256 vinv = _mm256_set1_ps(inv);
  __m256 bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
    __m256 v0 = x0, v1 = x1;
    if (mult != nullptr) {
      v0 = _mm256_mul_ps(x0, _mm256_loadu_ps(mult + i));
      v1 = _mm256_mul_ps(x1, _mm256_loadu_ps(mult + i + 8));
    }
    // packs interleaves 128-bit halves: [v0 lo, v1 lo, v0 hi, v1 hi]; permute restores order.
    const __m256i packed =
        _mm256_packs_epi32(codes8(x0, v0, vinv, &bad), codes8(x1, v1, vinv, &bad));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        _mm256_permute4x64_epi64(packed, 0xD8));
  }
  bool finite = _mm256_movemask_ps(bad) == 0;
  for (; i < n; ++i) {
    const float v = mult != nullptr ? x[i] * mult[i] : x[i];
    finite = finite && std::isfinite(x[i]);
    const float s = std::min(std::max(v * inv, -kQMax), kQMax);
    out[i] = std::isfinite(x[i]) ? static_cast<int16_t>(std::nearbyint(s)) : 0;
  }
  return finite;
}

TQUANT_AVX2 float row_amax_avx2(const float* x, int64_t n, const float* mult) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    if (mult != nullptr) v = _mm256_mul_ps(v, _mm256_loadu_ps(mult + i));
    acc = _mm256_max_ps(acc, _mm256_andnot_ps(sign, v));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float amax = *std::max_element(lanes, lanes + 8);
  for (; i < n; ++i) amax = std::max(amax, std::abs(mult != nullptr ? x[i] * mult[i] : x[i]));
  return amax;
}

#pragma GCC diagnostic pop

bool quantize_row_int16_portable(const float* x, int64_t n, float inv, const float* mult,
                                 int16_t* out) {
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    const float v = mult != nullptr ? x[i] * mult[i] : x[i];
    const bool ok = std::isfinite(x[i]);
    finite = finite && ok;
    const float s = std::min(std::max(v * inv, -kQMax), kQMax);
    out[i] = ok ? static_cast<int16_t>(std::nearbyint(s)) : 0;
  }
  return finite;
}

}  // namespace

void pack_weight_int16_pairs(const int8_t* w, int64_t n, int64_t k, Int16PairLayout layout,
                             int16_t* packed) {
  std::fill(packed, packed + layout.elements(), int16_t{0});
  for (int64_t col = 0; col < n; ++col) {
    for (int64_t kk = 0; kk < k; ++kk) packed[layout.offset(kk, col)] = w[col * k + kk];
  }
}

void gemm_s16s16s32(CpuIsa isa, const int16_t* a, int64_t lda, const int16_t* b_packed,
                    Int16PairLayout layout, int32_t* c, int64_t ldc, int64_t m, int64_t n) {
  if (isa >= CpuIsa::kAvx512Core) {
    gemm_avx512(a, lda, b_packed, layout, c, ldc, m, n);
  } else if (isa >= CpuIsa::kAvx2) {
    gemm_avx2(a, lda, b_packed, layout, c, ldc, m, n);
  } else {
    gemm_portable(a, lda, b_packed, layout, c, ldc, m, n);
  }
}

void gemm_s16s16s32_ref(const int16_t* a, int64_t lda, const int16_t* b_packed,
                        Int16PairLayout layout, int32_t* c, int64_t ldc, int64_t m, int64_t n) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      int64_t sum = 0;
      for (int64_t k = 0; k < 2 * layout.k2; ++k) {
        sum += static_cast<int64_t>(a[i * lda + k]) * b_packed[layout.offset(k, j)];
      }
      c[i * ldc + j] = static_cast<int32_t>(sum);
    }
  }
}

bool quantize_row_int16(CpuIsa isa, const float* x, int64_t n, float inv, const float* mult,
                        int16_t* out) {
  if (n % 2 != 0) out[n] = 0;
  return isa >= CpuIsa::kAvx2 ? quantize_row_int16_avx2(x, n, inv, mult, out)
                              : quantize_row_int16_portable(x, n, inv, mult, out);
}

float row_amax(CpuIsa isa, const float* x, int64_t n, const float* mult) {
  if (isa >= CpuIsa::kAvx2) return row_amax_avx2(x, n, mult);
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::abs(mult != nullptr ? x[i] * mult[i] : x[i]));
  return amax;
}

}  // namespace tquant::detail
