#pragma once

// Which x86-64 instruction sets tquant's CPU kernels use on this machine, and why.
//
// One place decides (docs/backends.md, "Every CPU"): the CPU's features, read once at run time,
// capped by the user's setting. Every converted module computes the same values on every level;
// only speed differs. No level uses an instruction that saturates where tquant promises exact
// integer sums (u8 x s8 pair products summed in int16, i.e. vpmaddubsw, are never used).
//
// The cap: TQUANT_MAX_CPU_ISA, with oneDNN's names (case does not matter):
//   SSE41 or AVX          no AVX2 kernels (portable C++ and ATen ops)
//   AVX2, AVX2_VNNI       AVX2 kernels
//   AVX512_CORE           AVX-512 (F, BW, VL, DQ) without VNNI
//   AVX512_CORE_VNNI, AVX512_CORE_BF16, AVX512_CORE_FP16, AVX512_CORE_AMX, ALL   no cap
// When TQUANT_MAX_CPU_ISA is not set, ONEDNN_MAX_CPU_ISA (or its older name DNNL_MAX_CPU_ISA)
// caps tquant too, so one variable makes both libraries behave as an older CPU would:
//   ONEDNN_MAX_CPU_ISA=AVX2 ./my_server        # oneDNN and tquant as on an AVX2-only CPU
// An unknown value is an error at the first call that needs the level.

#include <string>

namespace tquant {

/// Instruction-set levels, lowest first. A CPU is at the highest level whose features it has.
enum class CpuIsa {
  kBaseline,        ///< x86-64 without AVX2 (or a non-x86 CPU): portable code only
  kAvx2,            ///< AVX2 and FMA (Intel Haswell and later, AMD Zen 1 and later)
  kAvx512Core,      ///< AVX-512 F, BW, VL, DQ without VNNI (Intel Skylake-SP)
  kAvx512CoreVnni,  ///< plus AVX-512 VNNI (Intel Cascade Lake and later, AMD Zen 4 and later)
};

/// oneDNN-style name of a level ("avx2", "avx512_core", ...).
std::string to_string(CpuIsa isa);

/// Parses a level name as TQUANT_MAX_CPU_ISA takes it; throws c10::ValueError on an unknown one.
CpuIsa parse_cpu_isa(const std::string& name);

/// What this process runs on: the CPU, what tquant's kernels use, what oneDNN's int8 kernels do.
struct CpuFeatures {
  std::string cpu;             ///< the CPU's model name (/proc/cpuinfo), "unknown" if unreadable
  CpuIsa detected;             ///< the CPU's own level
  CpuIsa kernels;              ///< the level tquant's kernels use: detected, capped
  std::string cap;             ///< the cap's source and value ("TQUANT_MAX_CPU_ISA=avx2"), or ""
  bool has_avx512_vnni = false;
  bool has_avx_vnni = false;   ///< AVX2-VNNI (Intel Alder Lake and later, AMD Zen 5)
  bool has_amx_int8 = false;
  /// Whether oneDNN's int8 GEMMs (u8 x s8 -> s32) sum exactly here: only with a VNNI or AMX
  /// instruction that oneDNN's own cap (ONEDNN_MAX_CPU_ISA) leaves it. Without one, oneDNN
  /// multiplies with vpmaddubsw, whose int16 pair sums saturate (255 * 127 * 2 > 32767).
  bool onednn_int8_exact = false;
  /// Whether oneDNN may run AMX int8 tiles here (an AMX CPU, and no cap below AVX512_CORE_AMX).
  /// Its AMX kernel applies the uint8 activations' zero point in float32, which rounds sums
  /// above 2^24, so tquant passes signed activations where oneDNN picks AMX (src/gemm_cpu.cpp).
  bool onednn_amx = false;
  /// oneDNN's cap as set in the environment, or "" when none is.
  std::string onednn_cap;

  /// One line per fact, for logs and reports.
  std::string to_string() const;
};

/// The features of this machine and process (read once; the environment is read then too).
const CpuFeatures& cpu_features();

/// Shorthand for cpu_features().kernels.
CpuIsa cpu_isa();

}  // namespace tquant
