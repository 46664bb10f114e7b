#include <gtest/gtest.h>
#include "test_util.h"

#include "tquant/distributed.h"

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "tquant/histogram_observer.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/observer.h"
#include "tquant/qconfig.h"
#include "tquant/qconfig_mapping.h"
#include "tquant/quantize.h"

// Every multi-rank case starts the ranks as processes of this test binary on 127.0.0.1
// (tquant::launch_local: fork + exec of /proc/self/exe with RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT; the store's port 0 is bound before the ranks start). Each rank runs
// DistributedWorker.Run with one intra-op thread, writes what it computed to a file, and the
// parent compares against a single process that saw all the data.

using namespace tquant;
using Tensors = c10::Dict<std::string, at::Tensor>;

namespace {

constexpr int64_t kInFeatures = 7;
constexpr int64_t kCalibrationBatches = 6;  // split into contiguous shards of 6 / world
constexpr int64_t kRowsPerBatch = 9;
constexpr int64_t kQatSteps = 3;
constexpr int64_t kQatRowsPerRank = 4;
constexpr double kLearningRate = 0.05;
constexpr double kFloat32Epsilon = 1.0 / (1 << 23);

struct NetImpl : torch::nn::Module {
  explicit NetImpl(int64_t hidden2 = 5) {
    fc1 = register_module("fc1", QuantLinear(kInFeatures, 17));
    fc2 = register_module("fc2", QuantLinear(17, hidden2));
    fc3 = register_module("fc3", QuantLinear(hidden2, 3));
  }
  at::Tensor forward(const at::Tensor& x) {
    return fc3(torch::relu(fc2(torch::relu(fc1(x)))));
  }
  QuantLinear fc1{nullptr};
  QuantLinear fc2{nullptr};
  QuantLinear fc3{nullptr};
};
TORCH_MODULE(Net);

Net make_net(int64_t hidden2 = 5) {
  torch::manual_seed(1);
  return Net(hidden2);
}

template <typename H, typename Options>
QuantizerFactory quantizer(Options options) {
  return fake_quantize_factory(FakeQuantizeOptions(observer_factory<H>(options)));
}

QuantSpec per_channel() { return int8_per_channel_weight_spec(); }
QuantSpec per_tensor() { return int8_per_tensor_activation_spec(); }

/// Every rule of sync_observers: histograms (per tensor with entropy, per channel with
/// percentile), running min-max (per tensor, per channel), moving averages (both).
QConfigMapping calibration_mapping() {
  QConfig histograms{
      quantizer<HistogramObserver>(
          HistogramObserverOptions(per_tensor()).method(CalibrationMethod::kEntropy)),
      quantizer<HistogramObserver>(HistogramObserverOptions(per_channel()))};
  QConfig min_max{quantizer<MinMaxObserver>(MinMaxObserverOptions(per_tensor())),
                  quantizer<PerChannelMinMaxObserver>(MinMaxObserverOptions(per_channel()))};
  QConfig moving{
      quantizer<MovingAverageMinMaxObserver>(MinMaxObserverOptions(per_tensor())),
      quantizer<MovingAveragePerChannelMinMaxObserver>(MinMaxObserverOptions(per_channel()))};
  return QConfigMapping()
      .set_module_name("fc1", histograms)
      .set_module_name("fc2", min_max)
      .set_module_name("fc3", moving);
}

/// QAT: running min-max everywhere, so calibrated ranges are exact and training can be
/// compared with one process.
QConfigMapping qat_mapping() {
  return QConfigMapping(
      QConfig{quantizer<MinMaxObserver>(MinMaxObserverOptions(per_tensor())),
              quantizer<PerChannelMinMaxObserver>(MinMaxObserverOptions(per_channel()))});
}

std::vector<at::Tensor> calibration_batches() {
  auto gen = at::detail::createCPUGenerator(7);
  std::vector<at::Tensor> result;
  for (int64_t i = 0; i < kCalibrationBatches; ++i) {
    auto batch = at::randn({kRowsPerBatch, kInFeatures}, gen);
    if (i == 4) batch = batch * 5.0;  // a later shard widens the range: histograms must grow
    result.push_back(batch);
  }
  return result;
}

std::vector<at::Tensor> shard(const std::vector<at::Tensor>& all, int rank, int world) {
  const int64_t per_rank = static_cast<int64_t>(all.size()) / world;
  return {all.begin() + rank * per_rank, all.begin() + (rank + 1) * per_rank};
}

/// The global batch of QAT step `step` for `world` ranks, and its target.
std::pair<at::Tensor, at::Tensor> qat_batch(int64_t step, int world) {
  auto gen = at::detail::createCPUGenerator(100 + step);
  auto x = at::randn({world * kQatRowsPerRank, kInFeatures}, gen);
  auto y = at::randn({world * kQatRowsPerRank, 3}, gen);
  return {x, y};
}

void calibrate_on(Net& net, const std::vector<at::Tensor>& data) {
  torch::NoGradGuard no_grad;
  calibrate(*net, [&] {
    for (const auto& batch : data) net->forward(batch);
  });
}

void qat_step(Net& net, torch::optim::SGD& optimizer, const at::Tensor& x, const at::Tensor& y,
              const DistributedGroup* group) {
  optimizer.zero_grad();
  auto loss = torch::mse_loss(net->forward(x), y);
  loss.backward();
  if (group != nullptr) average_gradients(*net, *group);
  optimizer.step();
}

void enable_observers(Net& net) {
  for (const auto& item : net->named_modules()) {
    if (auto* fq = dynamic_cast<FakeQuantizeImpl*>(item.value().get())) fq->enable_observer(true);
  }
}

template <typename T>
bool min_max_of(torch::nn::Module& module, std::pair<at::Tensor, at::Tensor>& out) {
  auto* observer = dynamic_cast<T*>(&module);
  if (observer != nullptr) out = {observer->min_val, observer->max_val};
  return observer != nullptr;
}

/// min_val and max_val of a min-max-family observer, or nullptr.
const std::pair<at::Tensor, at::Tensor>* min_max_buffers(torch::nn::Module& module) {
  static thread_local std::pair<at::Tensor, at::Tensor> found;
  const bool any = min_max_of<MinMaxObserverImpl>(module, found) ||
                   min_max_of<PerChannelMinMaxObserverImpl>(module, found) ||
                   min_max_of<MovingAverageMinMaxObserverImpl>(module, found) ||
                   min_max_of<MovingAveragePerChannelMinMaxObserverImpl>(module, found);
  return any ? &found : nullptr;
}

/// Quantizer parameters and observer statistics of a calibrated model, by name.
Tensors calibration_state(Net& net) {
  Tensors out;
  for (const auto& item : net->named_modules()) {
    const std::string& name = item.key();
    if (auto* fq = dynamic_cast<FakeQuantizeImpl*>(item.value().get())) {
      out.insert(name + "/scale", fq->qparams().scale);
      out.insert(name + "/zero_point", fq->qparams().zero_point);
    }
    if (const auto* stats = min_max_buffers(*item.value())) {
      out.insert(name + "/min_val", stats->first);
      out.insert(name + "/max_val", stats->second);
    }
    if (auto* h = dynamic_cast<HistogramObserverImpl*>(item.value().get())) {
      out.insert(name + "/amax", h->compute_amax(h->options.method()));
      out.insert(name + "/bin_width", h->bin_width);
      out.insert(name + "/min_val", h->min_val);
      out.insert(name + "/max_val", h->max_val);
      out.insert(name + "/count", h->counts.sum());
    }
  }
  return out;
}

Tensors model_state(Net& net, const std::string& prefix) {
  Tensors out;
  for (const auto& p : net->named_parameters()) out.insert(prefix + p.key(), p.value().detach().clone());
  for (const auto& b : net->named_buffers()) out.insert(prefix + b.key(), b.value().detach().clone());
  return out;
}

void merge_into(Tensors& into, const Tensors& from) {
  for (const auto& item : from) into.insert(item.key(), item.value());
}

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

void write_file(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::string read_text(const std::string& path) {
  const auto bytes = read_file(path);
  return {bytes.begin(), bytes.end()};
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// ---------------------------------------------------------------------------------------------
// Histogram grids: Linear -> ReLU -> Linear, both inputs observed by histograms (per tensor or
// per channel), the first on rank-dependent ranges, the second after the ReLU (a spike of
// exact zeros). Every method is read from the same calibration (set_calibration_method).

constexpr int64_t kGridFeatures = 16;
constexpr int64_t kGridHidden = 24;
constexpr int64_t kGridBatches = 6;  // contiguous shards of 6 / world
constexpr int64_t kGridRows = 37;

struct GridNetImpl : torch::nn::Module {
  GridNetImpl() {
    fc1 = register_module("fc1", QuantLinear(kGridFeatures, kGridHidden));
    fc2 = register_module("fc2", QuantLinear(kGridHidden, 5));
  }
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  QuantLinear fc1{nullptr};
  QuantLinear fc2{nullptr};
};
TORCH_MODULE(GridNet);

struct GridCase {
  std::string name;
  Granularity granularity;
  HistogramGrid grid;
};

const std::vector<GridCase>& grid_cases() {
  static const std::vector<GridCase> cases = {
      {"shared_per_tensor", Granularity::kPerTensor, HistogramGrid::kShared},
      {"shared_per_channel", Granularity::kPerChannel, HistogramGrid::kShared},
      {"streaming_per_tensor", Granularity::kPerTensor, HistogramGrid::kStreaming},
      {"streaming_per_channel", Granularity::kPerChannel, HistogramGrid::kStreaming}};
  return cases;
}

/// fc1's input: int8 symmetric; fc2's input (after the ReLU): uint8 affine, so zero points
/// are compared too. Per channel: one histogram per input feature (axis 1 of [rows, in]).
QConfigMapping grid_mapping(const GridCase& c) {
  auto spec = [&](QuantSpec s) {
    return c.granularity == Granularity::kPerChannel ? s.granularity(Granularity::kPerChannel).axis(1)
                                                     : s;
  };
  auto histogram = [&](QuantSpec s) {
    return quantizer<HistogramObserver>(HistogramObserverOptions(spec(s)).grid(c.grid));
  };
  auto weights = quantizer<PerChannelMinMaxObserver>(MinMaxObserverOptions(per_channel()));
  return QConfigMapping()
      .set_module_name("fc1", QConfig{histogram(int8_per_tensor_activation_spec()), weights})
      .set_module_name("fc2", QConfig{histogram(QuantSpec(QuantDtype::kUInt8).symmetric(false)),
                                      weights});
}

/// Rank r of `world` owns batches [r * 6 / world, (r + 1) * 6 / world); its data are scaled by
/// 1 + r and shifted by 0.5 r, so every rank sees another range.
std::vector<at::Tensor> grid_batches(int world) {
  auto gen = at::detail::createCPUGenerator(11);
  std::vector<at::Tensor> result;
  for (int64_t i = 0; i < kGridBatches; ++i) {
    const double owner = static_cast<double>(i * world / kGridBatches);
    result.push_back(at::randn({kGridRows, kGridFeatures}, gen) * (1.0 + owner) + 0.5 * owner);
  }
  return result;
}

struct GridMethod {
  std::string name;
  CalibrationMethod method;
  double percentile;
};

const std::vector<GridMethod>& grid_methods() {
  static const std::vector<GridMethod> methods = {
      {"max", CalibrationMethod::kMax, 0},
      {"percentile99.9", CalibrationMethod::kPercentile, 99.9},
      {"percentile99.99", CalibrationMethod::kPercentile, 99.99},
      {"entropy", CalibrationMethod::kEntropy, 0},
      {"mse", CalibrationMethod::kMse, 0}};
  return methods;
}

const std::vector<std::string>& grid_quantizers() {
  static const std::vector<std::string> names = {"fc1.input_quantizer", "fc2.input_quantizer"};
  return names;
}

GridNet calibrated_grid_net(const GridCase& c, const std::vector<at::Tensor>& data,
                            const DistributedGroup* group) {
  torch::manual_seed(3);
  GridNet net;
  prepare(*net, grid_mapping(c));
  torch::NoGradGuard no_grad;
  auto loop = [&] {
    for (const auto& batch : data) net->forward(batch);
  };
  if (group != nullptr) {
    calibrate_distributed(*net, *group, loop);
  } else {
    calibrate(*net, loop);
  }
  return net;
}

/// For every method: amax, scale and zero point of both histogram quantizers, plus their bin
/// widths, keyed "<case>/<quantizer>/<method>/<field>".
Tensors grid_state(GridNet& net, const GridCase& c) {
  Tensors out;
  for (const auto& m : grid_methods()) {
    if (m.method == CalibrationMethod::kPercentile) {
      set_calibration_method(*net, m.method, m.percentile);
    } else {
      set_calibration_method(*net, m.method);
    }
    for (const auto& q : grid_quantizers()) {
      auto* fq = dynamic_cast<FakeQuantizeImpl*>(net->named_modules()[q].get());
      auto* h = dynamic_cast<HistogramObserverImpl*>(fq->observer.get());
      const std::string key = c.name + "/" + q + "/" + m.name + "/";
      out.insert(key + "amax", h->compute_amax(m.method).clone());
      out.insert(key + "scale", fq->qparams().scale.clone());
      out.insert(key + "zero_point", fq->qparams().zero_point.clone());
      out.insert(c.name + "/" + q + "/bin_width", h->bin_width.clone());
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Rank side: what each launched process runs.

void run_histogram_grids(const std::string& out_dir) {
  auto env_group = process_group_from_env(ProcessGroupOptions().timeout(std::chrono::seconds(60)));
  const DistributedGroup& group = env_group.group;
  const auto data = shard(grid_batches(group.world_size()), group.rank(), group.world_size());
  Tensors out;
  for (const auto& c : grid_cases()) {
    GridNet net = calibrated_grid_net(c, data, &group);
    merge_into(out, grid_state(net, c));
  }
  write_file(out_dir + "/rank" + std::to_string(group.rank()) + ".pt", torch::pickle_save(out));
}

constexpr auto kFaultTimeout = std::chrono::seconds(4);

void run_calibrate_and_train(const std::string& out_dir) {
  auto env_group = process_group_from_env(ProcessGroupOptions().timeout(std::chrono::seconds(60)));
  const DistributedGroup& group = env_group.group;
  const int rank = group.rank();
  const int world = group.world_size();
  const auto data = shard(calibration_batches(), rank, world);
  Tensors out;

  // 1. Distributed calibration with every observer kind.
  Net calib = make_net();
  prepare(*calib, calibration_mapping());
  {
    torch::NoGradGuard no_grad;
    calibrate_distributed(*calib, group, [&] {
      for (const auto& batch : data) calib->forward(batch);
    });
  }
  for (const auto& item : calibration_state(calib)) out.insert("calib/" + item.key(), item.value());

  // 2. Data-parallel QAT: replicas start different, the broadcast makes them rank 0's.
  Net net = make_net();
  prepare(*net, qat_mapping());
  if (rank > 0) {
    torch::NoGradGuard no_grad;
    net->fc1->weight.add_(static_cast<double>(rank));
  }
  broadcast_parameters_and_buffers(*net, group);
  {
    torch::NoGradGuard no_grad;
    calibrate_distributed(*net, group, [&] {
      for (const auto& batch : data) net->forward(batch);
    });
  }
  torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(kLearningRate));
  for (int64_t step = 0; step < kQatSteps; ++step) {
    auto [x, y] = qat_batch(step, world);
    qat_step(net, optimizer, x.narrow(0, rank * kQatRowsPerRank, kQatRowsPerRank),
             y.narrow(0, rank * kQatRowsPerRank, kQatRowsPerRank), &group);
  }
  merge_into(out, model_state(net, "qat/"));

  // 3. Observers on during training: statistics synced after every step.
  enable_observers(net);
  for (int64_t step = kQatSteps; step < kQatSteps + 2; ++step) {
    auto [x, y] = qat_batch(step, world);
    qat_step(net, optimizer, x.narrow(0, rank * kQatRowsPerRank, kQatRowsPerRank),
             y.narrow(0, rank * kQatRowsPerRank, kQatRowsPerRank), &group);
    sync_observers(*net, group);
  }
  merge_into(out, model_state(net, "observed/"));
  out.insert("replica_difference_is_empty",
             at::scalar_tensor(find_replica_difference(*net, group).empty() ? 1 : 0));
  write_file(out_dir + "/rank" + std::to_string(rank) + ".pt", torch::pickle_save(out));
}

void run_mismatch(const std::string& out_dir) {
  auto first = process_group_from_env(ProcessGroupOptions().timeout(kFaultTimeout));
  const int rank = first.rank;
  Net net = make_net(rank == 1 ? 6 : 5);  // rank 1's fc2 has another shape
  prepare(*net, calibration_mapping());
  {
    torch::NoGradGuard no_grad;
    net->forward(calibration_batches()[rank]);
  }
  const std::string message =
      test::error_message([&] { sync_observers(*net, first.group); });
  // A second call after the failed one, on a fresh group, with matching models.
  auto second = process_group_from_env(ProcessGroupOptions().timeout(kFaultTimeout));
  Net good = make_net();
  prepare(*good, calibration_mapping());
  {
    torch::NoGradGuard no_grad;
    good->forward(calibration_batches()[rank]);
  }
  const auto report = sync_observers(*good, second.group);
  write_text(out_dir + "/rank" + std::to_string(rank) + ".txt",
             message + "\nsynced " + std::to_string(report.histogram + report.min_max +
                                                    report.moving_average));
}

enum class Leave { kBeforeGroup, kAfterGroup, kStall };

/// Rank 1 does not take part: it exits before building the group ("never_arrives"), exits after
/// ("dies"), or stays alive without calling any collective for twice the timeout ("stalls").
void run_rank_leaves(const std::string& out_dir, Leave leave) {
  const int rank = std::atoi(env("RANK").c_str());
  if (rank == 1 && leave == Leave::kBeforeGroup) _exit(3);
  const auto start = std::chrono::steady_clock::now();
  std::string message = test::error_message([&] {
    auto env_group = process_group_from_env(ProcessGroupOptions().timeout(kFaultTimeout));
    if (rank == 1 && leave == Leave::kStall) std::this_thread::sleep_for(2 * kFaultTimeout);
    if (rank == 1) _exit(3);
    Net net = make_net();
    prepare(*net, calibration_mapping());
    torch::NoGradGuard no_grad;
    net->forward(calibration_batches()[0]);
    sync_observers(*net, env_group.group);
  });
  write_text(out_dir + "/rank" + std::to_string(rank) + ".txt",
             std::to_string(seconds_since(start)) + "\n" + message);
}

// ---------------------------------------------------------------------------------------------
// Parent side.

struct Launched {
  std::string dir;
  std::vector<RankExit> exits;
};

Launched launch(const std::string& scenario, int world) {
  char pattern[] = "/tmp/tquant_distributed_XXXXXX";
  const char* dir = mkdtemp(pattern);
  TORCH_CHECK(dir != nullptr, "mkdtemp failed");
  const std::string filter = "--gtest_filter=DistributedWorker.Run";
  auto exits = launch_local({"/proc/self/exe", filter},
                            LaunchOptions()
                                .nproc_per_node(world)
                                .threads_per_rank(1)
                                .timeout(std::chrono::seconds(120))
                                .env({{"TQUANT_DIST_SCENARIO", scenario},
                                      {"TQUANT_DIST_OUT", dir}}));
  return {dir, exits};
}

/// Removes a result folder of launch() (files only). Not std::filesystem::remove_all: in this
/// binary that symbol binds to a copy inside libtorch.so, which crashes.
void remove_result_dir(const std::string& dir) {
  if (DIR* handle = opendir(dir.c_str())) {
    while (dirent* entry = readdir(handle)) {
      const std::string name = entry->d_name;
      if (name != "." && name != "..") unlink((dir + "/" + name).c_str());
    }
    closedir(handle);
  }
  rmdir(dir.c_str());
}

Tensors load_rank(const Launched& launched, int rank) {
  auto bytes = read_file(launched.dir + "/rank" + std::to_string(rank) + ".pt");
  EXPECT_FALSE(bytes.empty()) << "rank " << rank << " wrote no results";
  if (bytes.empty()) return Tensors();
  return c10::impl::toTypedDict<std::string, at::Tensor>(torch::pickle_load(bytes).toGenericDict());
}

/// Launches `scenario` on `world` ranks; every rank must exit 0 and write its results.
void launch_and_load(const std::string& scenario, int world, Launched& launched,
                     std::vector<Tensors>& ranks) {
  launched = launch(scenario, world);
  for (const auto& exit : launched.exits) {
    ASSERT_EQ(exit.exit_code, 0) << "rank " << exit.rank << " failed (timed out: "
                                 << exit.timed_out << ")";
  }
  for (int r = 0; r < world; ++r) ranks.push_back(load_rank(launched, r));
}

void expect_bit_equal(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  ASSERT_EQ(a.scalar_type(), b.scalar_type()) << what;
  EXPECT_TRUE(at::equal(a, b)) << what << ": " << a << " vs " << b;
}

/// Single process: calibration on all shards, as the reference of the distributed run.
Tensors single_process_calibration() {
  Net net = make_net();
  prepare(*net, calibration_mapping());
  calibrate_on(net, calibration_batches());
  return calibration_state(net);
}

/// Each rank's shard calibrated alone (for the moving-average rule).
std::vector<Tensors> per_shard_calibration(int world) {
  std::vector<Tensors> result;
  for (int r = 0; r < world; ++r) {
    Net net = make_net();
    prepare(*net, calibration_mapping());
    calibrate_on(net, shard(calibration_batches(), r, world));
    result.push_back(calibration_state(net));
  }
  return result;
}

void check_calibrate_and_train(int world) {
  at::set_num_threads(1);
  Launched launched;
  std::vector<Tensors> ranks;
  launch_and_load("calibrate_and_train", world, launched, ranks);
  if (::testing::Test::HasFatalFailure()) return;

  // Every tensor bit-identical across ranks.
  for (int r = 1; r < world; ++r) {
    ASSERT_EQ(ranks[r].size(), ranks[0].size());
    for (const auto& item : ranks[0]) {
      expect_bit_equal(ranks[r].at(item.key()), item.value(),
                       item.key() + " on rank " + std::to_string(r) + " vs rank 0");
    }
  }
  EXPECT_EQ(ranks[0].at("replica_difference_is_empty").item<int64_t>(), 1);

  // Calibration against one process on all shards.
  const Tensors single = single_process_calibration();
  const Tensors& mine = ranks[0];
  for (const std::string q : {"fc2.input_quantizer", "fc2.weight_quantizer"}) {
    expect_bit_equal(mine.at("calib/" + q + "/scale"), single.at(q + "/scale"), q + " scale");
    expect_bit_equal(mine.at("calib/" + q + "/zero_point"), single.at(q + "/zero_point"),
                     q + " zero point");
    expect_bit_equal(mine.at("calib/" + q + ".observer/min_val"),
                     single.at(q + ".observer/min_val"), q + " min");
    expect_bit_equal(mine.at("calib/" + q + ".observer/max_val"),
                     single.at(q + ".observer/max_val"), q + " max");
  }
  for (const std::string q : {"fc1.input_quantizer.observer", "fc1.weight_quantizer.observer"}) {
    expect_bit_equal(mine.at("calib/" + q + "/min_val"), single.at(q + "/min_val"), q + " min");
    expect_bit_equal(mine.at("calib/" + q + "/max_val"), single.at(q + "/max_val"), q + " max");
    // Same grid width as the single process: rank 0's first batch is its first batch, and
    // both grew to the same range.
    expect_bit_equal(mine.at("calib/" + q + "/bin_width"), single.at(q + "/bin_width"),
                     q + " bin width");
    EXPECT_NEAR(mine.at("calib/" + q + "/count").item<double>(),
                single.at(q + "/count").item<double>(), 1e-6)
        << q;
    // Counts another rank binned on its own grid were spread over the common grid: the
    // searched amax lies within one bin of the single process's.
    // amax is float32: one bin plus a few float32 ulps of amax.
    const auto amax = mine.at("calib/" + q + "/amax").to(at::kDouble);
    const auto amax_single = single.at(q + "/amax").to(at::kDouble);
    auto amax_gap = (amax - amax_single).abs();
    auto width = single.at(q + "/bin_width").reshape(amax_gap.sizes());
    auto allowed = width + 4 * kFloat32Epsilon * at::maximum(amax, amax_single);
    EXPECT_TRUE((amax_gap <= allowed).all().item<bool>())
        << q << ": amax gap " << amax_gap << " vs bin width " << width;
    std::cout << "[ distributed ] " << world << " ranks: " << q << " amax gap to one process: "
              << (amax_gap / width).max().item<double>() << " bins\n";
  }
  // Moving averages: the mean over ranks of each rank's own average (two ranks: exactly
  // merge()'s (a + b) / 2; three: the all-reduce may add in another order, a few ulps).
  const auto shards = per_shard_calibration(world);
  for (const std::string q : {"fc3.input_quantizer.observer", "fc3.weight_quantizer.observer"}) {
    for (const std::string field : {"min_val", "max_val"}) {
      at::Tensor sum = shards[0].at(q + "/" + field).clone();
      for (int r = 1; r < world; ++r) sum += shards[r].at(q + "/" + field);
      const at::Tensor expected = sum / static_cast<float>(world);
      const at::Tensor got = mine.at("calib/" + q + "/" + field);
      if (world == 2) {
        expect_bit_equal(got, expected, q + " " + field);
      } else {
        EXPECT_TRUE(at::allclose(got, expected, 1e-6, 1e-7)) << q << " " << field << ": " << got
                                                             << " vs " << expected;
      }
    }
  }

  // QAT with frozen (synced) ranges against one process on the concatenated batches.
  Net net = make_net();
  prepare(*net, qat_mapping());
  calibrate_on(net, calibration_batches());
  torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(kLearningRate));
  for (int64_t step = 0; step < kQatSteps; ++step) {
    auto [x, y] = qat_batch(step, world);
    qat_step(net, optimizer, x, y, nullptr);
  }
  const Tensors reference = model_state(net, "qat/");
  double worst = 0;
  for (const auto& item : reference) {
    const at::Tensor got = mine.at(item.key());
    ASSERT_EQ(got.sizes(), item.value().sizes()) << item.key();
    if (!at::isFloatingType(got.scalar_type())) {
      expect_bit_equal(got, item.value(), item.key());
      continue;
    }
    const double gap = (got - item.value()).abs().max().item<double>();
    worst = std::max(worst, gap);
    // Float32 sums in another order (per-rank means, then their mean): a few ulps of values
    // below 1 per step (measured: 0 for 2 ranks, 1.5e-8 for 3).
    EXPECT_LE(gap, 1e-6) << item.key();
  }
  std::cout << "[ distributed ] " << world << " ranks: largest parameter / buffer gap to one "
            << "process after " << kQatSteps << " QAT steps: " << worst << "\n";
  remove_result_dir(launched.dir);
}

}  // namespace

TEST(DistributedWorker, Run) {
  const std::string scenario = env("TQUANT_DIST_SCENARIO");
  if (scenario.empty()) GTEST_SKIP() << "runs only as a rank started by the distributed tests";
  at::set_num_threads(1);
  const std::string out_dir = env("TQUANT_DIST_OUT");
  if (scenario == "calibrate_and_train") {
    run_calibrate_and_train(out_dir);
  } else if (scenario == "histogram_grids") {
    run_histogram_grids(out_dir);
  } else if (scenario == "mismatch") {
    run_mismatch(out_dir);
  } else if (scenario == "dies") {
    run_rank_leaves(out_dir, Leave::kAfterGroup);
  } else if (scenario == "stalls") {
    run_rank_leaves(out_dir, Leave::kStall);
  } else if (scenario == "never_arrives") {
    run_rank_leaves(out_dir, Leave::kBeforeGroup);
  } else {
    FAIL() << "unknown scenario " << scenario;
  }
}

TEST(Distributed, TwoRanksCalibrateLikeOneProcessAndTrainIdenticalReplicas) {
  check_calibrate_and_train(2);
}

TEST(Distributed, ThreeRanksCalibrateLikeOneProcessAndTrainIdenticalReplicas) {
  check_calibrate_and_train(3);
}

/// Gap between two amax tensors in bins of `width` (per channel), the largest one.
double gap_in_bins(const at::Tensor& a, const at::Tensor& b, const at::Tensor& width) {
  auto w = width.to(at::kDouble).reshape(a.sizes());
  return ((a.to(at::kDouble) - b.to(at::kDouble)).abs() / w.clamp_min(1e-30)).max().item<double>();
}

void check_histogram_grids(int world) {
  at::set_num_threads(1);
  Launched launched;
  std::vector<Tensors> ranks;
  launch_and_load("histogram_grids", world, launched, ranks);
  if (::testing::Test::HasFatalFailure()) return;
  const auto all = grid_batches(world);
  for (const auto& c : grid_cases()) {
    GridNet one = calibrated_grid_net(c, all, nullptr);
    const Tensors single = grid_state(one, c);
    // Streaming: each rank's own bin widths (its shard alone), for the percentile bound.
    std::vector<Tensors> own;
    if (c.grid == HistogramGrid::kStreaming) {
      for (int r = 0; r < world; ++r) {
        GridNet alone = calibrated_grid_net(c, shard(all, r, world), nullptr);
        own.push_back(grid_state(alone, c));
      }
    }
    for (const auto& q : grid_quantizers()) {
      const at::Tensor width = single.at(c.name + "/" + q + "/bin_width");
      for (const auto& m : grid_methods()) {
        const std::string key = c.name + "/" + q + "/" + m.name + "/";
        for (int r = 0; r < world; ++r) {  // every rank holds the same parameters
          for (const std::string field : {"amax", "scale", "zero_point"}) {
            expect_bit_equal(ranks[r].at(key + field), ranks[0].at(key + field),
                             key + field + " on rank " + std::to_string(r));
          }
        }
        const Tensors& mine = ranks[0];
        if (c.grid == HistogramGrid::kShared) {
          for (const std::string field : {"amax", "scale", "zero_point"}) {
            expect_bit_equal(mine.at(key + field), single.at(key + field),
                             std::to_string(world) + " ranks vs one process: " + key + field);
          }
          continue;
        }
        const double bins = gap_in_bins(mine.at(key + "amax"), single.at(key + "amax"), width);
        std::cout << "[ distributed ] " << world << " ranks, " << key << "amax gap to one process: "
                  << bins << " bins\n";
        if (m.method == CalibrationMethod::kMax) {
          expect_bit_equal(mine.at(key + "amax"), single.at(key + "amax"), key + "amax");
        } else if (m.method == CalibrationMethod::kPercentile) {
          // A rank's bin of width w_r spreads over the common bins it overlaps, so mass moves
          // by less than w_r and the percentile's bin by at most ceil(w_r / w) + 1.
          double ratio = 0;
          for (int r = 0; r < world; ++r) {
            const at::Tensor w_r = own[r].at(c.name + "/" + q + "/bin_width").to(at::kDouble);
            ratio = std::max(ratio, (w_r / width.to(at::kDouble).clamp_min(1e-30)).max().item<double>());
          }
          EXPECT_LE(bins, std::ceil(ratio) + 1.0 + 1e-3) << key << " (w_r / w up to " << ratio << ")";
        }
      }
    }
  }
  remove_result_dir(launched.dir);
}

TEST(Distributed, TwoRanksSharedGridHistogramsEqualOneProcessForEveryMethod) {
  check_histogram_grids(2);
}

TEST(Distributed, ThreeRanksSharedGridHistogramsEqualOneProcessForEveryMethod) {
  check_histogram_grids(3);
}

TEST(Distributed, MismatchedModelsFailNamingTheFirstDifferenceThenAFreshGroupWorks) {
  const auto launched = launch("mismatch", 2);
  for (const auto& exit : launched.exits) ASSERT_EQ(exit.exit_code, 0) << "rank " << exit.rank;
  for (int r = 0; r < 2; ++r) {
    const std::string text = read_text(launched.dir + "/rank" + std::to_string(r) + ".txt");
    EXPECT_NE(text.find("the models differ between ranks"), std::string::npos) << text;
    EXPECT_NE(text.find("parameter fc2.weight Float [5, 17]' on rank 0 but 'parameter fc2.weight "
                        "Float [6, 17]' on rank 1"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("\nsynced 6"), std::string::npos) << text;
  }
  remove_result_dir(launched.dir);
}

/// Rank 0's error and how long it took to come, when rank 1 does not take part.
void expect_rank0_fails_in_time(const std::string& scenario, const std::string& expected) {
  const auto launched = launch(scenario, 2);
  EXPECT_EQ(launched.exits[1].exit_code, 3);
  ASSERT_EQ(launched.exits[0].exit_code, 0);
  std::istringstream text(read_text(launched.dir + "/rank0.txt"));
  double seconds = 0;
  text >> seconds;
  const std::string message((std::istreambuf_iterator<char>(text)),
                            std::istreambuf_iterator<char>());
  EXPECT_NE(message.find(expected), std::string::npos) << message;
  // The configured timeout plus slack for a busy machine; a hang would reach the launcher's
  // 120 s limit.
  EXPECT_LT(seconds, std::chrono::duration<double>(kFaultTimeout).count() + 10.0) << message;
  remove_result_dir(launched.dir);
}

TEST(Distributed, RankThatDiesMakesTheOthersFailWithinTheTimeout) {
  expect_rank0_fails_in_time("dies", "collective failed on rank 0 of 2");
}

TEST(Distributed, RankThatStallsMakesTheOthersFailWithinTheTimeout) {
  expect_rank0_fails_in_time("stalls", "collective failed on rank 0 of 2");
}

TEST(Distributed, RankThatNeverArrivesMakesTheOthersFailWithinTheTimeout) {
  expect_rank0_fails_in_time("never_arrives", "could not build group");
}
