// The cost of QAT: one training step (forward, cross-entropy backward, AdamW step) of
// the BERT example's MiniLM classifier (examples/bert/lib: 6 layers, hidden 384, + a 2-way
// head) in fake-quant mode against the same model in float, at batch 32 x 128 tokens.
//
// Fake-quant model: the BERT demo's mapping (bert::demo_int8_mapping: static int8 encoder
// Linears and attention, per-token dynamic keys, weight-only int8 word embeddings), prepared,
// calibrated on 2 batches and its observers frozen, as the demo's QAT step runs it
// (docs/bert.md, step 4). Both models start from the same random weights (timing does not
// depend on trained values) and run with dropout off and gradients on, as the demo's QAT does.
// The steps are timed as the peer bench times (examples/bert/lib/latency.h): warm-up, then
// rounds with the two models interleaved, median over the rounds. Prints both medians and the
// ratio fake-quant / float (goal: at most 1.3x).
//
//   tquant_qat_step_bench [--batch 32] [--seq 128] [--rounds 7] [--warmup 1] [--threads 2]
//                         [--only float|fake-quant --steps N]   (for perf record: N steps of one)
//
// Not a test: run it by hand on a quiet machine (docs/benchmarks.md, "QAT step").

#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench_util.h"
#include "bert_config.h"
#include "bert_model.h"
#include "demo_log.h"
#include "demo_mapping.h"
#include "latency.h"
#include "tquant/quantize.h"

namespace {

struct Options {
  int64_t batch = 32;
  int64_t seq = 128;
  int64_t rounds = 7;
  int64_t warmup = 1;
  int threads = 2;
  std::string only;  ///< "", "float" or "fake-quant"
  int64_t steps = 3;  ///< with --only
};

[[noreturn]] void usage(const char* program) {
  std::fprintf(stderr,
               "usage: %s [--batch N] [--seq N] [--rounds N] [--warmup N] [--threads N]\n"
               "          [--only float|fake-quant] [--steps N]\n",
               program);
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) usage(argv[0]);
    const std::string value = argv[++i];
    if (arg == "--batch") {
      o.batch = std::atoll(value.c_str());
    } else if (arg == "--seq") {
      o.seq = std::atoll(value.c_str());
    } else if (arg == "--rounds") {
      o.rounds = std::atoll(value.c_str());
    } else if (arg == "--warmup") {
      o.warmup = std::atoll(value.c_str());
    } else if (arg == "--threads") {
      o.threads = std::atoi(value.c_str());
    } else if (arg == "--only" && (value == "float" || value == "fake-quant")) {
      o.only = value;
    } else if (arg == "--steps") {
      o.steps = std::atoll(value.c_str());
    } else {
      usage(argv[0]);
    }
  }
  if (o.batch < 1 || o.seq < 2 || o.rounds < 1 || o.warmup < 0 || o.threads < 1 || o.steps < 1) {
    usage(argv[0]);
  }
  return o;
}

struct Batch {
  at::Tensor input_ids, token_type_ids, attention_mask, labels;
};

// Random token ids (no padding; [CLS] first) and labels.
Batch random_batch(const bert::BertConfig& config, int64_t batch, int64_t seq) {
  Batch b;
  b.input_ids = torch::randint(1000, config.vocab_size, {batch, seq}, torch::kInt64);
  b.input_ids.select(1, 0).fill_(101);
  b.token_type_ids = torch::zeros({batch, seq}, torch::kInt64);
  b.attention_mask = torch::ones({batch, seq}, torch::kInt64);
  b.labels = torch::randint(0, 2, {batch}, torch::kInt64);
  return b;
}

// A model and its optimizer; step() is one training step on `batch`.
struct Trainee {
  bert::BertClassifier model;
  std::unique_ptr<torch::optim::AdamW> optimizer;

  explicit Trainee(bert::BertClassifier m) : model(std::move(m)) {
    model->train(false);  // dropout off, gradients on (the demo's QAT)
    optimizer = std::make_unique<torch::optim::AdamW>(
        model->parameters(), torch::optim::AdamWOptions(1e-6).weight_decay(0.01));
  }

  void step(const Batch& batch) {
    optimizer->zero_grad();
    const at::Tensor logits =
        model->forward(batch.input_ids, batch.token_type_ids, batch.attention_mask);
    torch::nn::functional::cross_entropy(logits, batch.labels).backward();
    optimizer->step();
  }
};

// The demo's mapping, prepared, calibrated on `calibration` and frozen: QAT's starting point.
bert::BertClassifier fake_quant_copy(const bert::BertClassifier& float_model,
                                     const std::vector<Batch>& calibration) {
  auto model = std::dynamic_pointer_cast<bert::BertClassifierImpl>(float_model->clone());
  const tquant::PrepareReport prepared = tquant::prepare(*model, bert::demo_int8_mapping("bert."));
  std::printf("%s\n", bert::last_line(prepared.to_string()).c_str());
  {
    torch::NoGradGuard no_grad;
    model->eval();
    tquant::calibrate(*model, [&] {
      for (const Batch& b : calibration) model->forward(b.input_ids, b.token_type_ids, b.attention_mask);
    });
  }
  tquant::enable_observers(*model, false);
  std::printf("fake-quant model: %s\n", bert::mode_summary(*model).c_str());
  return bert::BertClassifier(model);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  const std::string malloc_setting = bert::raise_malloc_thresholds();
  at::set_num_threads(o.threads);
  at::set_num_interop_threads(1);
  torch::manual_seed(0);

  tquant::bench::print_machine();
  std::printf("%s\n", malloc_setting.c_str());
  std::printf("MiniLM-L6 classifier (random weights), batch %lld x seq %lld, %d intra-op threads\n",
              static_cast<long long>(o.batch), static_cast<long long>(o.seq), at::get_num_threads());

  const bert::BertConfig config;  // all-MiniLM-L6-v2's sizes
  Trainee float_step(bert::BertClassifier(config, 2));
  const std::vector<Batch> calibration = {random_batch(config, o.batch, o.seq),
                                          random_batch(config, o.batch, o.seq)};
  Trainee fake_quant_step(fake_quant_copy(float_step.model, calibration));
  const Batch batch = random_batch(config, o.batch, o.seq);

  if (!o.only.empty()) {
    Trainee& chosen = o.only == "float" ? float_step : fake_quant_step;
    const std::vector<double> ms = bert::time_calls_ms([&] { chosen.step(batch); }, o.steps);
    std::printf("%s: %lld steps, median %.1f ms\n", o.only.c_str(), static_cast<long long>(o.steps),
                bert::median(ms));
    return 0;
  }
  std::printf("one step = zero_grad, forward, cross-entropy backward, AdamW step; %lld warm-up "
              "step(s) each, then %lld rounds (float and fake-quant interleaved), median\n",
              static_cast<long long>(o.warmup), static_cast<long long>(o.rounds));
  const bert::RoundTimes times = bert::interleaved_rounds(
      {[&] { float_step.step(batch); }, [&] { fake_quant_step.step(batch); }}, o.warmup, o.rounds,
      /*reps_per_round=*/1, [](int64_t round, const std::vector<double>& ms) {
        std::printf("  round %lld: float %.1f ms, fake-quant %.1f ms\n",
                    static_cast<long long>(round + 1), ms[0], ms[1]);
        std::fflush(stdout);
      });
  std::printf("float step      %9.1f ms (median)\n", times.median[0]);
  std::printf("fake-quant step %9.1f ms (median)  %.2fx float  (goal <= 1.30x)\n", times.median[1],
              times.median[1] / times.median[0]);
  tquant::bench::print_load_at_end();
  return 0;
}
