#pragma once

// Helpers shared by the bench programs: interleaved timing and the machine's description.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace tquant::bench {

/// Median (and minimum) wall times in milliseconds of several functions, timed interleaved
/// (f0, f1, ... in each repetition) so that on a shared machine all of them see the same
/// background load; on a loaded machine the fastest repetition is the one least disturbed.
struct Times {
  std::vector<double> median;
  std::vector<double> min;
};

inline Times median_ms(const std::vector<std::function<void()>>& fs, int reps, int warmup) {
  for (int i = 0; i < warmup; ++i) {
    for (const auto& f : fs) f();
  }
  std::vector<std::vector<double>> t(fs.size());
  for (int i = 0; i < reps; ++i) {
    for (size_t j = 0; j < fs.size(); ++j) {
      const auto t0 = std::chrono::steady_clock::now();
      fs[j]();
      t[j].push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  Times r;
  for (auto& v : t) {
    std::sort(v.begin(), v.end());
    r.median.push_back(v[v.size() / 2]);
    r.min.push_back(v.front());
  }
  return r;
}

/// The options every bench takes: --reps N, --warmup N, --threads N (defaults as given);
/// anything else prints the usage and exits with status 2.
struct Args {
  int reps = 20;
  int warmup = 3;
  int threads = 2;
};

inline Args parse_args(int argc, char** argv, Args defaults) {
  Args a = defaults;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    int* target = s == "--reps" ? &a.reps : s == "--warmup" ? &a.warmup
                                          : s == "--threads" ? &a.threads : nullptr;
    if (target == nullptr || i + 1 >= argc) {
      std::fprintf(stderr, "usage: %s [--reps N] [--warmup N] [--threads N]\n", argv[0]);
      std::exit(2);
    }
    *target = std::atoi(argv[++i]);
  }
  return a;
}

/// The 1-minute load average (the machine may be shared with parallel builds).
inline std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  in >> one;
  return one.empty() ? "unknown" : one;
}

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

/// Prints the load average after the timings, with what it means for them.
inline void print_load_at_end() {
  std::printf(
      "\nload average (1 min) at end: %s (more than the thread count means the timings "
      "include time slices lost to other processes)\n",
      load_average().c_str());
}

/// Prints the CPU model, the flags the kernels care about and the load average.
inline void print_machine() {
  __builtin_cpu_init();
  std::printf("cpu: %s\n", cpu_model().c_str());
  std::printf("flags: avx2=%d avx512f=%d avx512_vnni=%d amx_int8=%d\n",
              __builtin_cpu_supports("avx2") ? 1 : 0, __builtin_cpu_supports("avx512f") ? 1 : 0,
              __builtin_cpu_supports("avx512vnni") ? 1 : 0,
              __builtin_cpu_supports("amx-int8") ? 1 : 0);
  std::printf("load average (1 min) at start: %s\n", load_average().c_str());
}

}  // namespace tquant::bench
