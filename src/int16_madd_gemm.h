#pragma once

// Internal: tquant's exact int8 GEMM for CPUs without VNNI (AVX2, AVX-512 without VNNI, and a
// portable loop for the rest). Int8 codes are widened to int16 and multiplied with vpmaddwd:
// each 32-bit lane gets a[k] * b[k] + a[k+1] * b[k+1] exactly (|sum| <= 2 * 127 * 127, far from
// int32's range), then vpaddd accumulates. The u8 x s8 instruction these CPUs have (vpmaddubsw)
// saturates its int16 pair sums, which is why oneDNN's int8 kernels are not exact there
// (docs/backends.md, "Every CPU"). Per multiply-add it costs the same as vpmaddubsw + vpmaddwd
// on these CPUs (one vpmaddwd and one vpaddd per 16 / 8 pairs); the weight takes 2 bytes a code.
//
// Operands:
//   A: int16 [M, K], row stride lda (elements) >= 2 * k2, k2 = ceil(K / 2); codes past K are
//      multiplied by B's zero padding, but must be initialised.
//   B: int16 [K, N] packed by Int16PairLayout, zero-padded to 2 * k2 rows and 16 * n16 columns.
//   C: int32 [M, N], row stride ldc (elements):  C[m, n] = sum_k A[m, k] * B[k, n].

#include <cstdint>

#include "tquant/cpu_features.h"

namespace tquant::detail {

/// Element offset of (k, n) of B in the packed layout [n16][k2][16 columns][2 k]:
///   ((n / 16) * k2 + k / 2) * 32 + (n % 16) * 2 + k % 2.
/// One 16-column block at one k pair is 32 int16 = 64 bytes: one zmm, or two ymm.
struct Int16PairLayout {
  int64_t k2;   // ceil(K / 2)
  int64_t n16;  // ceil(N / 16)

  static Int16PairLayout for_shape(int64_t k, int64_t n) { return {(k + 1) / 2, (n + 15) / 16}; }
  int64_t elements() const { return n16 * k2 * 32; }
  int64_t offset(int64_t k, int64_t n) const {
    return ((n / 16) * k2 + k / 2) * 32 + (n % 16) * 2 + k % 2;
  }
};

/// Packs int8 weight codes W [N, K] (row-major, B = W^T) into `packed` (layout.elements()).
void pack_weight_int16_pairs(const int8_t* w, int64_t n, int64_t k, Int16PairLayout layout,
                             int16_t* packed);

/// C = A * B as described above, with the kernel of `isa` (AVX-512 BW, AVX2, or portable).
void gemm_s16s16s32(CpuIsa isa, const int16_t* a, int64_t lda, const int16_t* b_packed,
                    Int16PairLayout layout, int32_t* c, int64_t ldc, int64_t m, int64_t n);

/// Reference twin: plain loops over the packed B (exact, any CPU).
void gemm_s16s16s32_ref(const int16_t* a, int64_t lda, const int16_t* b_packed,
                        Int16PairLayout layout, int32_t* c, int64_t ldc, int64_t m, int64_t n);

/// out[i] = clamp(round((x[i] * mult[i]) * inv), -127, 127) for i < n (mult null: x[i] * inv;
/// float32 products, half-to-even, as tquant::quantize), and out[n] = 0 when n is odd (the
/// pair padding). Returns false when x holds a NaN or Inf (the codes are then meaningless).
bool quantize_row_int16(CpuIsa isa, const float* x, int64_t n, float inv, const float* mult,
                        int16_t* out);

/// max_i |x[i] * mult[i]| (mult null: max_i |x[i]|); NaN-free input assumed (a NaN row is
/// flagged by quantize_row_int16 and its output replaced).
float row_amax(CpuIsa isa, const float* x, int64_t n, const float* mult);

}  // namespace tquant::detail
