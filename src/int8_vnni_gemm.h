#pragma once

// Internal: a small u8 x s8 -> s32 GEMM for the CPU, written for the many tiny products of
// attention (128 x 128 x 32 per head) where oneDNN's per-call overhead and OpenMP threading
// cost more than the arithmetic (docs/backends.md, "INT8 attention on CPU"). One call is
// single-threaded; callers parallelize over heads with at::parallel_for.
//
// Operands:
//   A: uint8 [M, K], row stride lda (bytes) >= 4 * k4, where k4 = ceil(K / 4). Bytes of a row
//      past K are read and multiplied by B's zero padding, so they may hold anything.
//   B: int8 [K, N] packed in the VNNI layout of vpdpbusd ("VnniLayout" below): 16 columns by
//      4 consecutive k per 64-byte vector, zero-padded to k4 * 4 rows and n16 * 16 columns.
//   C: int32 [M, N], row stride ldc:  C[m, n] = sum_k A[m, k] * B[k, n] - comp[n]
//      (comp may be null). A signed A is fed as A + 128 (uint8) with comp[n] = 128 * sum_k B[k, n].

#include <immintrin.h>

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "avx512_util.h"

/// The instruction sets of the kernels below (callers check cpu_has_avx512_vnni() first).
#define TQUANT_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

namespace tquant::detail {

/// Byte offset of element (k, n) of B in the packed layout [n16][k4][16 columns][4 k]:
///   ((n / 16) * k4 + k / 4) * 64 + (n % 16) * 4 + k % 4.
struct VnniLayout {
  int64_t k4;   // ceil(K / 4)
  int64_t n16;  // ceil(N / 16)

  static VnniLayout for_shape(int64_t k, int64_t n) { return {(k + 3) / 4, (n + 15) / 16}; }
  int64_t bytes() const { return n16 * k4 * 64; }
  int64_t offset(int64_t k, int64_t n) const {
    return ((n / 16) * k4 + k / 4) * 64 + (n % 16) * 4 + k % 4;
  }
};

/// True when tquant's kernels may use AVX-512 VNNI here (cpu_isa(), tquant/cpu_features.h).
bool cpu_has_avx512_vnni();

/// C = A * B - comp as described above, AVX-512 VNNI (vpdpbusd). Needs cpu_has_avx512_vnni().
void gemm_u8s8s32_vnni(const uint8_t* a, int64_t lda, const int8_t* b_packed, VnniLayout layout,
                       const int32_t* comp, int32_t* c, int64_t ldc, int64_t m, int64_t n);

/// Reference twin: the same sums with plain loops over the packed B (exact, any CPU).
void gemm_u8s8s32_ref(const uint8_t* a, int64_t lda, const int8_t* b_packed, VnniLayout layout,
                      const int32_t* comp, int32_t* c, int64_t ldc, int64_t m, int64_t n);

// ---- operand preparation (AVX-512; callers check cpu_has_avx512_vnni() first) --------------
// code(x) = clamp(round(x * inv), -127, 127), half-to-even, as tquant::quantize with
// inv = 1 / scale in float32.

/// out[i] = code(x[i]) + offset as bytes, i < n (offset 128 turns signed codes into the uint8 A
/// operand; 0 writes int8 codes, or uint8 codes of non-negative x). Returns false when x holds
/// a NaN or Inf (its byte is then meaningless).
bool quantize_row_avx512(const float* x, int64_t n, float inv, int32_t offset, uint8_t* out);

/// Writes the int8 codes of `rows` float rows (n values each, unit stride, row r at
/// x + r * stride) as the packed B operand: row r is row r of B (K index) when rows_are_k,
/// else column r of B (N index). Zeroes the padding. comp, when not null, receives
/// 128 * (column sums of B) for a +128-shifted A. bad_columns, when not null, gets 1 for each
/// column of B that holds a NaN or Inf, else 0. Returns false when any value was non-finite.
bool pack_b_avx512(const float* x, int64_t rows, int64_t n, int64_t stride, float inv,
                   bool rows_are_k, VnniLayout layout, int8_t* packed, int32_t* comp,
                   char* bad_columns, std::vector<int8_t>& scratch);

/// Asks the cache for the n floats at x (one prefetch per 64-byte line). The operands of
/// attention are rows of one head inside [B, L, heads * head_dim] tensors: short rows at a
/// large stride, which the hardware prefetchers miss, so the row loops prefetch a few rows ahead.
void prefetch_row(const float* x, int64_t n);
/// How many rows ahead the row loops prefetch.
constexpr int64_t kPrefetchRows = 6;

/// The reference twins' codes: detail::int8_codes_as_float of x in `dtype`, NaN where x is NaN
/// or Inf, as the kernels treat such elements.
at::Tensor int8_codes_or_nan_ref(const at::Tensor& x, double scale, at::ScalarType dtype);

/// Checks a per-tensor scale of int8 codes: finite, > 0, and with a finite float32 reciprocal
/// (the kernels quantize with x * (1 / scale) in float32; a scale below about 2.9e-39 would make
/// it infinite). `op` and `what` name the call and the operand in the error.
void check_int8_scale(double scale, const char* op, const char* what);

/// The float type in which a GEMM of int8 codes over k terms sums exactly in any order: float32
/// while k * 127 * 127 < 2^24 (k <= 1040), float64 beyond (exact up to kMaxInt8GemmK). The
/// reference twins compute in it, so they are exact and, in float32, as fast as a float GEMM.
at::ScalarType exact_codes_dtype(int64_t k);

/// out[j] = float(acc[j]) * scale, j < n.
void dequantize_row_avx512(const int32_t* acc, int64_t n, float scale, float* out);

}  // namespace tquant::detail
