#pragma once

// Internal: what tquant's AVX-512 loops share (src/gemm_cpu.cpp, src/functional.cpp,
// src/add_layer_norm.cpp, src/int8_vnni_gemm.*): the run-time choice and the tail mask.

#include <immintrin.h>

#include <cstdint>

#include "tquant/cpu_features.h"

/// The instruction set of the AVX-512F loops (callers check kernels_use_avx512() first).
#define TQUANT_AVX512F __attribute__((target("avx512f")))

namespace tquant::detail {

/// True when tquant's kernels may use AVX-512 here: the CPU has it and no cap forbids it
/// (tquant/cpu_features.h).
inline bool kernels_use_avx512() {
  static const bool use = cpu_isa() >= CpuIsa::kAvx512Core;
  return use;
}

/// Mask of the first min(left, 16) lanes of a 16-lane vector (the tail of a row).
TQUANT_AVX512F inline __mmask16 tail_mask16(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

}  // namespace tquant::detail
