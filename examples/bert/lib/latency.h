#pragma once

// The latency method of the peer benchmark (bench/peers/: run.sh, peer_bench.py and its C++
// runner tquant_minilm_bench), in one place for the C++ programs that time models: the runner
// times its forwards with time_calls_ms (peer_bench.py interleaves the systems itself, in the
// rounds interleaved_rounds runs here), and the BERT demo's latency rows use all of it.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bert {

/// Raises glibc malloc's mmap and trim thresholds for this process, as bench/peers/run.sh does
/// for every peer with MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ = 4294967296: glibc
/// otherwise hands large freed blocks back to the kernel, so every forward page-faults its big
/// activations in again (~12 % of a converted MiniLM forward in perf; docs/backends.md,
/// "Serving"). mallopt takes an int, so the value set is 2147483647 (2 GiB - 1; no block of a
/// MiniLM forward comes near it, so the effect is the environment's). A threshold the
/// environment sets is left as it is. Call it at the start of main. Returns what was done, for
/// the log: "glibc malloc: M_MMAP_THRESHOLD 2147483647 (mallopt), M_TRIM_THRESHOLD ...".
std::string raise_malloc_thresholds();

/// Wall time in milliseconds of each of `reps` calls of `call`, in order.
std::vector<double> time_calls_ms(const std::function<void()>& call, int64_t reps);

/// The median of `values` (the mean of the two middle ones for an even count); NaN if empty.
double median(std::vector<double> values);

/// Per system: the time of each round and their median.
struct RoundTimes {
  std::vector<std::vector<double>> rounds;  ///< [system][round], ms
  std::vector<double> median;               ///< [system], ms
};

/// The peer bench's rounds (peer_bench.py, run_rounds): `warmup` untimed calls of every system,
/// then `rounds` rounds in which every system runs `reps_per_round` calls, the order rotated by
/// one system from round to round, so that the drift of a shared machine hits all systems
/// alike; a round's time is the mean of its calls, a system's time the median over the rounds.
/// `on_round(round, times)` (if set) sees each round's times as they come, in system order.
RoundTimes interleaved_rounds(const std::vector<std::function<void()>>& systems, int64_t warmup,
                              int64_t rounds, int64_t reps_per_round = 1,
                              const std::function<void(int64_t, const std::vector<double>&)>&
                                  on_round = {});

}  // namespace bert
