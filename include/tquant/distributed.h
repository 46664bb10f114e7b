#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <c10/core/Device.h>
#include <torch/arg.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/nn/module.h>

#include "tquant/report.h"

namespace tquant {

/// Timeout of tquant's collectives unless the group says otherwise (and of the groups that
/// process_group_from_env builds).
constexpr std::chrono::milliseconds kDefaultDistributedTimeout = std::chrono::seconds(300);

/// The c10d process group tquant talks over: the user's own `c10d::ProcessGroup` (as
/// torch.distributed builds it, one backend per device type) or a single `c10d::Backend`
/// (`c10d::ProcessGroupGloo`, `c10d::ProcessGroupNCCL`). tquant never ships a communication layer
/// of its own; it issues a few blocking collectives on this group, in the same order on every
/// rank (c10d's rule), and waits for each at most `timeout`.
///
/// `device` is where tquant's own collective tensors (signatures, statistics, gradient buckets)
/// live: CPU for Gloo, the rank's CUDA device for NCCL.
///
/// Every failed collective (a rank died, never arrived, or the wait timed out) throws a
/// c10::Error naming the step, this rank and the timeout. A group that failed is not reused:
/// build a fresh one (process_group_from_env again, or the user's own).
///
/// Example:
///   auto env = tquant::process_group_from_env();      // under torchrun
///   tquant::DistributedGroup group = env.group;
///   // or: tquant::DistributedGroup group(my_process_group);
class DistributedGroup {
 public:
  DistributedGroup(c10::intrusive_ptr<c10d::ProcessGroup> group,
                   std::chrono::milliseconds timeout = kDefaultDistributedTimeout,
                   c10::Device device = c10::kCPU);
  DistributedGroup(c10::intrusive_ptr<c10d::Backend> backend,
                   std::chrono::milliseconds timeout = kDefaultDistributedTimeout,
                   c10::Device device = c10::kCPU);

  int rank() const { return rank_; }
  /// Number of ranks in the group (torch.distributed's world size).
  int world_size() const { return size_; }
  [[deprecated("use world_size()")]] int size() const { return world_size(); }
  std::chrono::milliseconds timeout() const { return timeout_; }
  c10::Device device() const { return device_; }

  /// In-place all-reduce of `tensor` (any device; moved to device() for the wire). `what`
  /// names the step in errors.
  void allreduce(at::Tensor& tensor, c10d::ReduceOp op, const std::string& what) const;
  /// In-place broadcast of `tensor` from `root`.
  void broadcast(at::Tensor& tensor, int root, const std::string& what) const;
  /// Every rank's 1-D `tensor` (lengths may differ: gathered first, then padded), in rank order.
  std::vector<at::Tensor> allgather(const at::Tensor& tensor, const std::string& what) const;

  const c10::intrusive_ptr<c10d::ProcessGroup>& process_group() const { return group_; }
  const c10::intrusive_ptr<c10d::Backend>& backend() const { return backend_; }

 private:
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) const;
  std::vector<at::Tensor> allgather_same_size(const at::Tensor& tensor,
                                              const std::string& what) const;

  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  c10::intrusive_ptr<c10d::Backend> backend_;
  int rank_ = 0;
  int size_ = 1;
  std::chrono::milliseconds timeout_;
  c10::Device device_;
};

/// Options of process_group_from_env.
struct ProcessGroupOptions {
  /// Store connection, rendezvous and collectives time out after this long.
  TORCH_ARG(std::chrono::milliseconds, timeout) = kDefaultDistributedTimeout;
  /// kCPU: a Gloo group. kCUDA: an NCCL group on cuda:LOCAL_RANK (only in a CUDA build; the
  /// group also gets Gloo for CPU tensors).
  TORCH_ARG(c10::DeviceType, device_type) = c10::kCPU;
  /// Address Gloo binds to. Empty: $GLOO_SOCKET_IFNAME's interface if set, 127.0.0.1 when
  /// MASTER_ADDR is a loopback address, else this host's name (as PyTorch's default device).
  TORCH_ARG(std::string, gloo_hostname);
  /// Store keys of this group live under "tquant/<name>/"; empty: "pg<k>" with k counting the
  /// groups this process built, so a fresh group after a failed one never meets old keys.
  TORCH_ARG(std::string, name);
};

/// What process_group_from_env built.
struct EnvProcessGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> process_group;
  DistributedGroup group;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
};

/// Builds a process group from torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK (default
/// RANK), MASTER_ADDR, MASTER_PORT. The TCPStore is a client of the launcher's store when
/// TORCHELASTIC_USE_AGENT_STORE=True (torchrun, launch_local); otherwise rank 0 hosts it. Then
/// a c10d::ProcessGroup with a Gloo backend for CPU tensors (and NCCL for CUDA tensors when
/// options.device_type() is kCUDA). Throws naming the missing or malformed variable, or the
/// rank that never arrived within the timeout.
///
/// Example (run with `torchrun --no-python --nproc-per-node 2 ./program`):
///   auto env = tquant::process_group_from_env();
///   std::cout << "rank " << env.rank << " of " << env.world_size << "\n";
EnvProcessGroup process_group_from_env(const ProcessGroupOptions& options = {});

/// One line per parameter, buffer and quantizer of `model`, in named order: names, dtypes,
/// shapes (left out for tensors whose shape follows the data: observer and quantizer state)
/// and quantizer kinds with their specs. Ranks compare it before any statistics move.
std::vector<std::string> model_signature(torch::nn::Module& model);

/// Exchanges model_signature across the group; throws on every rank, naming the first entry
/// that differs and the two ranks, if the models differ. `what` prefixes the error.
void check_same_model(torch::nn::Module& model, const DistributedGroup& group,
                      const std::string& what = "tquant::check_same_model");

/// What sync_observers combined, by rule.
struct ObserverSyncReport {
  int64_t min_max = 0;         ///< running min / max: all-reduce MIN and MAX (exact)
  int64_t moving_average = 0;  ///< moving-average min / max: mean over ranks with data
  int64_t histogram = 0;       ///< streaming histograms: common grid, counts rebinned and summed
  int64_t shared_grid = 0;     ///< shared-grid histograms: ranges MIN / MAX, counts summed (exact)
  int64_t without_data = 0;    ///< observers no rank has seen data for (left empty)
};

/// Makes every rank's observers hold the statistics of all ranks' data. Checks the model
/// signature first (check_same_model), then, for every observer of the model
/// (ObserverBase modules, inside FakeQuantize / LearnableFakeQuantize or alone):
///   - min-max observers (averaging constant 0), per-tensor and per-channel:
///     min = all-reduce MIN, max = all-reduce MAX, bit-equal to one process that observed
///     every rank's data;
///   - moving-average observers: the mean over the ranks that observed data of their averages
///     (each is an estimate of the same typical batch range; for two ranks this is exactly
///     merge()). After a sync each step, the running average equals one whose batch value is
///     the mean of the ranks' batch extremes;
///   - HistogramObserver with a shared grid (HistogramGrid::kShared), per tensor and per
///     channel: in the range pass, min = all-reduce MIN, max = all-reduce MAX; once every rank
///     ran fix_grid() on those ranges, the grids are checked equal and the counts SUM-reduced.
///     Exact: histograms, and so amax, scale and zero point of every method, are bit-equal to
///     one process calibrating on all the data with the same options;
///   - streaming HistogramObserver, per tensor and per channel: range first (MIN / MAX,
///     exact), then the grid of the lowest rank with data grown to cover that range (as its
///     own observer would: merge() semantics), every rank's counts rebinned onto it and
///     SUM-reduced. The result equals merge() of the ranks' observers in one process; against
///     one process that observed all the data, max is exact and the percentile lies within
///     ceil(w_r / w) + 1 bins (w_r the widest rank's own bin width, w the common one), while
///     entropy and MSE have no such bound (docs/distributed.md has measured gaps).
/// A rank that saw no data for an observer takes the others' statistics. FakeQuantize modules
/// whose observer is enabled and whose parameters were set already are refreshed from the
/// synced statistics (update_qparams), so their scale / zero point agree too.
/// Every rank must call it at the same point.
///
/// Example (between observing and freezing; calibrate_distributed does exactly this):
///   tquant::calibrate(*net, [&] {
///     for (auto& batch : my_shard) net->forward(batch);
///     tquant::sync_observers(*net, group);
///   });
ObserverSyncReport sync_observers(torch::nn::Module& model, const DistributedGroup& group);

/// tquant::calibrate where every rank runs `forward_loop` over its own shard, then
/// sync_observers, then the ranges freeze: identical on every rank. With shared-grid histograms
/// the loop runs twice (as in calibrate): after the first pass their ranges are synced, every
/// rank fixes the same grid, and after the second pass everything is synced.
CalibrationReport calibrate_distributed(torch::nn::Module& model, const DistributedGroup& group,
                                        const std::function<void()>& forward_loop);

/// Copies `root`'s parameters and buffers (observer and quantizer state included, with their
/// shapes) to every rank, after check_same_model. Call once before data-parallel training.
void broadcast_parameters_and_buffers(torch::nn::Module& model, const DistributedGroup& group,
                                      int root = 0);

/// Gradient buckets of average_gradients: at most this many bytes each (DDP's default 25 MiB).
constexpr int64_t kDefaultBucketBytes = 25 * 1024 * 1024;

/// After backward: replaces every parameter's gradient with the mean over ranks. Gradients
/// are flattened into buckets of one dtype and at most `bucket_bytes` (a tensor larger than
/// that gets its own bucket): one all-reduce SUM per bucket, then a division by the world
/// size. A parameter with no gradient on some ranks counts as zero there (one small all-reduce
/// of which parameters have gradients comes first). Learnable scales are parameters and are
/// averaged like the weights.
///
/// Example (data-parallel QAT):
///   tquant::broadcast_parameters_and_buffers(*net, group);
///   for (auto& batch : my_shard) {
///     optimizer.zero_grad();
///     loss_fn(net->forward(batch.x), batch.y).backward();
///     tquant::average_gradients(*net, group);
///     optimizer.step();
///     tquant::sync_observers(*net, group);   // only while observers are on
///   }
void average_gradients(torch::nn::Module& model, const DistributedGroup& group,
                       int64_t bucket_bytes = kDefaultBucketBytes);

/// Checks that every parameter and buffer is bit-identical on every rank (a 64-bit hash of
/// each tensor's bytes, shape and dtype is all-gathered). Returns "" when they are, otherwise
/// the name of the first tensor that differs and on which ranks.
std::string find_replica_difference(torch::nn::Module& model, const DistributedGroup& group);

/// Environment variables as (NAME, value) pairs.
using EnvironmentVariables = std::vector<std::pair<std::string, std::string>>;

/// Options of launch_local.
struct LaunchOptions {
  /// Number of ranks (processes) on this machine (torchrun's --nproc-per-node).
  TORCH_ARG(int, nproc_per_node) = 2;

 public:
  [[deprecated("use nproc_per_node(n)")]] LaunchOptions& nproc(int n) {
    return nproc_per_node(n);
  }
  [[deprecated("use nproc_per_node()")]] int nproc() const { return nproc_per_node(); }

  /// Loopback address the store binds and the ranks use as MASTER_ADDR.
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  /// Ranks still running after this long are killed (SIGKILL) and reported as timed out.
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::minutes(30);
  /// OMP_NUM_THREADS of each rank (0: leave the environment alone).
  TORCH_ARG(int, threads_per_rank) = 0;
  /// Extra environment variables (NAME, value) for every rank.
  TORCH_ARG(EnvironmentVariables, env);
};

/// How one launched rank ended.
struct RankExit {
  int rank = 0;
  int exit_code = 0;   ///< exit status, or 128 + signal number
  bool timed_out = false;
  double seconds = 0;  ///< from launch to exit
};

/// A small torchrun for one machine and tests: binds a TCPStore on master_addr, port 0 (a free
/// port, bound before any rank starts, so no port race), then starts `argv` nproc_per_node times
/// (fork + exec) with RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
/// and TORCHELASTIC_USE_AGENT_STORE=True (ranks join this store, as under torchrun), and waits
/// for all of them. Unlike torchrun it does not stop the others when one fails, so a test can
/// see how they end. argv[0] is a path (no PATH search).
///
/// Example:
///   auto exits = tquant::launch_local({"./program", "--steps", "3"},
///                                     tquant::LaunchOptions().nproc_per_node(2));
std::vector<RankExit> launch_local(const std::vector<std::string>& argv,
                                   const LaunchOptions& options = {});

}  // namespace tquant
