#pragma once

// A per-op profile of a piece of work, from LibTorch's own profiler (Kineto, CPU activities): the
// self time of every op recorded on the calling thread (ATen and dispatcher ops, plus the
// RECORD_FUNCTION scopes tquant puts around its own kernels), i.e. the op's time minus the time
// of the ops it called, summed per op name and divided by the number of runs.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bench {

struct OpTime {
  std::string name;
  double self_ms = 0.0;  // per run
  double calls = 0.0;    // per run
};

struct OpProfile {
  double wall_ms = 0.0;       // per run, the whole of `work`
  double attributed_ms = 0.0; // per run, inside some recorded op
  std::vector<OpTime> ops;    // by self time, largest first
};

/// Runs `work` once unprofiled (warm-up), then `runs` times under the profiler.
OpProfile profile_ops(const std::function<void()>& work, int runs);

/// A markdown table: op, ms per run, share of the wall time, calls per run; ops under
/// `min_share` of the wall time are summed into one row, and the time outside every recorded op
/// (module code between ops) is its own row.
std::string to_markdown(const OpProfile& profile, double min_share = 0.005);

}  // namespace bench
