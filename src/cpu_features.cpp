#include "tquant/cpu_features.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

namespace tquant {

namespace {

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}

bool one_of(const std::string& value, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    if (value == name) return true;
  }
  return false;
}

// oneDNN's names below AVX2 and the AVX2 ones (docs: "CPU Dispatcher Control").
bool below_avx2(const std::string& name) { return one_of(name, {"SSE41", "AVX"}); }
bool avx2_level(const std::string& name) { return one_of(name, {"AVX2", "AVX2_VNNI", "AVX2_VNNI_2"}); }

std::string cpu_model_name() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(colon + 1);
        name.erase(0, name.find_first_not_of(' '));
        return name;
      }
    }
  }
  return "unknown";
}

#if defined(__x86_64__) || defined(__i386__)
CpuIsa detect() {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx512 && __builtin_cpu_supports("avx512vnni")) return CpuIsa::kAvx512CoreVnni;
  if (avx512) return CpuIsa::kAvx512Core;
  if (avx2) return CpuIsa::kAvx2;
  return CpuIsa::kBaseline;
}
#else
CpuIsa detect() { return CpuIsa::kBaseline; }
#endif

// The cap the environment sets: {source, value}; TQUANT_MAX_CPU_ISA first, then oneDNN's.
std::pair<std::string, std::string> cap_from_environment() {
  for (const char* variable : {"TQUANT_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"}) {
    const char* value = std::getenv(variable);
    if (value != nullptr && *value != '\0') return {variable, value};
  }
  return {};
}

std::string onednn_cap_from_environment() {
  for (const char* variable : {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"}) {
    const char* value = std::getenv(variable);
    if (value != nullptr && *value != '\0') return upper(value);
  }
  return "";
}

// Whether oneDNN, capped at `cap` ("" = no cap), may run a VNNI or AMX int8 instruction on a
// CPU with these features. Conservative where oneDNN's level order is not plain (AVX2_VNNI is
// not below AVX512_CORE): a "no" only costs speed, tquant's own exact kernel runs instead.
bool onednn_may_use_exact_int8(const std::string& cap, bool avx512_vnni, bool avx_vnni, bool amx) {
  if (cap.empty() || one_of(cap, {"ALL", "DEFAULT"})) return avx512_vnni || avx_vnni || amx;
  if (below_avx2(cap) || cap == "AVX2" || cap == "AVX512_CORE") return false;
  if (one_of(cap, {"AVX2_VNNI", "AVX2_VNNI_2"})) return avx_vnni;
  return avx512_vnni;  // AVX512_CORE_VNNI and every level above it
}

bool onednn_may_use_amx(const std::string& cap, bool amx) {
  return amx && (cap.empty() || one_of(cap, {"ALL", "DEFAULT", "AVX512_CORE_AMX",
                                             "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX",
                                             "AVX10_1_512_AMX_FP16", "AVX10_2_512_AMX_2"}));
}

}  // namespace

std::string to_string(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kBaseline: return "baseline";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kAvx512Core: return "avx512_core";
    case CpuIsa::kAvx512CoreVnni: return "avx512_core_vnni";
  }
  return "unknown";
}

CpuIsa parse_cpu_isa(const std::string& name) {
  const std::string n = upper(name);
  if (below_avx2(n) || n == "BASELINE") return CpuIsa::kBaseline;
  if (avx2_level(n)) return CpuIsa::kAvx2;
  if (n == "AVX512_CORE") return CpuIsa::kAvx512Core;
  if (one_of(n, {"AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512",
                 "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX",
                 "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL",
                 "DEFAULT"})) {
    return CpuIsa::kAvx512CoreVnni;
  }
  TORCH_CHECK_VALUE(false, "tquant: unknown CPU instruction-set level '", name,
                    "' (TQUANT_MAX_CPU_ISA / ONEDNN_MAX_CPU_ISA); expected one of SSE41, AVX, "
                    "AVX2, AVX2_VNNI, AVX512_CORE, AVX512_CORE_VNNI, AVX512_CORE_BF16, "
                    "AVX512_CORE_FP16, AVX512_CORE_AMX, ALL");
}

std::string CpuFeatures::to_string() const {
  std::ostringstream out;
  out << "cpu: " << cpu << "\n"
      << "detected: " << tquant::to_string(detected)
      << (has_avx_vnni ? " +avx_vnni" : "") << (has_amx_int8 ? " +amx_int8" : "") << "\n"
      << "tquant kernels: " << tquant::to_string(kernels)
      << (cap.empty() ? " (no cap)" : " (capped by " + cap + ")") << "\n"
      << "oneDNN int8: " << (onednn_int8_exact ? "exact (VNNI / AMX)" : "saturating (no VNNI)")
      << (onednn_amx ? ", AMX" : "")
      << (onednn_cap.empty() ? "" : " under ONEDNN_MAX_CPU_ISA=" + onednn_cap);
  return out.str();
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = [] {
    CpuFeatures f;
    f.cpu = cpu_model_name();
    f.detected = detect();
#if defined(__x86_64__) || defined(__i386__)
    f.has_avx512_vnni = f.detected == CpuIsa::kAvx512CoreVnni;
    f.has_avx_vnni = __builtin_cpu_supports("avxvnni");
    f.has_amx_int8 = __builtin_cpu_supports("amx-int8");
#endif
    f.kernels = f.detected;
    const auto [source, value] = cap_from_environment();
    if (!source.empty()) {
      f.cap = source + "=" + value;
      f.kernels = std::min(f.detected, parse_cpu_isa(value));
    }
    f.onednn_cap = onednn_cap_from_environment();
    f.onednn_int8_exact =
        onednn_may_use_exact_int8(f.onednn_cap, f.has_avx512_vnni, f.has_avx_vnni, f.has_amx_int8);
    f.onednn_amx = onednn_may_use_amx(f.onednn_cap, f.has_amx_int8);
    return f;
  }();
  return features;
}

CpuIsa cpu_isa() { return cpu_features().kernels; }

}  // namespace tquant
