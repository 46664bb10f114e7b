// Cost of tquant's observers and range searches, against the work they serve, in one run.
//
//   a) observe() on the output of a BERT-sized Linear ([4096, 768] input, i.e. batch 32 x
//      seq 128; 768 -> 3072 and 768 -> 768) versus the Linear forward itself, per tensor and
//      per channel (axis = last dim), for HistogramObserver and, as reference, the min-max
//      observers. Goal: observe / forward <= 1.5.
//   b) amax_entropy and amax_mse on one 2048-bin histogram of |x| of heavy-tailed data, and
//      NVIDIA ModelOpt's Python _compute_amax_entropy / _compute_amax_mse on the same histogram
//      (bench/modelopt_search_time.py, run through a Python that has modelopt). Goal: <= 5 ms
//      per search.
//
// Timings: std::chrono::steady_clock, warm-up calls first, then the median of N repetitions
// (min and max shown to judge noise). CPU only, torch::set_num_threads(2) unless --threads.
// docs/benchmarks.md explains the floors, the predictions and the last measured table.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <torch/headeronly/version.h>
#include <torch/torch.h>

#include "tquant/tquant.h"

namespace {

struct Args {
  int threads = 2;
  int warmup = 3;
  int reps = 15;
  int search_reps = 31;
  int modelopt_reps = 3;
  bool run_python = true;
  std::string python;         // empty: TQUANT_PYTHON, then the project venv
  std::string histogram_out;  // empty: <temp dir>/tquant_bench_histogram.txt
};

void print_usage() {
  std::cout
      << "usage: tquant_observer_bench [options]\n"
         "  --threads N        intra-op threads (default 2)\n"
         "  --reps N           timed repetitions for part a (default 15)\n"
         "  --warmup N         untimed calls before timing (default 3)\n"
         "  --search-reps N    timed repetitions of each C++ range search (default 31)\n"
         "  --modelopt-reps N  timed repetitions of each ModelOpt search (default 3)\n"
         "  --python PATH      Python with torch, scipy and nvidia-modelopt\n"
         "                     (default: $TQUANT_PYTHON, else the project venv if present:\n"
         "                     " TQUANT_BENCH_DEFAULT_PYTHON ")\n"
         "  --no-python        skip the ModelOpt comparison\n"
         "  --histogram-out F  where to write the histogram of part b (default: temp dir)\n";
}

Args parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "missing value after " << flag << "\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (flag == "--threads") args.threads = std::stoi(value());
    else if (flag == "--reps") args.reps = std::stoi(value());
    else if (flag == "--warmup") args.warmup = std::stoi(value());
    else if (flag == "--search-reps") args.search_reps = std::stoi(value());
    else if (flag == "--modelopt-reps") args.modelopt_reps = std::stoi(value());
    else if (flag == "--python") args.python = value();
    else if (flag == "--no-python") args.run_python = false;
    else if (flag == "--histogram-out") args.histogram_out = value();
    else if (flag == "-h" || flag == "--help") {
      print_usage();
      std::exit(0);
    } else {
      std::cerr << "unknown option " << flag << "\n";
      print_usage();
      std::exit(2);
    }
  }
  return args;
}

// ---------------------------------------------------------------------------------------------
// Timing

struct Timing {
  double median_ms = 0.0;
  double min_ms = 0.0;
  double max_ms = 0.0;
};

Timing summarize(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  Timing t;
  const size_t n = samples.size();
  t.median_ms = n % 2 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2]);
  t.min_ms = samples.front();
  t.max_ms = samples.back();
  return t;
}

Timing time_ms(const std::function<void()>& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> samples;
  samples.reserve(reps);
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    const auto stop = std::chrono::steady_clock::now();
    samples.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
  }
  return summarize(std::move(samples));
}

/// Times several functions round-robin (one call of each per repetition), so a slow phase of
/// the machine (other jobs, hypervisor steal) hits all of them alike and their ratios hold.
std::vector<Timing> time_interleaved_ms(const std::vector<std::function<void()>>& fns, int warmup,
                                        int reps) {
  for (int i = 0; i < warmup; ++i) {
    for (const auto& fn : fns) fn();
  }
  std::vector<std::vector<double>> samples(fns.size());
  for (int i = 0; i < reps; ++i) {
    for (size_t k = 0; k < fns.size(); ++k) {
      const auto start = std::chrono::steady_clock::now();
      fns[k]();
      const auto stop = std::chrono::steady_clock::now();
      samples[k].push_back(std::chrono::duration<double, std::milli>(stop - start).count());
    }
  }
  std::vector<Timing> timings;
  for (auto& s : samples) timings.push_back(summarize(std::move(s)));
  return timings;
}

std::string fmt(double value, int precision = 2) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(precision) << value;
  return out.str();
}

std::string fmt_timing(const Timing& t, int precision = 2) {
  return fmt(t.median_ms, precision) + " [" + fmt(t.min_ms, precision) + ".." +
         fmt(t.max_ms, precision) + "]";
}

// ---------------------------------------------------------------------------------------------
// Machine

std::string read_first_line_with(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return line;
  }
  return "";
}

bool cpu_has_flag(const std::string& flag) {
  std::string flags = read_first_line_with("/proc/cpuinfo", "flags");
  std::istringstream words(flags);
  std::string word;
  while (words >> word) {
    if (word == flag) return true;
  }
  return false;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

/// Aggregate CPU time from /proc/stat: (steal, total) in clock ticks.
std::pair<double, double> cpu_steal_and_total() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;
  double value = 0.0, total = 0.0, steal = 0.0;
  for (int field = 0; field < 8 && in >> value; ++field) {  // user .. steal
    total += value;
    if (field == 7) steal = value;
  }
  return {steal, total};
}

void print_machine(const Args& args) {
  std::string model = read_first_line_with("/proc/cpuinfo", "model name");
  const auto colon = model.find(':');
  if (colon != std::string::npos) model = model.substr(colon + 2);
  std::cout << "machine\n"
            << "  cpu:           " << (model.empty() ? "(unknown)" : model) << "\n"
            << "  flags:         avx2 " << (cpu_has_flag("avx2") ? "yes" : "no")
            << ", avx512f " << (cpu_has_flag("avx512f") ? "yes" : "no") << ", avx512_vnni "
            << (cpu_has_flag("avx512_vnni") ? "yes" : "no") << "\n"
            << "  torch:         " << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << "."
            << TORCH_VERSION_PATCH << " (MKL " << (at::hasMKL() ? "yes" : "no") << ", oneDNN "
            << (at::hasMKLDNN() ? "yes" : "no") << ")\n"
            << "  threads:       " << at::get_num_threads() << " intra-op (asked "
            << args.threads << "), " << std::thread::hardware_concurrency()
            << " hardware threads\n"
            << "  load average:  " << load_average() << " (at start)\n"
            << "  timing:        steady_clock, " << args.warmup << " warm-up calls, median of "
            << args.reps << " [min..max] in ms\n\n";
}

// ---------------------------------------------------------------------------------------------
// a) observers versus the forward pass they watch

struct ObserverCase {
  std::string name;
  std::function<at::Tensor(const at::Tensor&)> observe;
};

std::vector<ObserverCase> make_observers() {
  using namespace tquant;
  const auto per_tensor = QuantSpec();
  const auto per_channel = QuantSpec().granularity(Granularity::kPerChannel).axis(-1);
  auto minmax = MinMaxObserver(MinMaxObserverOptions(per_tensor));
  auto minmax_pc = PerChannelMinMaxObserver(MinMaxObserverOptions(per_channel));
  auto hist = HistogramObserver(HistogramObserverOptions(per_tensor));
  auto hist_pc = HistogramObserver(HistogramObserverOptions(per_channel));
  auto observe_with = [](auto observer) {
    return [p = observer.ptr()](const at::Tensor& y) { return p->observe(y); };
  };
  return {
      {"MinMaxObserver per-tensor", observe_with(minmax)},
      {"PerChannelMinMaxObserver axis -1", observe_with(minmax_pc)},
      {"HistogramObserver per-tensor", observe_with(hist)},
      {"HistogramObserver per-channel axis -1", observe_with(hist_pc)},
  };
}

/// The ATen calls HistogramObserver::observe makes (read from src/histogram_observer.cpp and
/// src/qparams.cpp), timed one by one, next to cheaper formulations of the same result.
void print_breakdown(const at::Tensor& y, const Args& args) {
  const int64_t bins = 2048;
  const int64_t channels = y.size(1);
  auto abs_y = y.abs();
  const double amax = abs_y.max().item<double>();
  auto width = at::full({channels}, amax / bins, at::kDouble);
  auto rows = y.movedim(1, 0).reshape({channels, -1});
  auto abs_rows = rows.abs();
  auto safe_width = width.to(at::kFloat).unsqueeze(1);
  auto index = at::floor(abs_rows / safe_width).clamp(0, bins - 1).to(at::kLong);
  auto flat_index = (index + (at::arange(channels, index.options()) * bins).unsqueeze(1)).flatten();
  auto hist = at::bincount(flat_index, {}, channels * bins);
  auto counts = at::zeros({channels, bins}, at::kDouble);
  auto inv_width = (1.0 / width).to(at::kFloat);

  struct Step {
    std::string name;
    std::function<void()> fn;
  };
  const std::vector<Step> steps = {
      {"reference: y.clone() (read + write y)", [&] { (void)y.clone(); }},
      {"per-tensor: aminmax(y)", [&] { (void)at::aminmax(y); }},
      {"per-tensor: y.abs()", [&] { (void)y.abs(); }},
      {"per-tensor: histc(|y|, 2048)", [&] { (void)at::histc(abs_y, bins, 0.0, amax); }},
      {"per-channel: aminmax(rows, 1)", [&] { (void)at::aminmax(rows, 1); }},
      {"per-channel: rows.abs()", [&] { (void)rows.abs(); }},
      {"per-channel: floor(|rows| / w).clamp", [&] {
         (void)at::floor(abs_rows / safe_width).clamp(0, bins - 1);
       }},
      {"per-channel: .to(kLong)", [&] { (void)abs_rows.to(at::kLong); }},
      {"per-channel: index + offset, flatten (copy)", [&] {
         (void)(index + (at::arange(channels, index.options()) * bins).unsqueeze(1)).flatten();
       }},
      {"per-channel: bincount(C * 2048 bins)",
       [&] { (void)at::bincount(flat_index, {}, channels * bins); }},
      {"per-channel: counts.add_(hist as double)",
       [&] { counts.add_(hist.to(at::kDouble).reshape({channels, bins})); }},
      {"alternative: aminmax(y, 0) (no transpose)", [&] { (void)at::aminmax(y, 0); }},
      {"alternative: amin(rows, 1), amax(rows, 1)", [&] {
         (void)at::amin(rows, 1);
         (void)at::amax(rows, 1);
       }},
      {"contrast: same bins counted in [N, C] order", [&] {
         // Same bins from y's own layout (no flatten copy), but consecutive increments now hit
         // different channels' histograms, spread over C * 2048 counters.
         auto idx = (abs_y * inv_width).floor_().clamp_(0, bins - 1).to(at::kLong);
         idx += at::arange(channels, idx.options()) * bins;
         counts.add_(at::bincount(idx.view({-1}), {}, channels * bins).view({channels, bins}));
       }},
  };
  std::cout << "  where the time goes: the ATen calls of HistogramObserver::observe() on y "
            << y.sizes() << ", one by one\n"
            << "  (per channel, axis -1: rows = y.movedim(1, 0).reshape({C, -1}) is a transposed"
               " view of y)\n";
  for (const auto& step : steps) {
    const auto t = time_ms(step.fn, args.warmup, args.reps);
    std::cout << "    " << std::left << std::setw(46) << step.name << std::right << std::setw(22)
              << fmt_timing(t) << " ms\n";
  }
}

void bench_observers(const Args& args) {
  std::cout << "a) observe() cost relative to the Linear forward it watches "
               "(input [4096, 768] float32 = batch 32 x seq 128)\n\n";
  torch::manual_seed(0);
  const int64_t rows = 4096;
  const int64_t in_features = 768;
  auto x = torch::randn({rows, in_features});

  for (int64_t out_features : {int64_t{3072}, int64_t{768}}) {
    auto w = torch::randn({out_features, in_features}) / std::sqrt(double(in_features));
    auto b = torch::randn({out_features}) * 0.02;
    at::Tensor y;
    {
      torch::NoGradGuard no_grad;
      y = at::linear(x, w, b);
    }
    // Forward and every observer, timed round-robin; each observer sees y once untimed first
    // (allocates the histogram and fixes the bin width), then runs in steady state.
    torch::NoGradGuard no_grad;
    const auto observers = make_observers();
    std::vector<std::function<void()>> fns = {[&] { (void)at::linear(x, w, b); }};
    for (const auto& obs : observers) {
      obs.observe(y);
      fns.push_back([&] { (void)obs.observe(y); });
    }
    const auto timings = time_interleaved_ms(fns, args.warmup, args.reps);
    const Timing& forward = timings[0];
    const double gflop = 2.0 * rows * in_features * out_features * 1e-9;
    const double out_mb = y.numel() * 4.0 / 1e6;
    std::cout << "  Linear " << in_features << " -> " << out_features << ": forward "
              << fmt_timing(forward) << " ms (" << fmt(gflop / (forward.median_ms * 1e-3), 1)
              << " GFLOP/s); output " << y.sizes() << " = " << fmt(out_mb, 1) << " MB\n";
    std::cout << "    " << std::left << std::setw(40) << "observer" << std::right
              << std::setw(26) << "observe ms" << std::setw(16) << "observe/fwd"
              << std::setw(10) << "goal\n";
    for (size_t k = 0; k < observers.size(); ++k) {
      const Timing& t = timings[k + 1];
      const double ratio = t.median_ms / forward.median_ms;
      const bool histogram = observers[k].name.rfind("Histogram", 0) == 0;
      std::cout << "    " << std::left << std::setw(40) << observers[k].name << std::right
                << std::setw(26) << fmt_timing(t) << std::setw(15) << fmt(ratio) << "x"
                << std::setw(10) << (histogram ? (ratio <= 1.5 ? "met" : "MISSED") : "-")
                << "\n";
    }
    if (out_features == 3072) print_breakdown(y, args);
    std::cout << "\n";
  }
}

// ---------------------------------------------------------------------------------------------
// b) range searches on one 2048-bin histogram, against ModelOpt's Python

struct SearchHistogram {
  at::Tensor counts;  // [2048] float64
  double bin_width = 0.0;
  tquant::HistogramView view() const {
    return {counts.data_ptr<double>(), counts.numel(), bin_width};
  }
};

/// |x| of 2^22 Student-t (4 degrees of freedom) samples, collected by HistogramObserver exactly
/// as calibration would: one batch, 2048 bins over [0, max |x|].
SearchHistogram make_histogram() {
  torch::manual_seed(1);
  const int64_t n = int64_t{1} << 22;
  const double dof = 4.0;
  auto z = torch::randn({n}, torch::kDouble);
  auto chi2 = at::_standard_gamma(at::full({n}, dof / 2.0, torch::kDouble)) * 2.0;
  auto t = (z / at::sqrt(chi2 / dof)).to(torch::kFloat);
  auto observer = tquant::HistogramObserver(tquant::HistogramObserverOptions());
  observer->observe(t);
  SearchHistogram hist;
  hist.counts = observer->counts[0].contiguous().clone();
  hist.bin_width = observer->bin_width[0].item<double>();
  return hist;
}

void write_histogram(const SearchHistogram& hist, const std::string& path) {
  std::ofstream out(path);
  out << "# tquant histogram of |x|: bin i covers [i * bin_width, (i + 1) * bin_width)\n";
  out << "num_bins " << hist.counts.numel() << "\n";
  out << std::setprecision(17) << "bin_width " << hist.bin_width << "\n";
  const double* c = hist.counts.data_ptr<double>();
  for (int64_t i = 0; i < hist.counts.numel(); ++i) out << c[i] << "\n";
  if (!out) throw std::runtime_error("could not write " + path);
}

std::string find_python(const Args& args, std::string* source) {
  if (!args.python.empty()) {
    *source = "--python";
    return args.python;
  }
  if (const char* env = std::getenv("TQUANT_PYTHON"); env != nullptr && *env != '\0') {
    *source = "TQUANT_PYTHON";
    return env;
  }
  if (std::filesystem::exists(TQUANT_BENCH_DEFAULT_PYTHON)) {
    *source = "project venv";
    return TQUANT_BENCH_DEFAULT_PYTHON;
  }
  return "";
}

/// Runs bench/modelopt_search_time.py and returns its "key value" lines.
std::map<std::string, std::string> run_modelopt(const std::string& python,
                                                const std::string& histogram_path,
                                                const Args& args, std::string* error) {
  const std::string script = std::string(TQUANT_BENCH_DIR) + "/modelopt_search_time.py";
  const std::string log = histogram_path + ".stderr.txt";
  const std::string command = "'" + python + "' '" + script + "' --histogram '" +
                              histogram_path + "' --reps " + std::to_string(args.modelopt_reps) +
                              " --threads " + std::to_string(args.threads) + " 2>'" + log + "'";
  std::map<std::string, std::string> result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    *error = "could not start: " + command;
    return result;
  }
  char buffer[4096];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) {
    std::istringstream line(buffer);
    std::string key, value;
    if (line >> key && std::getline(line >> std::ws, value)) result[key] = value;
  }
  const int status = pclose(pipe);
  if (status != 0 || result.count("entropy_ms") == 0) {
    std::ifstream err(log);
    std::stringstream text;
    text << err.rdbuf();
    std::string tail = text.str();
    if (tail.size() > 2000) tail = "..." + tail.substr(tail.size() - 2000);
    *error = "the script failed (exit status " + std::to_string(status) + "):\n  " + command +
             "\n" + tail;
  }
  return result;
}

void bench_searches(const Args& args) {
  std::cout << "b) range search on one 2048-bin histogram of |x| (2^22 Student-t(4) samples)\n\n";
  const auto hist = make_histogram();
  const auto view = hist.view();
  // int8 symmetric, as ModelOpt's calls with num_bits=8, unsigned=False: 128 entropy levels;
  // MSE with 127 steps per amax (ModelOpt's fake_tensor_quant defaults to narrow range).
  const int64_t levels = 128;
  const double mse_steps = 127.0;

  double entropy_amax = 0.0, mse_amax = 0.0, percentile_amax = 0.0;
  const auto entropy = time_ms([&] { entropy_amax = tquant::amax_entropy(view, levels); },
                               args.warmup, args.search_reps);
  const auto mse = time_ms([&] { mse_amax = tquant::amax_mse(view, mse_steps); }, args.warmup,
                           args.search_reps);
  const auto percentile = time_ms(
      [&] { percentile_amax = tquant::amax_percentile(view, 99.99); }, args.warmup,
      args.search_reps);

  std::string path = args.histogram_out;
  if (path.empty()) {
    path = (std::filesystem::temp_directory_path() / "tquant_bench_histogram.txt").string();
  }
  write_histogram(hist, path);
  std::cout << "  histogram: " << view.num_bins << " bins of width " << view.bin_width
            << ", written to " << path << "\n";

  std::map<std::string, std::string> modelopt;
  std::string python_note;
  if (!args.run_python) {
    python_note = "skipped (--no-python)";
  } else {
    std::string source;
    const std::string python = find_python(args, &source);
    if (python.empty()) {
      python_note = "skipped: no Python given. Pass --python PATH or set TQUANT_PYTHON to a "
                    "Python with torch, scipy and nvidia-modelopt, or run by hand:\n    python " +
                    std::string(TQUANT_BENCH_DIR) + "/modelopt_search_time.py --histogram " +
                    path;
    } else {
      std::cout << "  ModelOpt: " << python << " (from " << source << "), "
                << args.modelopt_reps << " timed calls per search after 1 warm-up...\n"
                << std::flush;
      std::string error;
      modelopt = run_modelopt(python, path, args, &error);
      if (!error.empty()) python_note = "skipped: " + error;
    }
  }
  if (!python_note.empty()) std::cout << "  ModelOpt comparison " << python_note << "\n";
  if (modelopt.count("modelopt_version")) {
    std::cout << "  ModelOpt " << modelopt["modelopt_version"] << " ("
              << modelopt["import"] << "), numpy " << modelopt["numpy_version"] << ", scipy "
              << modelopt["scipy_version"] << ", torch " << modelopt["torch_version"] << "\n";
  }
  std::cout << "\n    " << std::left << std::setw(12) << "search" << std::right << std::setw(24)
            << "tquant ms" << std::setw(10) << "goal" << std::setw(26) << "ModelOpt ms"
            << std::setw(12) << "speed-up" << std::setw(14) << "tquant amax" << std::setw(14)
            << "ModelOpt amax" << std::setw(8) << "bins\n";
  auto row = [&](const std::string& name, const Timing& t, double amax, const std::string& key) {
    std::cout << "    " << std::left << std::setw(12) << name << std::right << std::setw(24)
              << fmt_timing(t, 3) << std::setw(10) << (t.median_ms <= 5.0 ? "met" : "MISSED");
    if (modelopt.count(key + "_ms")) {
      std::istringstream ms(modelopt[key + "_ms"]);
      double median = 0, lo = 0, hi = 0;
      ms >> median >> lo >> hi;
      const double their_amax = std::stod(modelopt[key + "_amax"]);
      std::cout << std::setw(26) << (fmt(median, 1) + " [" + fmt(lo, 1) + ".." + fmt(hi, 1) + "]")
                << std::setw(11) << fmt(median / t.median_ms, 0) << "x" << std::setw(14)
                << fmt(amax, 5) << std::setw(14) << fmt(their_amax, 5) << std::setw(7)
                << fmt((amax - their_amax) / view.bin_width, 1) << "\n";
    } else {
      std::cout << std::setw(26) << "-" << std::setw(12) << "-" << std::setw(14) << fmt(amax, 5)
                << "\n";
    }
  };
  row("entropy", entropy, entropy_amax, "entropy");
  row("mse", mse, mse_amax, "mse");
  std::cout << "    " << std::left << std::setw(12) << "percentile" << std::right << std::setw(24)
            << fmt_timing(percentile, 3) << std::setw(10) << "-" << std::setw(26) << "-"
            << std::setw(12) << "-" << std::setw(14) << fmt(percentile_amax, 5) << "\n";
  std::cout << "    (bins: (tquant - ModelOpt) amax in bin widths; the design asks for at most "
               "one. ModelOpt's mse row is its source with pytorch-quantization's quantizer.)\n";
  if (modelopt.count("mse_shipped_ms")) {
    std::istringstream ms(modelopt["mse_shipped_ms"]);
    double median = 0;
    ms >> median;
    std::cout << "    ModelOpt's installed _compute_amax_mse as shipped: " << fmt(median, 1)
              << " ms, amax " << modelopt["mse_shipped_amax"]
              << " (num_bits lands in fake_tensor_quant's bias slot; not comparable)\n";
  }
  std::cout << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse_args(argc, argv);
  torch::set_num_threads(args.threads);
  const auto [steal_start, total_start] = cpu_steal_and_total();
  print_machine(args);
  bench_observers(args);
  bench_searches(args);
  const auto [steal_end, total_end] = cpu_steal_and_total();
  const double total = total_end - total_start;
  std::cout << "load average at end: " << load_average() << "; hypervisor steal during the run: "
            << fmt(total > 0 ? 100.0 * (steal_end - steal_start) / total : 0.0, 1)
            << "% of CPU time (timings are only comparable between quiet runs)\n";
  return 0;
}
