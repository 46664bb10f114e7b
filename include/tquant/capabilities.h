#pragma once

// What tquant can do on this machine, in one query. The single queries it gathers stay
// (cpu_features(), int8_cpu_kernels_available(), int8_gemm_path(), cuda_int8_built(),
// cuda_int8_available()); this is the one to print in a log or check at start-up.

#include <ostream>
#include <string>
#include <vector>

#include "tquant/cpu_features.h"
#include "tquant/gemm.h"

namespace tquant {

/// This process's view of the machine: CPU features and the kernels they select, and the
/// CUDA INT8 kernels. Every field equals the single query named next to it.
struct Capabilities {
  /// cpu_features(): the CPU, its ISA level, the cap (TQUANT_MAX_CPU_ISA / ONEDNN_MAX_CPU_ISA)
  /// and the level tquant's kernels use (cpu.kernels), oneDNN's int8 exactness.
  CpuFeatures cpu;
  /// int8_cpu_kernels_available(): the AVX-512 VNNI int8 kernels (attention, bmm, quantize
  /// passes) run; false: their exact `_ref` twins or the int16 route run instead.
  bool int8_cpu_kernels = false;
  /// int8_gemm_path(): the kernel of converted INT8 Linear layers on the CPU, and why.
  Int8GemmPath int8_gemm_path = Int8GemmPath::kInt16Madd;
  std::string int8_gemm_path_reason;
  /// int8_gemm_exact_paths(): every path prepare_int8_weight accepts here (default first).
  std::vector<Int8GemmPath> int8_gemm_paths;
  /// cuda_int8_built(): tquant was compiled with its CUDA kernels (cuBLASLt INT8 GEMM, fused
  /// quantize / dequantize).
  bool cuda_int8_built = false;
  /// cuda_int8_available(): built, and a CUDA device is visible.
  bool cuda_int8_available = false;

  /// One line per fact, e.g. "int8 gemm path: int16_madd (...)".
  std::string to_string() const;
};

/// Gathers the queries above. The CPU facts are read once per process (cpu_features()); the
/// CUDA device count is read at each call.
///
/// Example:
///   std::cerr << tquant::capabilities();   // log what this machine runs
///   if (!tquant::capabilities().cuda_int8_available) { /* serve on the CPU */ }
Capabilities capabilities();

std::ostream& operator<<(std::ostream& stream, const Capabilities& capabilities);

}  // namespace tquant
