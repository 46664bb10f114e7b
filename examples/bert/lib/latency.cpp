#include "latency.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <c10/util/Exception.h>

namespace bert {
namespace {

#if defined(__GLIBC__)
// One threshold: left to the environment when it names it, else raised with mallopt.
std::string raise_threshold(int param, const char* param_name, const char* environment) {
  if (const char* value = std::getenv(environment)) {
    return std::string(param_name) + " " + value + " (" + environment + ")";
  }
  TORCH_CHECK(mallopt(param, INT_MAX) == 1, "raise_malloc_thresholds: mallopt(", param_name,
              ", ", INT_MAX, ") failed");
  return std::string(param_name) + " " + std::to_string(INT_MAX) + " (mallopt)";
}
#endif

}  // namespace

std::string raise_malloc_thresholds() {
#if defined(__GLIBC__)
  return "glibc malloc: " +
         raise_threshold(M_MMAP_THRESHOLD, "M_MMAP_THRESHOLD", "MALLOC_MMAP_THRESHOLD_") + ", " +
         raise_threshold(M_TRIM_THRESHOLD, "M_TRIM_THRESHOLD", "MALLOC_TRIM_THRESHOLD_");
#else
  return "not glibc: malloc thresholds left as they are";
#endif
}

std::vector<double> time_calls_ms(const std::function<void()>& call, int64_t reps) {
  std::vector<double> times;
  times.reserve(static_cast<size_t>(std::max<int64_t>(reps, 0)));
  for (int64_t r = 0; r < reps; ++r) {
    const auto start = std::chrono::steady_clock::now();
    call();
    times.push_back(std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - start).count());
  }
  return times;
}

double median(std::vector<double> values) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

RoundTimes interleaved_rounds(const std::vector<std::function<void()>>& systems, int64_t warmup,
                              int64_t rounds, int64_t reps_per_round,
                              const std::function<void(int64_t, const std::vector<double>&)>&
                                  on_round) {
  TORCH_CHECK_VALUE(!systems.empty() && warmup >= 0 && rounds >= 1 && reps_per_round >= 1,
                    "interleaved_rounds: expected systems, warmup >= 0, rounds >= 1 and "
                    "reps_per_round >= 1, got ", systems.size(), " systems, warmup ", warmup,
                    ", rounds ", rounds, ", reps_per_round ", reps_per_round);
  const size_t n = systems.size();
  for (const auto& system : systems) time_calls_ms(system, warmup);
  RoundTimes result;
  result.rounds.assign(n, {});
  for (int64_t r = 0; r < rounds; ++r) {
    std::vector<double> round(n);
    for (size_t k = 0; k < n; ++k) {
      const size_t s = (k + static_cast<size_t>(r)) % n;  // rotated by one each round
      const std::vector<double> t = time_calls_ms(systems[s], reps_per_round);
      round[s] = std::accumulate(t.begin(), t.end(), 0.0) / static_cast<double>(t.size());
    }
    for (size_t s = 0; s < n; ++s) result.rounds[s].push_back(round[s]);
    if (on_round) on_round(r, round);
  }
  for (const auto& times : result.rounds) result.median.push_back(median(times));
  return result;
}

}  // namespace bert
