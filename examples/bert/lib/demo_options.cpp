#include "demo_options.h"

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>

namespace bert {
namespace {

constexpr const char* kSetupHint = "run scripts/setup_bert_assets.sh";

bool file_exists(const std::string& path) {
  std::ifstream in(path);
  return static_cast<bool>(in);
}

// KEY=VALUE lines of bert_assets.env ('#' comments and blank lines ignored, quotes stripped).
std::map<std::string, std::string> read_env_file(const std::string& path) {
  std::map<std::string, std::string> values;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string key = line.substr(0, eq);
    std::string value = line.substr(eq + 1);
    if (key.rfind("export ", 0) == 0) key = key.substr(7);
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    values[key] = value;
  }
  return values;
}

// The repository root, from this file's path (examples/bert/lib/demo_options.cpp).
std::string source_root() {
  std::string path = __FILE__;
  for (int i = 0; i < 4; ++i) {
    const auto slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    path = path.substr(0, slash);
  }
  return path.empty() ? "/" : path;
}

std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value ? std::string(value) : std::string();
}

int64_t parse_int(const std::string& option, const std::string& text) {
  try {
    size_t used = 0;
    const long long value = std::stoll(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
    return value;
  } catch (const std::exception&) {
    throw std::invalid_argument(option + ": expected an integer, got '" + text + "'");
  }
}

// "1e-05 / 3e-05"
std::string join(const std::vector<double>& values) {
  std::ostringstream out;
  for (size_t i = 0; i < values.size(); ++i) out << (i ? " / " : "") << values[i];
  return out.str();
}

}  // namespace

std::string demo_usage() {
  return "usage: tquant_bert_demo [--quick] [--model-dir DIR] [--data-dir DIR] [--out-dir DIR]\n"
         "                        [--threads N] [--epochs N] [--seed N] [--float-attention]\n"
         "                        [--scenario int8|w4a8|both]\n"
         "  --quick       CI mode: fewer reviews, 64 tokens, every step of the path (minutes)\n"
         "  --float-attention  leave the attention products (QuantAttention) in float\n"
         "  --scenario    int8, w4a8 or both (default both): INT8 mapping, W4A8 ladder\n"
         "  --model-dir   all-MiniLM-L6-v2 directory (config.json, vocab.txt, model.safetensors)\n"
         "  --data-dir    directory of fine_foods_train.csv / fine_foods_test.csv; the FP32\n"
         "                checkpoint is cached there\n"
         "  --out-dir     where results.md, results.json and calibration_report.html go\n"
         "                (default build/bert_demo)\n"
         "  --threads     CPU threads (default 2)\n"
         "  --epochs      FP32 fine-tuning epochs (default 1 full, 1 quick)\n"
         "Defaults for the directories: $TQUANT_BERT_MODEL_DIR, $TQUANT_DATA_DIR, then\n"
         "build/data/bert_assets.env (written by scripts/setup_bert_assets.sh).\n";
}

void apply_quick_mode(DemoOptions& options) {
  options.quick = true;
  options.seq_len = 64;
  options.train_reviews = 640;
  options.validation_size = 128;
  options.test_reviews = 200;
  options.epochs = 1;
  options.encoder_lr = 1e-4;
  options.calibration_reviews = 64;
  options.sensitivity_reviews = 64;
  options.qat_steps = 12;
  options.w4a8_qat_steps = 12;
  options.qat_checkpoints = 3;
  options.latency_warmup = 1;
}

DemoOptions parse_demo_options(int argc, char** argv, bool* help) {
  DemoOptions options;
  *help = false;
  std::string model_dir, data_dir, out_dir;
  int64_t epochs = -1;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + ": expected a value");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      *help = true;
      return options;
    } else if (arg == "--quick") {
      quick = true;
    } else if (arg == "--float-attention") {
      options.float_attention = true;
    } else if (arg == "--scenario") {
      options.scenario = value();
      if (options.scenario != "int8" && options.scenario != "w4a8" && options.scenario != "both") {
        throw std::invalid_argument("--scenario: expected int8, w4a8 or both, got '" +
                                    options.scenario + "'");
      }
    } else if (arg == "--model-dir") {
      model_dir = value();
    } else if (arg == "--data-dir") {
      data_dir = value();
    } else if (arg == "--out-dir") {
      out_dir = value();
    } else if (arg == "--threads") {
      options.threads = static_cast<int>(parse_int(arg, value()));
      if (options.threads < 1) throw std::invalid_argument("--threads: expected >= 1");
    } else if (arg == "--epochs") {
      epochs = parse_int(arg, value());
      if (epochs < 1) throw std::invalid_argument("--epochs: expected >= 1");
    } else if (arg == "--seed") {
      options.seed = static_cast<uint64_t>(parse_int(arg, value()));
    } else {
      throw std::invalid_argument("unknown option '" + arg + "'\n" + demo_usage());
    }
  }
  if (quick) apply_quick_mode(options);
  if (epochs > 0) options.epochs = epochs;
  if (!out_dir.empty()) options.out_dir = out_dir;

  // Directories: command line, then environment, then bert_assets.env.
  if (model_dir.empty()) model_dir = env_or_empty("TQUANT_BERT_MODEL_DIR");
  if (data_dir.empty()) data_dir = env_or_empty("TQUANT_DATA_DIR");
  if (model_dir.empty() || data_dir.empty()) {
    for (const std::string& env_file :
         {std::string("build/data/bert_assets.env"), source_root() + "/build/data/bert_assets.env"}) {
      if (!file_exists(env_file)) continue;
      const auto values = read_env_file(env_file);
      if (model_dir.empty() && values.count("MODEL_DIR")) model_dir = values.at("MODEL_DIR");
      if (data_dir.empty() && values.count("DATA_DIR")) data_dir = values.at("DATA_DIR");
      break;
    }
  }
  if (model_dir.empty()) {
    throw std::runtime_error("no model directory: pass --model-dir, set TQUANT_BERT_MODEL_DIR, "
                             "or " + std::string(kSetupHint) + " (it writes "
                             "build/data/bert_assets.env)");
  }
  if (data_dir.empty()) {
    throw std::runtime_error("no data directory: pass --data-dir, set TQUANT_DATA_DIR, or " +
                             std::string(kSetupHint));
  }
  for (const char* name : {"config.json", "vocab.txt", "model.safetensors"}) {
    const std::string path = model_dir + "/" + name;
    if (!file_exists(path)) {
      throw std::runtime_error("missing " + path + " (all-MiniLM-L6-v2); " + kSetupHint);
    }
  }
  for (const char* name : {"fine_foods_train.csv", "fine_foods_test.csv"}) {
    const std::string path = data_dir + "/" + name;
    if (!file_exists(path)) throw std::runtime_error("missing " + path + "; " + kSetupHint);
  }
  options.model_dir = model_dir;
  options.data_dir = data_dir;
  return options;
}

std::vector<std::string> demo_scenarios(const DemoOptions& options) {
  if (options.scenario == "both") return {"int8", "w4a8"};
  return {options.scenario};
}

std::string describe(const DemoOptions& o) {
  std::ostringstream out;
  out << "mode " << (o.quick ? "quick" : "full") << ", scenario " << o.scenario << ", threads "
      << o.threads << ", seed " << o.seed << "\n"
      << "model " << o.model_dir << "\n"
      << "data " << o.data_dir << ", out " << o.out_dir << "\n"
      << "seq " << o.seq_len << ", batch " << o.batch_size << ", train reviews "
      << (o.train_reviews ? std::to_string(o.train_reviews) : std::string("all"))
      << " (validation " << o.validation_size << " held out), test reviews "
      << (o.test_reviews ? std::to_string(o.test_reviews) : std::string("all")) << "\n"
      << "fine-tune " << o.epochs << " epoch(s), AdamW lr " << o.encoder_lr << " encoder / "
      << o.head_lr << " head, warm-up " << o.warmup_fraction << "\n"
      << "calibration " << o.calibration_reviews << " reviews; sensitivity ranking on "
      << o.sensitivity_reviews << " validation reviews; QAT " << o.qat_steps << " steps at lr "
      << o.qat_lr << " (INT8), " << o.w4a8_qat_steps << " steps at lr " << join(o.w4a8_qat_lrs)
      << " (W4A8; "
      << o.qat_checkpoints << " checkpoints, distillation "
      << "weight " << o.qat_distill_weight << ", LSQ scales lr " << o.qat_scale_lr
      << "); fallback "
      << "budget " << o.fallback_budget * 100.0 << " point(s)";
  return out.str();
}

std::string fp32_checkpoint_path(const DemoOptions& o, size_t train_size) {
  std::ostringstream key;
  key << "seq" << o.seq_len << "_n" << train_size << "_v" << o.validation_size << "_e" << o.epochs
      << "_b" << o.batch_size << "_lr" << o.encoder_lr << "_h" << o.head_lr << "_s" << o.seed;
  return o.data_dir + "/fine_foods_minilm_fp32_" + key.str() + ".safetensors";
}

}  // namespace bert
