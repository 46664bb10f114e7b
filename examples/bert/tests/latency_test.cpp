#include "latency.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

namespace {

TEST(Latency, MedianOfOddAndEvenCountsAndEmpty) {
  EXPECT_DOUBLE_EQ(bert::median({5.0, 1.0, 3.0}), 3.0);
  EXPECT_DOUBLE_EQ(bert::median({4.0, 1.0, 3.0, 2.0}), 2.5);  // mean of the middle two
  EXPECT_DOUBLE_EQ(bert::median({7.0}), 7.0);
  EXPECT_TRUE(std::isnan(bert::median({})));
}

TEST(Latency, TimeCallsMeasuresEachCall) {
  int calls = 0;
  const std::vector<double> ms = bert::time_calls_ms(
      [&] {
        ++calls;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      },
      3);
  EXPECT_EQ(calls, 3);
  ASSERT_EQ(ms.size(), 3u);
  for (double t : ms) EXPECT_GE(t, 2.0);
}

// The peer bench's order (peer_bench.py, run_rounds): warm-up of each system, then rounds in
// which the starting system moves on by one.
TEST(Latency, InterleavedRoundsWarmUpThenRotateTheOrder) {
  std::string order;
  const std::vector<std::function<void()>> systems = {
      [&] { order += 'a'; }, [&] { order += 'b'; }, [&] { order += 'c'; }};
  int rounds_seen = 0;
  const bert::RoundTimes times = bert::interleaved_rounds(
      systems, /*warmup=*/2, /*rounds=*/4, /*reps_per_round=*/1,
      [&](int64_t round, const std::vector<double>& ms) {
        EXPECT_EQ(round, rounds_seen++);
        EXPECT_EQ(ms.size(), 3u);
      });
  EXPECT_EQ(order, "aabbcc" "abc" "bca" "cab" "abc");
  EXPECT_EQ(rounds_seen, 4);
  ASSERT_EQ(times.rounds.size(), 3u);
  ASSERT_EQ(times.median.size(), 3u);
  for (const auto& r : times.rounds) EXPECT_EQ(r.size(), 4u);
}

TEST(Latency, InterleavedRoundsTakeTheMedianOfRoundMeans) {
  // System 1 sleeps 6 ms in one round of five and 1 ms otherwise: the median ignores the
  // outlier round; each round's time is the mean of its 2 calls.
  int call = 0;
  const std::vector<std::function<void()>> systems = {
      [] {}, [&] {
        const int round = call++ / 2;
        std::this_thread::sleep_for(std::chrono::milliseconds(round == 2 ? 6 : 1));
      }};
  const bert::RoundTimes times = bert::interleaved_rounds(systems, 0, 5, 2);
  EXPECT_GE(times.rounds[1][2], 6.0);
  EXPECT_GE(times.median[1], 1.0);
  EXPECT_LT(times.median[1], 6.0);
  EXPECT_LT(times.median[0], times.median[1]);
}

TEST(Latency, InterleavedRoundsRejectBadCounts) {
  const std::vector<std::function<void()>> one = {[] {}};
  EXPECT_THROW(bert::interleaved_rounds({}, 0, 1), c10::Error);
  EXPECT_THROW(bert::interleaved_rounds(one, -1, 1), c10::Error);
  EXPECT_THROW(bert::interleaved_rounds(one, 0, 0), c10::Error);
  EXPECT_THROW(bert::interleaved_rounds(one, 0, 1, 0), c10::Error);
}

TEST(Latency, MallocThresholdsSayWhatWasDone) {
  const std::string line = bert::raise_malloc_thresholds();
#if defined(__GLIBC__)
  EXPECT_NE(line.find("glibc malloc: M_MMAP_THRESHOLD "), std::string::npos) << line;
  EXPECT_NE(line.find("M_TRIM_THRESHOLD "), std::string::npos) << line;
  const bool from_environment = std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr;
  EXPECT_NE(line.find(from_environment ? "(MALLOC_MMAP_THRESHOLD_)" : "2147483647 (mallopt)"),
            std::string::npos)
      << line;
#else
  EXPECT_NE(line.find("not glibc"), std::string::npos) << line;
#endif
}

}  // namespace
