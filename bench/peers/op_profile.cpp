#include "op_profile.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>

#include <torch/csrc/autograd/profiler_kineto.h>

namespace bench {
namespace {

namespace prof = torch::autograd::profiler;
namespace impl = torch::profiler::impl;

struct Span {
  std::string name;
  uint64_t start = 0;
  uint64_t end = 0;
};

// Self time per op name of the spans of one thread: a span's duration minus that of the spans
// nested directly inside it.
void add_self_times(std::vector<Span> spans, std::map<std::string, OpTime>& by_name,
                    uint64_t& attributed_ns) {
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.start != b.start ? a.start < b.start : a.end > b.end;
  });
  struct Open {
    const Span* span;
    uint64_t children_ns;
  };
  std::vector<Open> stack;
  auto close = [&](const Open& open) {
    OpTime& op = by_name[open.span->name];
    op.name = open.span->name;
    op.self_ms += static_cast<double>(open.span->end - open.span->start - open.children_ns) / 1e6;
    op.calls += 1;
    const uint64_t duration = open.span->end - open.span->start;
    if (stack.empty()) {
      attributed_ns += duration;
    } else {
      stack.back().children_ns += duration;
    }
  };
  for (const Span& span : spans) {
    while (!stack.empty() && stack.back().span->end <= span.start) {
      const Open open = stack.back();
      stack.pop_back();
      close(open);
    }
    stack.push_back({&span, 0});
  }
  while (!stack.empty()) {
    const Open open = stack.back();
    stack.pop_back();
    close(open);
  }
}

}  // namespace

OpProfile profile_ops(const std::function<void()>& work, int runs) {
  work();
  const impl::ProfilerConfig config(impl::ProfilerState::KINETO);
  prof::prepareProfiler(config, {impl::ActivityType::CPU});
  prof::enableProfiler(config, {impl::ActivityType::CPU});
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < runs; ++r) work();
  const double wall_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();

  // Ops of the calling thread only: work done inside at::parallel_for on the other threads is
  // part of the op that started the parallel region.
  std::map<uint64_t, std::vector<Span>> by_thread;
  for (const prof::KinetoEvent& event : result->events()) {
    by_thread[event.startThreadId()].push_back({event.name(), event.startNs(), event.endNs()});
  }
  std::vector<Span> main_spans;
  size_t most = 0;
  for (auto& [thread, spans] : by_thread) {
    if (spans.size() > most) {
      most = spans.size();
      main_spans = std::move(spans);
    }
  }
  std::map<std::string, OpTime> by_name;
  uint64_t attributed_ns = 0;
  add_self_times(std::move(main_spans), by_name, attributed_ns);

  OpProfile profile;
  profile.wall_ms = wall_ms / runs;
  profile.attributed_ms = static_cast<double>(attributed_ns) / 1e6 / runs;
  for (auto& [name, op] : by_name) {
    op.self_ms /= runs;
    op.calls /= runs;
    profile.ops.push_back(op);
  }
  std::sort(profile.ops.begin(), profile.ops.end(),
            [](const OpTime& a, const OpTime& b) { return a.self_ms > b.self_ms; });
  return profile;
}

std::string to_markdown(const OpProfile& profile, double min_share) {
  std::ostringstream out;
  char line[256];
  out << "| op (self time) | ms per forward | share | calls per forward |\n"
         "|---|---:|---:|---:|\n";
  auto row = [&](const std::string& name, double ms, double calls) {
    std::snprintf(line, sizeof(line), "| %s | %.2f | %.1f %% | %s |\n", name.c_str(), ms,
                  100.0 * ms / profile.wall_ms,
                  calls > 0 ? std::to_string(static_cast<int64_t>(calls + 0.5)).c_str() : "-");
    out << line;
  };
  double rest_ms = 0.0;
  int rest_ops = 0;
  for (const OpTime& op : profile.ops) {
    if (op.self_ms >= min_share * profile.wall_ms) {
      row("`" + op.name + "`", op.self_ms, op.calls);
    } else {
      rest_ms += op.self_ms;
      ++rest_ops;
    }
  }
  if (rest_ops > 0) row(std::to_string(rest_ops) + " other ops", rest_ms, 0);
  row("outside any recorded op", profile.wall_ms - profile.attributed_ms, 0);
  std::snprintf(line, sizeof(line), "| **forward (wall)** | **%.2f** | 100 %% | - |\n",
                profile.wall_ms);
  out << line;
  return out.str();
}

}  // namespace bench
