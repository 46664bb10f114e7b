#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bert {

/// Settings of the PTQ / QAT demo (examples/bert/demo.cpp). parse_demo_options fills the paths
/// and the mode; the sizes below are those of the full run, and `--quick` shrinks them
/// (see apply_quick_mode) so that CI runs every step in a few minutes on 2 cores.
struct DemoOptions {
  std::string model_dir;  ///< all-MiniLM-L6-v2: config.json, vocab.txt, model.safetensors
  std::string data_dir;   ///< fine_foods_{train,test}.csv; the FP32 checkpoint is cached here
  std::string out_dir = "build/bert_demo";
  bool quick = false;
  /// Keep the attention products (the QuantAttention "sdpa" of every layer) in float
  /// (at::scaled_dot_product_attention); docs/bert.md compares both settings.
  bool float_attention = false;
  /// Which scenarios run (docs/bert.md): "int8" (the demo's INT8 mapping), "w4a8" (int4
  /// encoder weights, int8 activations: the W4A8 ladder), or "both" (the default).
  std::string scenario = "both";
  /// W4A8 scenario: SmoothQuant migration strengths tried (one fresh model each), chosen on
  /// the validation embedding error against plain PTQ's. (0.3 was dropped to keep the full run
  /// under 30 minutes: it was by far the worst in the quick runs, docs/bert.md.)
  std::vector<double> smooth_alphas = {0.5, 0.7};
  int threads = 2;
  uint64_t seed = 0;

  int64_t seq_len = 128;
  int64_t batch_size = 32;
  /// Reviews of the training CSV used (0: all 4,000); validation_size of them are held out.
  int64_t train_reviews = 0;
  int64_t validation_size = 500;
  /// Reviews of the test CSV used (0: all 1,000).
  int64_t test_reviews = 0;
  /// FP32 fine-tuning: epochs over the training part, AdamW with linear warm-up and decay.
  int64_t epochs = 1;
  double encoder_lr = 5e-5;
  double head_lr = 1e-3;
  double warmup_fraction = 0.1;
  /// Training reviews the static quantizers observe (one pass, every method from it).
  int64_t calibration_reviews = 256;
  /// Sensitivity ranking: embedding error against FP32 on the first this-many validation
  /// reviews (the fallback then stops on accuracy over the whole validation split).
  int64_t sensitivity_reviews = 160;
  /// QAT: steps of batch_size, split into qat_checkpoints evaluations on validation; the best
  /// on validation is kept (checkpoint 0 is the PTQ model itself).
  int64_t qat_steps = 28;
  int64_t qat_checkpoints = 4;
  /// INT8 scenario: the QAT learning rate (AdamW, no warm-up, linear decay).
  double qat_lr = 5e-6;
  /// W4A8 scenario: the QAT learning rates tried (one fixed-scale run each from the same start;
  /// length and rate chosen on validation); LSQ then trains at the rate chosen. Each run is
  /// w4a8_qat_steps long, with qat_checkpoints validation checkpoints: 56, since in the first
  /// full runs with 28 every run's validation embedding error was still falling at its last
  /// checkpoint (docs/bert.md).
  std::vector<double> w4a8_qat_lrs = {1e-5, 3e-5};
  int64_t w4a8_qat_steps = 56;
  /// W4A8 scenario, QAT with learned scales (LSQ): AdamW learning rate of the scales (their own
  /// group, no weight decay). Adam moves a parameter by about its rate per step whatever the
  /// gradient's size, so the rate is set against the scales (int4 weight scales ~1e-2): 1e-3
  /// lets a QAT run of 28-56 steps move a scale by a good part of itself; 1e-5 (the first
  /// guess) barely moved them (docs/bert.md).
  double qat_scale_lr = 1e-3;
  /// Weight of the distillation term (mean 1 - cosine to the FP32 sentence embeddings) in the
  /// QAT loss, next to the cross-entropy.
  double qat_distill_weight = 100.0;
  /// Latency: batch x seq of test reviews padded to the length, timed as the peer bench
  /// times (lib/latency.h): `latency_warmup` untimed forwards of each model, then
  /// `latency_rounds` rounds with the models interleaved, median over the rounds.
  int64_t latency_batch = 32;
  int64_t latency_seq = 128;
  int64_t latency_warmup = 2;
  int64_t latency_rounds = 7;
  /// Fallback budget in accuracy points (fraction: 0.005 = 0.5 point).
  double fallback_budget = 0.005;
};

/// The usage text (options and where the defaults come from).
std::string demo_usage();

/// Parses the command line:
///   --model-dir DIR  --data-dir DIR  --out-dir DIR  --quick  --threads N  --epochs N
///   --seed N  --float-attention  --scenario int8|w4a8|both  --help
/// Paths not given come from the environment (TQUANT_BERT_MODEL_DIR, TQUANT_DATA_DIR), then
/// from bert_assets.env (MODEL_DIR=..., DATA_DIR=...) written by scripts/setup_bert_assets.sh,
/// looked up in ./build/data/ and in the source tree's build/data/. Throws std::invalid_argument
/// on an unknown option, and std::runtime_error naming the missing file (with the hint to run
/// scripts/setup_bert_assets.sh) when the model or the data cannot be found.
/// Sets `help` and returns early when --help is given.
DemoOptions parse_demo_options(int argc, char** argv, bool* help);

/// The sizes of `--quick`: 64 tokens, 640 training reviews (128 held out), 200 test reviews,
/// 64 calibration reviews, sensitivity ranked on 64 validation reviews, 12 QAT steps; latency
/// still at batch 32 x 128 (1 warm-up forward, median of 7 rounds).
void apply_quick_mode(DemoOptions& options);

/// Where the fine-tuned FP32 classifier is cached: <data_dir>/fine_foods_minilm_fp32_<key>.safetensors,
/// the key naming every setting the fine-tuning depends on (sequence length, `train_size`
/// training reviews, validation size, epochs, batch, learning rates, seed), so that a run with
/// other settings trains its own.
std::string fp32_checkpoint_path(const DemoOptions& options, size_t train_size);

/// The scenarios `options.scenario` names, in run order: {"int8"}, {"w4a8"} or {"int8", "w4a8"}.
std::vector<std::string> demo_scenarios(const DemoOptions& options);

/// One line per setting, for the log and the results files.
std::string describe(const DemoOptions& options);

}  // namespace bert
