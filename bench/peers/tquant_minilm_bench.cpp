// tquant's side of the peer benchmark (bench/peers/peer_bench.py starts and drives it): loads the
// BERT example's all-MiniLM-L6-v2 encoder (examples/bert/lib, no pooler, no head) three times,
//   tquant_fp32     the example's float model as it is;
//   tquant_int8     the BERT demo's mapping (examples/bert/demo.cpp): encoder Linears and both
//                   attention products static int8, keys int8 with per-token dynamic scales, word
//                   embeddings weight-only int8; calibrated on real training reviews, converted;
//   tquant_dynamic  tquant::quantize_dynamic (every Linear dynamic int8, per-token scales);
// then serves one command per line on stdin and answers one line on stdout, "ok ..." or
// "error <message>", so that the driver can interleave these models with ONNX Runtime and
// PyTorch in the same rounds:
//   input <name> <path>                     reads a token-id file (below) as input <name>
//   time <system> <input> <reps>            -> ok <ms of each forward, space separated>
//   embed <system> <input> <batch> <path>   -> ok <rows> <dim>; writes the mean-pooled,
//                                             L2-normalized sentence embeddings, float32 rows
//   profile <system> <input> <runs> <path>  -> ok <ms per forward>; writes a per-op profile of
//                                             the forward (op_profile.h) as a markdown table
//   systems                                 -> ok <names>
//   quit
// Token-id file (text): "rows cols", then `rows` lines of `cols` input ids, then `rows` lines of
// `cols` attention-mask values (0/1). Token types are all 0.
//
//   tquant_minilm_bench --model-dir DIR --data-dir DIR [--threads 2] [--calibration-reviews 256]
//                       [--calibrator mse] [--seed 0]
//
// Progress goes to stderr. Not a test: see docs/benchmarks.md, "Peers on CPU".

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bert_checkpoint.h"
#include "bert_config.h"
#include "bert_model.h"
#include "demo_data.h"
#include "demo_mapping.h"
#include "fine_foods.h"
#include "latency.h"
#include "op_profile.h"
#include "tquant/histogram_search.h"
#include "tquant/qconfig.h"
#include "tquant/qconfig_mapping.h"
#include "tquant/quantize.h"
#include "wordpiece_tokenizer.h"

namespace {

struct Options {
  std::string model_dir;
  std::string data_dir;
  int threads = 2;
  int64_t calibration_reviews = 256;
  int64_t calibration_batch = 32;
  int64_t seq_len = 128;
  /// The demo's full runs choose MSE on validation embedding error (docs/bert.md).
  std::string calibrator = "mse";
  uint64_t seed = 0;
};

const char* kUsage =
    "usage: tquant_minilm_bench --model-dir DIR --data-dir DIR [--threads N]\n"
    "                           [--calibration-reviews N] [--calibrator max|percentile|entropy|mse]\n"
    "                           [--seed N]\n"
    "then commands on stdin: input NAME PATH | time SYSTEM INPUT REPS |\n"
    "                        embed SYSTEM INPUT BATCH PATH | profile SYSTEM INPUT RUNS PATH |\n"
    "                        systems | quit\n";

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--model-dir") {
      o.model_dir = value();
    } else if (arg == "--data-dir") {
      o.data_dir = value();
    } else if (arg == "--threads") {
      o.threads = std::stoi(value());
    } else if (arg == "--calibration-reviews") {
      o.calibration_reviews = std::stoll(value());
    } else if (arg == "--calibrator") {
      o.calibrator = value();
    } else if (arg == "--seed") {
      o.seed = std::stoull(value());
    } else if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else {
      throw std::invalid_argument("unknown option " + arg + "\n" + kUsage);
    }
  }
  if (o.model_dir.empty() || o.data_dir.empty()) {
    throw std::invalid_argument(std::string("--model-dir and --data-dir are required\n") + kUsage);
  }
  if (o.threads < 1 || o.calibration_reviews < 1) {
    throw std::invalid_argument("--threads and --calibration-reviews must be >= 1");
  }
  return o;
}

void say(const std::string& text) { std::cerr << "[tquant] " << text << std::endl; }

std::string last_line(std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const auto pos = text.rfind('\n');
  return pos == std::string::npos ? text : text.substr(pos + 1);
}

// A reply must stay on one line.
std::string one_line(std::string text) {
  for (char& c : text) {
    if (c == '\n') c = ' ';
  }
  return text;
}

bert::BertModel load_fp32(const bert::BertConfig& config, const std::string& model_dir) {
  bert::BertModel model(config, /*add_pooler=*/false);
  bert::load_bert_checkpoint(*model, model_dir);
  model->eval();
  return model;
}

// Prepare with the demo's mapping, calibrate on `calibration_reviews` training reviews (a seeded
// shuffle, batches padded to their longest review, as the demo), choose the calibrator, convert.
bert::BertModel make_int8(const bert::BertConfig& config, const Options& o) {
  bert::BertModel model = load_fp32(config, o.model_dir);
  const tquant::PrepareReport prepared = tquant::prepare(*model, bert::demo_int8_mapping(""));
  say("prepare: " + last_line(prepared.to_string()));

  const auto tokenizer = bert::WordPieceTokenizer::from_pretrained(o.model_dir);
  std::vector<bert::Review> reviews = bert::read_fine_foods_csv(o.data_dir + "/fine_foods_train.csv");
  const bert::EncodedSet train = bert::encode_reviews(tokenizer, reviews, o.seq_len, "train");
  std::mt19937_64 rng(o.seed + 1);
  auto batches = bert::shuffled_batches(train, o.calibration_batch, rng);
  const size_t count = static_cast<size_t>(
      (o.calibration_reviews + o.calibration_batch - 1) / o.calibration_batch);
  if (batches.size() > count) batches.resize(count);
  const tquant::CalibrationReport calibration =
      tquant::calibrate(*model, [&](tquant::CalibrationProgress& progress) {
        torch::NoGradGuard no_grad;
        for (const auto& indices : batches) {
          const bert::DemoBatch batch = bert::make_batch(train, indices);
          model->forward(batch.input_ids, batch.token_type_ids, batch.attention_mask);
          progress.step();
        }
      });
  say("calibrated on " + std::to_string(calibration.batches) + " batches of " +
      std::to_string(o.calibration_batch) + " training reviews; calibrator " + o.calibrator);
  tquant::set_calibration_method(*model, tquant::calibration_method_from_string(o.calibrator));
  const tquant::ConvertReport converted = tquant::convert(*model);
  say("convert: " + last_line(converted.to_string()));
  model->eval();
  return model;
}

bert::BertModel make_dynamic(const bert::BertConfig& config, const Options& o) {
  bert::BertModel model = load_fp32(config, o.model_dir);
  const tquant::ConvertReport converted = tquant::quantize_dynamic(*model);
  say("quantize_dynamic: " + last_line(converted.to_string()));
  model->eval();
  return model;
}

struct Input {
  at::Tensor input_ids;
  at::Tensor token_type_ids;
  at::Tensor attention_mask;
};

Input read_input(const std::string& path) {
  std::ifstream in(path);
  TORCH_CHECK(in, "input: cannot open ", path);
  int64_t rows = 0, cols = 0;
  TORCH_CHECK(in >> rows >> cols && rows > 0 && cols > 0, "input ", path,
              ": expected a first line \"rows cols\" with both > 0");
  auto read_matrix = [&](const char* what) {
    at::Tensor t = torch::empty({rows, cols}, torch::kInt64);
    int64_t* data = t.data_ptr<int64_t>();
    for (int64_t i = 0; i < rows * cols; ++i) {
      TORCH_CHECK(in >> data[i], "input ", path, ": expected ", rows, " x ", cols, " ", what,
                  ", got only ", i, " values");
    }
    return t;
  };
  Input input;
  input.input_ids = read_matrix("input ids");
  input.attention_mask = read_matrix("mask values");
  input.token_type_ids = torch::zeros({rows, cols}, torch::kInt64);
  return input;
}

class Server {
 public:
  explicit Server(std::map<std::string, bert::BertModel> systems) : systems_(std::move(systems)) {}

  // One command line -> the reply line (without "ok "/"error "); throws on a bad command.
  std::string handle(const std::string& line) {
    std::istringstream words(line);
    std::string command;
    words >> command;
    if (command == "systems") {
      std::string names;
      for (const auto& [name, model] : systems_) names += (names.empty() ? "" : " ") + name;
      return names;
    }
    if (command == "input") {
      std::string name, path;
      TORCH_CHECK(words >> name >> path, "expected: input NAME PATH");
      inputs_[name] = read_input(path);
      return std::to_string(inputs_[name].input_ids.size(0)) + " " +
             std::to_string(inputs_[name].input_ids.size(1));
    }
    if (command == "time") {
      std::string system, input;
      int64_t reps = 0;
      TORCH_CHECK(words >> system >> input >> reps && reps > 0,
                  "expected: time SYSTEM INPUT REPS (REPS >= 1)");
      bert::BertModelImpl& chosen = model(system);  // named first: the system error first
      return time(chosen, find_input(input), reps);
    }
    if (command == "embed") {
      std::string system, input, path;
      int64_t batch = 0;
      TORCH_CHECK(words >> system >> input >> batch >> path && batch > 0,
                  "expected: embed SYSTEM INPUT BATCH PATH (BATCH >= 1)");
      bert::BertModelImpl& chosen = model(system);
      return embed(chosen, find_input(input), batch, path);
    }
    if (command == "profile") {
      std::string system, input, path;
      int64_t runs = 0;
      TORCH_CHECK(words >> system >> input >> runs >> path && runs > 0,
                  "expected: profile SYSTEM INPUT RUNS PATH (RUNS >= 1)");
      bert::BertModelImpl& chosen = model(system);
      return profile(chosen, find_input(input), runs, path);
    }
    throw std::invalid_argument("unknown command \"" + command + "\"");
  }

 private:
  bert::BertModelImpl& model(const std::string& name) {
    auto it = systems_.find(name);
    TORCH_CHECK(it != systems_.end(), "unknown system \"", name, "\"");
    return *it->second;
  }

  const Input& find_input(const std::string& name) const {
    auto it = inputs_.find(name);
    TORCH_CHECK(it != inputs_.end(), "unknown input \"", name, "\" (send: input NAME PATH)");
    return it->second;
  }

  // The forwards timed as the BERT demo times its own (lib/latency.h); the driver interleaves.
  static std::string time(bert::BertModelImpl& model, const Input& input, int64_t reps) {
    torch::NoGradGuard no_grad;
    const std::vector<double> ms = bert::time_calls_ms(
        [&] {
          const at::Tensor hidden =
              model.forward(input.input_ids, input.token_type_ids, input.attention_mask);
          TORCH_CHECK(hidden.dim() == 3, "expected a [B, L, H] hidden state");
        },
        reps);
    std::ostringstream out;
    for (size_t r = 0; r < ms.size(); ++r) out << (r ? " " : "") << ms[r];
    return out.str();
  }

  static std::string embed(bert::BertModelImpl& model, const Input& input, int64_t batch,
                           const std::string& path) {
    torch::NoGradGuard no_grad;
    const int64_t rows = input.input_ids.size(0);
    std::vector<at::Tensor> parts;
    for (int64_t start = 0; start < rows; start += batch) {
      const int64_t n = std::min(batch, rows - start);
      const at::Tensor mask = input.attention_mask.narrow(0, start, n);
      const at::Tensor hidden = model.forward(input.input_ids.narrow(0, start, n),
                                              input.token_type_ids.narrow(0, start, n), mask);
      parts.push_back(bert::mean_pool_normalize(hidden, mask));
    }
    const at::Tensor all = torch::cat(parts).to(torch::kFloat32).contiguous();
    std::ofstream out(path, std::ios::binary);
    TORCH_CHECK(out, "embed: cannot write ", path);
    out.write(reinterpret_cast<const char*>(all.data_ptr<float>()),
              static_cast<std::streamsize>(all.numel() * sizeof(float)));
    TORCH_CHECK(out.good(), "embed: writing ", path, " failed");
    return std::to_string(all.size(0)) + " " + std::to_string(all.size(1));
  }

  static std::string profile(bert::BertModelImpl& model, const Input& input, int64_t runs,
                             const std::string& path) {
    torch::NoGradGuard no_grad;
    const bench::OpProfile profile = bench::profile_ops(
        [&] { model.forward(input.input_ids, input.token_type_ids, input.attention_mask); },
        static_cast<int>(runs));
    std::ofstream out(path);
    TORCH_CHECK(out, "profile: cannot write ", path);
    out << bench::to_markdown(profile);
    TORCH_CHECK(out.good(), "profile: writing ", path, " failed");
    return std::to_string(profile.wall_ms);
  }

  std::map<std::string, bert::BertModel> systems_;
  std::map<std::string, Input> inputs_;
};

int run(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  say(bert::raise_malloc_thresholds());  // run.sh sets them in the environment; kept if so
  torch::set_num_threads(o.threads);
  at::set_num_interop_threads(1);
  const bert::BertConfig config = bert::read_bert_config(o.model_dir);
  std::map<std::string, bert::BertModel> systems;
  systems.emplace("tquant_fp32", load_fp32(config, o.model_dir));
  systems.emplace("tquant_int8", make_int8(config, o));
  systems.emplace("tquant_dynamic", make_dynamic(config, o));
  say("ready, " + std::to_string(torch::get_num_threads()) + " intra-op threads");
  Server server(std::move(systems));
  std::cout << "ready" << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    if (line == "quit") break;
    std::string reply;
    try {
      reply = "ok " + server.handle(line);
    } catch (const c10::Error& error) {
      reply = "error " + one_line(error.what_without_backtrace());
    } catch (const std::exception& error) {
      reply = "error " + one_line(error.what());
    }
    std::cout << reply << std::endl;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "tquant_minilm_bench: error: " << error.what() << std::endl;
    return 1;
  }
}
