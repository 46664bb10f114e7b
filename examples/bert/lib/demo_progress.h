#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace bert {

/// Progress of one long step of the demo, printed to stderr as
///   "[fine-tune] 12/110 batches  2m05s elapsed  ETA 17m01s  loss 0.412"
/// at most every `interval_s` seconds, and always for the last item. The ETA is the mean time
/// per item so far times the items left.
class DemoProgress {
 public:
  DemoProgress(std::string label, int64_t total, std::string unit, double interval_s = 5.0)
      : label_(std::move(label)), unit_(std::move(unit)), total_(total), interval_s_(interval_s),
        start_(Clock::now()), last_print_(start_) {}

  /// Records `items` more items done; `note` is appended to the line (e.g. the running loss).
  void step(int64_t items = 1, const std::string& note = "") {
    done_ += items;
    const auto now = Clock::now();
    const double since_print = std::chrono::duration<double>(now - last_print_).count();
    if (done_ < total_ && since_print < interval_s_) return;
    last_print_ = now;
    const double elapsed = seconds();
    const double eta = done_ > 0 ? elapsed / static_cast<double>(done_) *
                                       static_cast<double>(total_ - done_)
                                 : 0.0;
    std::fprintf(stderr, "[%s] %lld/%lld %s  %s elapsed  ETA %s%s%s\n", label_.c_str(),
                 static_cast<long long>(done_), static_cast<long long>(total_), unit_.c_str(),
                 format_duration(elapsed).c_str(), format_duration(eta).c_str(),
                 note.empty() ? "" : "  ", note.c_str());
  }

  double seconds() const {
    return std::chrono::duration<double>(Clock::now() - start_).count();
  }

  /// "1h02m03s", "2m05s", "7.3s".
  static std::string format_duration(double seconds) {
    char buffer[32];
    if (seconds < 60.0) {
      std::snprintf(buffer, sizeof(buffer), "%.1fs", seconds);
    } else if (seconds < 3600.0) {
      std::snprintf(buffer, sizeof(buffer), "%dm%02ds", static_cast<int>(seconds) / 60,
                    static_cast<int>(seconds) % 60);
    } else {
      const int s = static_cast<int>(seconds);
      std::snprintf(buffer, sizeof(buffer), "%dh%02dm%02ds", s / 3600, (s / 60) % 60, s % 60);
    }
    return buffer;
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::string label_;
  std::string unit_;
  int64_t total_;
  int64_t done_ = 0;
  double interval_s_;
  Clock::time_point start_;
  Clock::time_point last_print_;
};

}  // namespace bert
