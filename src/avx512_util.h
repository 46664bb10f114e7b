#pragma once

// Internal: what tquant's AVX-512 loops share (src/gemm_cpu.cpp, src/functional.cpp,
// src/add_layer_norm.cpp, src/int8_vnni_gemm.*): the runtime check and the tail mask.

#include <immintrin.h>

#include <cstdint>

/// The instruction set of the AVX-512F loops (callers check cpu_has_avx512f() first).
#define TQUANT_AVX512F __attribute__((target("avx512f")))

namespace tquant::detail {

/// True when this CPU runs AVX-512F code (checked once).
inline bool cpu_has_avx512f() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

/// Mask of the first min(left, 16) lanes of a 16-lane vector (the tail of a row).
TQUANT_AVX512F inline __mmask16 tail_mask16(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

}  // namespace tquant::detail
