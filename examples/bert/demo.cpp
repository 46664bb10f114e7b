// The BERT PTQ / QAT demo (README command one): fine-tune all-MiniLM-L6-v2 on Amazon fine-food
// reviews, then two quantization scenarios on copies of that FP32 model (docs/bert.md):
//   INT8  post-training quantization with every calibrator from one pass of data, per-group
//         sensitivity and automatic fallback to float, a short QAT, conversion to INT8 GEMMs,
//         and the measurements (accuracy, size, CPU latency, embedding agreement);
//   W4A8  int4 weights with int8 activations, in a setting where plain PTQ loses accuracy (the
//         FFN up-projections with one int4 scale per tensor): the same ladder plus SmoothQuant,
//         QAT over a learning-rate grid, and QAT with learned scales (LSQ) against fixed scales.
// Every choice is made on the validation split; the test split is only reported.
//
//   tquant_bert_demo --quick          # CI: every step on fewer, shorter reviews (minutes)
//   tquant_bert_demo                  # the full run (see docs/bert.md)
//
// The file reads like docs/bert.md: run() calls one function per step of that page, in its
// order, and each function carries the step's name. A step takes what it works on (the model,
// the scenario's QConfigMapping, the results of earlier steps) as parameters.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "bert_checkpoint.h"
#include "bert_config.h"
#include "bert_model.h"
#include "demo_calibrators.h"
#include "demo_cuda.h"
#include "demo_data.h"
#include "demo_log.h"
#include "demo_mapping.h"
#include "demo_options.h"
#include "demo_progress.h"
#include "demo_report.h"
#include "demo_train.h"
#include "latency.h"
#include "fine_foods.h"
#include "tquant/qconfig_mapping.h"
#include "tquant/quantize.h"
#include "tquant/sensitivity.h"
#include "tquant/smooth_quant.h"
#include "tquant/serialize.h"
#include "wordpiece_tokenizer.h"

namespace {

using bert::fixed;
using bert::say;
using bert::seconds_since;
using Clock = std::chrono::steady_clock;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// "none", or the groups kept in float, comma separated.
std::string kept_in_float(const std::vector<std::string>& float_groups) {
  std::string kept = float_groups.empty() ? std::string("none") : std::string();
  for (size_t i = 0; i < float_groups.size(); ++i) kept += (i ? ", " : "") + float_groups[i];
  return kept;
}

// One quantization scenario (docs/bert.md): the mapping, and where its rows and files go.
struct Scenario {
  std::string name;        ///< "INT8" or "W4A8": prefixes its rows, measurements and timings
  std::string file_prefix; ///< of its report files in out_dir: "" (INT8) or "w4a8_"
  std::string model_file;  ///< the converted model, in out_dir
  tquant::QConfigMapping mapping;
  bool smooth_quant = false;  ///< the W4A8 ladder's SmoothQuant step
  /// The W4A8 ladder's QAT with learned scales (LSQ): the mapping with learnable quantizers.
  std::optional<tquant::QConfigMapping> lsq_mapping;
  /// QAT: steps of each run, and the learning rates tried (one run each from the same start,
  /// the best on validation kept).
  int64_t qat_steps = 0;
  std::vector<double> qat_lrs;
  std::string file(const bert::DemoOptions& options, const std::string& name) const {
    return options.out_dir + "/" + file_prefix + name;
  }
};

Scenario make_scenario(const std::string& key, const bert::DemoOptions& options) {
  if (key == "w4a8") {
    return {"W4A8", "w4a8_", "minilm_fine_foods_w4a8.safetensors",
            bert::demo_w4a8_mapping("bert.", options.float_attention), true,
            bert::demo_w4a8_mapping("bert.", options.float_attention, /*learned_scales=*/true),
            options.w4a8_qat_steps, options.w4a8_qat_lrs};
  }
  return {"INT8", "", "minilm_fine_foods_int8.safetensors",
          bert::demo_int8_mapping("bert.", options.float_attention), false, std::nullopt,
          options.qat_steps, {options.qat_lr}};
}

// ---- the data --------------------------------------------------------------------------------

struct DemoData {
  std::vector<bert::Review> test_reviews;  ///< the test CSV (the latency batch is cut from it)
  bert::WordPieceTokenizer tokenizer;
  bert::EncodedSet train;
  bert::EncodedSet validation;
  bert::EncodedSet test;
};

// The review CSVs, cut to the run's sizes, split (seeded) into train and validation, tokenized.
DemoData load_data(const bert::DemoOptions& options, bert::DemoResults& results) {
  const auto start = Clock::now();
  std::vector<bert::Review> train_csv =
      bert::read_fine_foods_csv(options.data_dir + "/fine_foods_train.csv");
  std::vector<bert::Review> test_csv =
      bert::read_fine_foods_csv(options.data_dir + "/fine_foods_test.csv");
  if (options.train_reviews > 0 && static_cast<size_t>(options.train_reviews) < train_csv.size()) {
    train_csv.resize(options.train_reviews);
  }
  if (options.test_reviews > 0 && static_cast<size_t>(options.test_reviews) < test_csv.size()) {
    test_csv.resize(options.test_reviews);
  }
  const bert::TrainValidationSplit split =
      bert::split_train_validation(train_csv, options.validation_size, options.seed);
  auto tokenizer = bert::WordPieceTokenizer::from_pretrained(options.model_dir);
  bert::EncodedSet train = bert::encode_reviews(tokenizer, split.train, options.seq_len, "train");
  bert::EncodedSet validation =
      bert::encode_reviews(tokenizer, split.validation, options.seq_len, "validation");
  bert::EncodedSet test = bert::encode_reviews(tokenizer, test_csv, options.seq_len, "test");
  say("data: " + std::to_string(train.size()) + " train, " + std::to_string(validation.size()) +
      " validation, " + std::to_string(test.size()) + " test reviews; mean tokens " +
      fixed(bert::mean_length(train), 1) + " (train); positive share " +
      fixed(bert::positive_fraction(test) * 100, 1) + "% (test)");
  results.durations.emplace_back("data + tokenize", seconds_since(start));
  return {std::move(test_csv), std::move(tokenizer), std::move(train), std::move(validation),
          std::move(test)};
}

// ---- 1. FP32 baseline ------------------------------------------------------------------------

struct Fp32Baseline {
  bert::BertConfig config;
  std::string checkpoint;  ///< the fine-tuned classifier (cached in the data folder)
  bert::BertClassifier model;
  /// Accuracy and sentence embeddings (kept: the later steps compare against them).
  bert::EvalResult validation;
  bert::EvalResult test;
};

// A fresh classifier with the fine-tuned FP32 weights of `checkpoint`, in eval mode.
bert::BertClassifier load_fp32_classifier(const bert::BertConfig& config,
                                          const std::string& checkpoint, uint64_t seed) {
  torch::manual_seed(seed);
  bert::BertClassifier model(config, 2);
  bert::load_classifier(*model, checkpoint);
  model->eval();
  return model;
}

// Fine-tunes MiniLM + head on the training split, or reuses the checkpoint of the same settings.
bert::BertClassifier fine_tune_or_reuse(const bert::DemoOptions& options, const DemoData& data,
                                        const bert::BertConfig& config,
                                        const std::string& checkpoint, bool* trained_now) {
  torch::manual_seed(static_cast<uint64_t>(options.seed));
  bert::BertClassifier model(config, 2);
  *trained_now = false;
  if (std::filesystem::exists(checkpoint)) {
    say("1. FP32 baseline: reusing the fine-tuned checkpoint " + checkpoint);
    bert::load_classifier(*model, checkpoint);
    return model;
  }
  bert::load_bert_checkpoint(*model, options.model_dir);
  const int64_t steps_per_epoch =
      (static_cast<int64_t>(data.train.size()) + options.batch_size - 1) / options.batch_size;
  bert::TrainSettings settings;
  settings.steps = steps_per_epoch * options.epochs;
  settings.batch_size = options.batch_size;
  settings.encoder_lr = options.encoder_lr;
  settings.head_lr = options.head_lr;
  settings.warmup_fraction = options.warmup_fraction;
  settings.seed = options.seed;
  settings.label = "fine-tune FP32";
  say("1. FP32 baseline: fine-tuning " + std::to_string(settings.steps) + " steps (" +
      std::to_string(options.epochs) + " epoch(s) of " + std::to_string(steps_per_epoch) + ")");
  const double loss = bert::train_classifier(*model, data.train, settings);
  say("fine-tuned, final mean loss " + fixed(loss, 4) + "; saving " + checkpoint);
  bert::save_classifier(*model, checkpoint);
  *trained_now = true;
  return model;
}

Fp32Baseline fp32_baseline(const bert::DemoOptions& options, const DemoData& data,
                           bert::DemoResults& results) {
  auto start = Clock::now();
  const bert::BertConfig config = bert::read_bert_config(options.model_dir);
  const std::string checkpoint = bert::fp32_checkpoint_path(options, data.train.size());
  bool trained_now = false;
  bert::BertClassifier model = fine_tune_or_reuse(options, data, config, checkpoint, &trained_now);
  results.durations.emplace_back(trained_now ? "FP32 fine-tune" : "FP32 load", seconds_since(start));

  start = Clock::now();
  model->eval();
  // Validation embeddings are kept: the sensitivity ranking compares against them.
  bert::EvalResult validation = bert::evaluate(*model, data.validation, options.batch_size,
                                               "FP32 validation", /*keep_embeddings=*/true);
  bert::EvalResult test =
      bert::evaluate(*model, data.test, options.batch_size, "FP32 test", /*keep_embeddings=*/true);
  say("FP32: validation " + fixed(validation.accuracy * 100, 2) + "%, test " +
      fixed(test.accuracy * 100, 2) + "%");
  results.rows.push_back({"FP32", "fine-tuned MiniLM-L6 + head", validation.accuracy,
                          test.accuracy, trained_now ? "trained this run" : "cached checkpoint"});
  results.durations.emplace_back("FP32 evaluation", seconds_since(start));
  return {config, checkpoint, model, std::move(validation), std::move(test)};
}

// ---- 2. PTQ ----------------------------------------------------------------------------------

struct Ptq {
  tquant::CalibrationReport calibration;
  std::vector<bert::RangeChoice> choices;
  std::vector<bert::QuantizerHistogram> histograms;  ///< for the calibration report
  /// Per calibrator: validation accuracy and embedding error, test accuracy (chosen one only).
  std::vector<double> validation, test, embedding_error;
  size_t best = 0;  ///< the calibrator in use when the step returns
  const bert::RangeChoice& best_choice() const { return choices[best]; }
};

// The fully quantized model the later steps start from: the best PTQ calibrator, or with
// SmoothQuant when that step wins on validation. QAT's "0 steps" is this model.
struct LadderBase {
  std::string label;  ///< "mse", "mse + SmoothQuant alpha 0.50"
  double validation = kNaN;
  double test = kNaN;
  double embedding_error = kNaN;  ///< validation embedding error against FP32
};

// tquant::prepare with the scenario's mapping, then tquant::calibrate once on training reviews.
// The calibration batches: calibration_reviews training reviews, shuffled (seeded).
std::vector<std::vector<size_t>> calibration_batches(const bert::DemoOptions& options,
                                                     const DemoData& data) {
  std::mt19937_64 calibration_rng(options.seed + 1);
  auto batches = bert::shuffled_batches(data.train, options.batch_size, calibration_rng);
  const int64_t count = std::max<int64_t>(
      1, (options.calibration_reviews + options.batch_size - 1) / options.batch_size);
  if (static_cast<int64_t>(batches.size()) > count) batches.resize(count);
  return batches;
}

// tquant::calibrate once on the calibration batches.
tquant::CalibrationReport calibrate_on_training(bert::BertClassifierImpl& model,
                                                const bert::DemoOptions& options,
                                                const DemoData& data) {
  const auto batches = calibration_batches(options, data);
  bert::DemoProgress progress_line("calibrate", static_cast<int64_t>(batches.size()), "batches",
                                   0.0);
  torch::NoGradGuard no_grad;
  model.eval();
  return tquant::calibrate(
      model,
      [&](tquant::CalibrationProgress& progress) {
        for (const auto& indices : batches) {
          const bert::DemoBatch batch = bert::make_batch(data.train, indices);
          model.forward(batch.input_ids, batch.token_type_ids, batch.attention_mask);
          progress.step();
        }
      },
      [&](int64_t) { progress_line.step(); });
}

// tquant::prepare with the scenario's mapping, then tquant::calibrate once on training reviews.
tquant::CalibrationReport prepare_and_calibrate(bert::BertClassifierImpl& model,
                                                const Scenario& scenario,
                                                const bert::DemoOptions& options,
                                                const DemoData& data) {
  const tquant::PrepareReport prepared = tquant::prepare(model, scenario.mapping);
  bert::write_text_file(scenario.file(options, "prepare_report.txt"), prepared.to_string());
  say("2. PTQ (" + scenario.name + "): " + bert::last_line(prepared.to_string()) +
      " (full report: " + scenario.file_prefix + "prepare_report.txt)");
  const tquant::CalibrationReport calibration = calibrate_on_training(model, options, data);
  bert::write_text_file(scenario.file(options, "calibration_report.txt"), calibration.to_string());
  say("calibrated on " + std::to_string(calibration.batches) + " batches (" +
      std::to_string(calibration.quantizers.size()) + " quantizers); " +
      bert::mode_summary(model));
  return calibration;
}

// Every calibrator from the same histograms, evaluated on validation. The calibrator is chosen
// by the validation embedding error against FP32, a smooth measure of how far the quantized
// model moved; validation accuracy is shown for each but moves in whole reviews (0.2 point of
// 500), and the calibrators differ by a few reviews. The test split is looked at once, for the
// calibrator chosen.
void choose_calibrator(bert::BertClassifierImpl& model, const bert::DemoOptions& options,
                       const DemoData& data, const Fp32Baseline& fp32, Ptq& ptq) {
  const size_t n = ptq.choices.size();
  ptq.validation.assign(n, kNaN);
  ptq.test.assign(n, kNaN);
  ptq.embedding_error.assign(n, kNaN);
  ptq.best = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto& choice = ptq.choices[i];
    bert::use_calibrator(model, choice);
    const bert::EvalResult r = bert::evaluate(model, data.validation, options.batch_size,
                                              "PTQ " + choice.label + " validation",
                                              /*keep_embeddings=*/true);
    ptq.validation[i] = r.accuracy;
    ptq.embedding_error[i] = bert::embedding_error(fp32.validation.embeddings, r.embeddings);
    say("PTQ " + choice.label + ": validation " + fixed(ptq.validation[i] * 100, 2) +
        "%, embedding error " + fixed(ptq.embedding_error[i] * 1000, 3) + "e-3");
    if (ptq.embedding_error[i] < ptq.embedding_error[ptq.best]) ptq.best = i;  // ties: earlier
  }
  bert::use_calibrator(model, ptq.best_choice());
  ptq.test[ptq.best] = bert::evaluate(model, data.test, options.batch_size,
                                      "PTQ " + ptq.best_choice().label + " test").accuracy;
  say("best calibrator on validation: " + ptq.best_choice().label + ", test " +
      fixed(ptq.test[ptq.best] * 100, 2) + "%");
}

Ptq ptq(bert::BertClassifierImpl& model, const Scenario& scenario,
        const bert::DemoOptions& options, const DemoData& data, const Fp32Baseline& fp32,
        bert::DemoResults& results) {
  Ptq out;
  auto start = Clock::now();
  out.calibration = prepare_and_calibrate(model, scenario, options, data);
  results.durations.emplace_back("prepare + calibrate", seconds_since(start));

  out.choices = bert::demo_calibrators();
  start = Clock::now();
  out.histograms = bert::collect_histograms(model, out.choices);
  results.durations.emplace_back("histogram ranges for the report", seconds_since(start));

  start = Clock::now();
  choose_calibrator(model, options, data, fp32, out);
  for (size_t i = 0; i < out.choices.size(); ++i) {
    results.rows.push_back({"PTQ", out.choices[i].label, out.validation[i], out.test[i],
                            "emb. error " + fixed(out.embedding_error[i] * 1000, 2) + "e-3" +
                                (i == out.best ? ", best on validation" : "")});
  }
  results.notes.push_back("PTQ: the calibrator is chosen by the validation embedding error "
                          "(mean 1 - cosine of quantization-simulated vs FP32 sentence "
                          "embeddings); test accuracy is measured only for the chosen one");
  results.durations.emplace_back("PTQ: 7 calibrators evaluated", seconds_since(start));
  return out;
}

// ---- 2b. SmoothQuant (W4A8 scenario) -----------------------------------------------------

// A fresh FP32 model prepared with `mapping`, smoothed with `alpha` (NaN: not smoothed; the
// statistics from the calibration batches run in float), calibrated, and switched to `choice`.
bert::BertClassifier calibrated_copy(const tquant::QConfigMapping& mapping, double alpha,
                                     const bert::DemoOptions& options, const DemoData& data,
                                     const Fp32Baseline& fp32, const bert::RangeChoice& choice,
                                     tquant::SmoothQuantReport* report) {
  bert::BertClassifier model =
      load_fp32_classifier(fp32.config, fp32.checkpoint, static_cast<uint64_t>(options.seed));
  tquant::prepare(*model, mapping);
  if (!std::isnan(alpha)) {
    const auto batches = calibration_batches(options, data);
    torch::NoGradGuard no_grad;
    tquant::SmoothQuantReport smoothed = tquant::smooth_quant(
        *model,
        [&] {
          for (const auto& indices : batches) {
            const bert::DemoBatch batch = bert::make_batch(data.train, indices);
            model->forward(batch.input_ids, batch.token_type_ids, batch.attention_mask);
          }
        },
        tquant::SmoothQuantOptions().alpha(alpha));
    if (report) *report = std::move(smoothed);
  }
  calibrate_on_training(*model, options, data);
  bert::use_calibrator(*model, choice);
  return model;
}

struct SmoothQuantStep {
  /// The alpha with the lowest validation embedding error beat plain PTQ and its model replaced
  /// the PTQ model.
  bool used = false;
  /// That alpha and its report, kept or not (the calibration report charts its factors).
  double alpha = kNaN;
  tquant::SmoothQuantReport report;
};

// For each alpha: a fresh FP32 model, prepared with the scenario's mapping, tquant::smooth_quant
// (max |x| from the calibration batches run in float), calibrated, switched to the PTQ step's
// calibrator, and evaluated on validation. The alpha with the lowest validation embedding
// error is chosen (as the calibrator is); if it beats plain PTQ's, its model replaces `model`
// for the rest of the scenario. One row: the chosen alpha (test measured only for it).
SmoothQuantStep smooth_quant_step(bert::BertClassifier& model, const Scenario& scenario,
                                  const bert::DemoOptions& options, const DemoData& data,
                                  const Fp32Baseline& fp32, const Ptq& ptq, LadderBase& base,
                                  bert::DemoResults& results) {
  const auto start = Clock::now();
  SmoothQuantStep out;
  const double plain_error = ptq.embedding_error[ptq.best];
  double best_error = std::numeric_limits<double>::infinity();
  bert::BertClassifier best_model = nullptr;
  double best_validation = kNaN;
  std::string errors;
  for (const double alpha : options.smooth_alphas) {
    tquant::SmoothQuantReport report;
    bert::BertClassifier candidate = calibrated_copy(scenario.mapping, alpha, options, data, fp32,
                                                     ptq.best_choice(), &report);
    const bert::EvalResult r =
        bert::evaluate(*candidate, data.validation, options.batch_size,
                       "SmoothQuant alpha " + fixed(alpha, 2) + " validation",
                       /*keep_embeddings=*/true);
    const double error = bert::embedding_error(fp32.validation.embeddings, r.embeddings);
    say("SmoothQuant alpha " + fixed(alpha, 2) + " (" + std::to_string(report.layers.size()) +
        " layers smoothed, " + ptq.best_choice().label + "): validation " +
        fixed(r.accuracy * 100, 2) + "%, embedding error " + fixed(error * 1000, 3) + "e-3");
    errors += (errors.empty() ? "" : ", ") + fixed(alpha, 2) + ": " + fixed(r.accuracy * 100, 2) +
              "% / " + fixed(error * 1000, 2) + "e-3";
    if (error < best_error) {  // strictly lower than the alphas before
      best_error = error;
      best_model = candidate;
      best_validation = r.accuracy;
      out.alpha = alpha;
      out.report = std::move(report);
    }
  }
  results.notes.push_back("SmoothQuant (" + ptq.best_choice().label +
                          "), alpha: validation accuracy / embedding error: " + errors +
                          "; plain PTQ " + fixed(plain_error * 1000, 2) + "e-3");
  if (best_error < plain_error) {
    out.used = true;
    model = best_model;
    base.label = ptq.best_choice().label + " + SmoothQuant alpha " + fixed(out.alpha, 2);
    base.validation = best_validation;
    base.embedding_error = best_error;
    base.test = bert::evaluate(*model, data.test, options.batch_size, "SmoothQuant test").accuracy;
    bert::write_text_file(scenario.file(options, "smooth_quant_report.txt"),
                          out.report.to_string());
    results.rows.push_back({"SmoothQuant", "alpha " + fixed(out.alpha, 2) + " (" +
                                               ptq.best_choice().label + ")",
                            base.validation, base.test,
                            "emb. error " + fixed(best_error * 1000, 2) +
                                "e-3, alpha chosen on validation; used from here on"});
  } else {
    results.rows.push_back({"SmoothQuant", "no alpha of the grid beat plain PTQ", kNaN, kNaN,
                            "embedding errors in the notes; plain PTQ model kept"});
  }
  say("SmoothQuant: " + (out.used ? "alpha " + fixed(out.alpha, 2) + " kept, test " +
                                        fixed(base.test * 100, 2) + "%"
                                  : std::string("no alpha beat plain PTQ on validation")));
  results.durations.emplace_back("SmoothQuant alphas", seconds_since(start));
  return out;
}

// ---- 3. Sensitivity and fallback -------------------------------------------------------------

struct SensitivityAndFallback {
  int64_t ranked_reviews = 0;  ///< validation reviews the ranking used
  tquant::SensitivityReport sensitivity;
  tquant::FallbackReport fallback;
  std::vector<std::string> float_groups;  ///< kept float by the fallback, in ranking order
  double fallback_test = kNaN;
  /// The parameters of the PTQ model (QAT trains them; step 5 may restore them).
  std::vector<at::Tensor> ptq_parameters;
};

// One group per sub-layer (full run) or per layer (--quick), plus the word embeddings.
std::vector<std::string> sensitivity_groups(const bert::BertConfig& config, bool quick) {
  std::vector<std::string> groups;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string prefix = "bert.encoder.layer." + std::to_string(l) + ".";
    if (quick) {
      groups.push_back(prefix + "*");
    } else {
      groups.push_back(prefix + "attention.self");
      groups.push_back(prefix + "attention.output");
      groups.push_back(prefix + "intermediate");
      groups.push_back(prefix + "output");
    }
  }
  groups.push_back("bert.embeddings.word_embeddings");
  return groups;
}

// Ranking: a smooth, cheap proxy, the sentence-embedding error against FP32 (mean 1 - cosine)
// on the first validation reviews; accuracy on a few hundred reviews moves in whole reviews
// and would rank 25 groups mostly by noise.
tquant::SensitivityReport rank_sensitivity(bert::BertClassifierImpl& model,
                                           const std::vector<std::string>& groups,
                                           int64_t ranked_reviews,
                                           const bert::DemoOptions& options, const DemoData& data,
                                           const Fp32Baseline& fp32) {
  const at::Tensor reference_embeddings = fp32.validation.embeddings.narrow(0, 0, ranked_reviews);
  auto ranked_embedding_error = [&] {
    const bert::EvalResult r = bert::evaluate(model, data.validation, options.batch_size,
                                              "sensitivity eval", /*keep_embeddings=*/true,
                                              static_cast<size_t>(ranked_reviews));
    return bert::embedding_error(reference_embeddings, r.embeddings);
  };
  const int64_t evaluations = 2 + 2 * static_cast<int64_t>(groups.size());
  say("3. sensitivity: " + std::to_string(groups.size()) + " groups, " +
      std::to_string(evaluations) + " evaluations of the embedding error on " +
      std::to_string(ranked_reviews) + " validation reviews");
  bert::DemoProgress progress("sensitivity", evaluations, "evaluations", 0.0);
  torch::NoGradGuard no_grad;
  return tquant::analyze_sensitivity(
      model, ranked_embedding_error,
      tquant::SensitivityOptions().groups(groups).higher_is_better(false).on_progress(
          [&](int64_t, int64_t) { progress.step(); }));
}

// The most sensitive groups to float, in ranking order, until accuracy on the whole validation
// split is within the budget of FP32's.
tquant::FallbackReport fall_back_to_float(bert::BertClassifierImpl& model,
                                          const tquant::SensitivityReport& sensitivity,
                                          const bert::DemoOptions& options, const DemoData& data,
                                          const Fp32Baseline& fp32) {
  auto validation_accuracy = [&] {
    return bert::evaluate(model, data.validation, options.batch_size, "fallback eval").accuracy;
  };
  torch::NoGradGuard no_grad;
  return tquant::fallback_to_float(
      model, sensitivity, validation_accuracy,
      tquant::FallbackCriterion{fp32.validation.accuracy, /*higher_is_better=*/true},
      options.fallback_budget, [&](const tquant::FallbackStep& step) {
        say("fallback: " + step.group + " -> float, validation " + fixed(step.metric * 100, 2) +
            "%");
      });
}

SensitivityAndFallback sensitivity_and_fallback(bert::BertClassifierImpl& model,
                                                const std::vector<std::string>& groups,
                                                const bert::DemoOptions& options,
                                                const DemoData& data, const Fp32Baseline& fp32,
                                                const Scenario& scenario, const LadderBase& base,
                                                bert::DemoResults& results) {
  SensitivityAndFallback out;
  auto start = Clock::now();
  out.ranked_reviews =
      std::min<int64_t>(options.sensitivity_reviews, static_cast<int64_t>(data.validation.size()));
  out.sensitivity = rank_sensitivity(model, groups, out.ranked_reviews, options, data, fp32);
  bert::write_text_file(scenario.file(options, "sensitivity_report.txt"),
                        out.sensitivity.to_string());
  std::cout << out.sensitivity.to_string() << std::endl;
  results.durations.emplace_back("sensitivity analysis", seconds_since(start));

  start = Clock::now();
  out.ptq_parameters = bert::snapshot_parameters(model);
  out.fallback = fall_back_to_float(model, out.sensitivity, options, data, fp32);
  std::cout << out.fallback.to_string() << std::endl;
  out.float_groups = out.fallback.float_groups();
  out.fallback_test =
      bert::evaluate(model, data.test, options.batch_size, "fallback test").accuracy;
  results.rows.push_back({"fallback", std::to_string(out.float_groups.size()) + " group(s) float",
                          out.fallback.final_metric, out.fallback_test,
                          out.fallback.within_budget ? "within budget on validation"
                                                     : "budget not reached"});
  results.notes.push_back("kept in float by the fallback (" + base.label +
                          "): " + kept_in_float(out.float_groups));
  results.durations.emplace_back("fallback to float", seconds_since(start));
  return out;
}

// ---- 4. QAT ----------------------------------------------------------------------------------

struct Qat {
  /// The checkpoint kept: the lowest validation embedding error against FP32, and its accuracy.
  double best_error = kNaN;
  double best_validation = kNaN;
  int64_t best_steps = 0;  ///< 0: the start model was best on validation
  double lr = kNaN;        ///< the learning rate of the run kept
  double test = kNaN;
};

// The training every QAT run shares: `steps` of AdamW at `lr` (learned quantizer
// scales, if any, in their own group at `scale_lr`) with the FP32 teacher's embeddings
// distilled, a validation checkpoint every qat_steps / qat_checkpoints steps. The checkpoint
// kept (and left in the model) is the one with the lowest validation embedding error against
// FP32 (0 steps, `start`, included), as the calibrator is chosen: QAT with distillation aims
// at FP32, and accuracy on 500 reviews moves in whole reviews (the first full run of this
// grid chose on accuracy: docs/bert.md). Test is not looked at here. One note with the curve.
Qat train_qat(bert::BertClassifierImpl& model, bert::BertClassifierImpl& teacher,
              const bert::DemoOptions& options, const DemoData& data, const Fp32Baseline& fp32,
              const std::string& stage, const LadderBase& start,
              std::vector<at::Tensor> start_parameters, int64_t steps, double lr, double scale_lr,
              bert::DemoResults& results) {
  Qat out;
  out.lr = lr;
  out.best_validation = start.validation;
  out.best_error = start.embedding_error;
  std::vector<at::Tensor> best_parameters = std::move(start_parameters);
  auto checkpoint_text = [](int64_t step, double accuracy, double error) {
    return std::to_string(step) + ": " + fixed(accuracy * 100, 2) + "% / " +
           fixed(error * 1000, 1) + "e-3";
  };
  std::string curve_text = checkpoint_text(0, start.validation, start.embedding_error);
  if (steps > 0) {
    bert::TrainSettings settings;
    settings.steps = steps;
    settings.batch_size = options.batch_size;
    settings.encoder_lr = lr;
    settings.head_lr = lr;
    settings.scale_lr = scale_lr;
    settings.warmup_fraction = 0.0;
    settings.seed = options.seed + 2;
    settings.label = stage;
    settings.teacher = &teacher;
    settings.distill_weight = options.qat_distill_weight;
    settings.dropout = false;
    const int64_t every = std::max<int64_t>(1, steps / options.qat_checkpoints);
    say("4. " + stage + ": " + std::to_string(steps) + " steps at lr " +
        bert::scientific(lr) +
        (scale_lr > 0 ? " (scales " + bert::scientific(scale_lr) + ")" : std::string()) +
        ", validation every " + std::to_string(every) + " steps");
    bert::train_classifier(model, data.train, settings, every, [&](int64_t step) {
      const bert::EvalResult r = bert::evaluate(model, data.validation, options.batch_size,
                                                stage + " validation", /*keep_embeddings=*/true);
      const double error = bert::embedding_error(fp32.validation.embeddings, r.embeddings);
      curve_text += ", " + checkpoint_text(step, r.accuracy, error);
      say(stage + " step " + std::to_string(step) + ": validation " + fixed(r.accuracy * 100, 2) +
          "%, embedding error " + fixed(error * 1000, 3) + "e-3");
      if (error < out.best_error) {
        out.best_error = error;
        out.best_validation = r.accuracy;
        out.best_steps = step;
        best_parameters = bert::snapshot_parameters(model);
      }
    });
  }
  bert::restore_parameters(model, best_parameters);
  results.notes.push_back(stage + " validation accuracy / embedding error by step: " + curve_text);
  return out;
}

// QAT runs from the same start, one per learning rate of `lrs`; the run whose kept checkpoint
// has the lowest validation embedding error is kept (the first on ties) and left in the model,
// its test accuracy measured (start.test when it chose 0 steps and that is known). One row per
// run.
Qat qat_lr_grid(bert::BertClassifierImpl& model, bert::BertClassifierImpl& teacher,
                const bert::DemoOptions& options, const DemoData& data, const Fp32Baseline& fp32,
                const std::string& stage, const LadderBase& start,
                const std::vector<at::Tensor>& start_parameters, int64_t steps,
                const std::vector<double>& lrs, double scale_lr, bert::DemoResults& results) {
  size_t best = 0;
  std::vector<at::Tensor> best_parameters;
  std::vector<Qat> runs;
  for (const double lr : lrs) {
    const std::string label = lrs.size() > 1 ? stage + " lr " + bert::scientific(lr) : stage;
    bert::restore_parameters(model, start_parameters);
    Qat run = train_qat(model, teacher, options, data, fp32, label, start, start_parameters,
                        steps, lr, scale_lr, results);
    if (runs.empty() || run.best_error < runs[best].best_error) {
      best = runs.size();
      best_parameters = bert::snapshot_parameters(model);
    }
    runs.push_back(run);
  }
  bert::restore_parameters(model, best_parameters);
  Qat& kept_run = runs[best];
  kept_run.test = kept_run.best_steps == 0 && !std::isnan(start.test)
                      ? start.test
                      : bert::evaluate(model, data.test, options.batch_size, stage + " test")
                            .accuracy;
  for (size_t i = 0; i < runs.size(); ++i) {
    const Qat& run = runs[i];
    const bool kept = i == best;
    results.rows.push_back(
        {stage, std::to_string(run.best_steps) + " of " + std::to_string(steps) +
                    " steps at lr " + bert::scientific(run.lr) + " (" + start.label + ")",
         run.best_validation, run.test,
         "emb. error " + fixed(run.best_error * 1000, 2) + "e-3" +
             (lrs.size() > 1 ? (kept ? ", length and lr chosen on validation" : ", not chosen")
                             : ", length chosen on validation")});
  }
  return kept_run;
}

// From the fully quantized base model (the best PTQ, with SmoothQuant when step 2b kept it; the
// fallback groups switched back on), a short fine-tune with frozen activation ranges and weight
// scales (NVIDIA's recipe: calibrate, then fine-tune with fixed ranges); the straight-through
// gradients train the float weights. The loss distills the FP32 teacher's sentence embeddings
// besides the labels: QAT should bring the quantized model back toward FP32, not fine-tune it
// somewhere else. Dropout is off, so the distillation term is the quantization error itself
// (the teacher runs in eval mode). One run per learning rate of the scenario; the length and
// the rate are chosen on validation (0 steps included). Leaves the model with the choice.
// `start`: when the step began (loading the teacher counts to it).
Qat qat(bert::BertClassifierImpl& model, bert::BertClassifierImpl& teacher,
        const bert::DemoOptions& options, const DemoData& data, const Fp32Baseline& fp32,
        const Scenario& scenario,
        const LadderBase& base, const SensitivityAndFallback& fallback,
        bert::DemoResults& results, Clock::time_point start) {
  for (const auto& group : fallback.float_groups) tquant::enable_quantizers(model, group, true);
  // Ranges stay the calibrated ones during QAT and its evaluations.
  tquant::enable_observers(model, false);
  Qat out = qat_lr_grid(model, teacher, options, data, fp32, "QAT", base,
                        fallback.ptq_parameters, scenario.qat_steps, scenario.qat_lrs,
                        /*scale_lr=*/0.0, results);
  results.durations.emplace_back("QAT", seconds_since(start));
  return out;
}

// QAT with learned scales (W4A8 scenario): a fresh FP32 model prepared with the LSQ mapping
// (the int4 weight scales and the encoder Linears' input scales are parameters), smoothed as
// step 2b chose, calibrated (the scales start at the calibrated ranges), then the same training
// as qat() at the learning rate fixed-scale QAT chose, with the scales in their own AdamW group
// (no weight decay, lr options.qat_scale_lr). Returns the trained model in `lsq_model`.
Qat qat_lsq(const tquant::QConfigMapping& lsq_mapping, double smooth_alpha, int64_t steps,
            double lr,
            bert::BertClassifierImpl& teacher, const bert::DemoOptions& options,
            const DemoData& data, const Fp32Baseline& fp32, const LadderBase& base,
            const bert::RangeChoice& choice, bert::BertClassifier& lsq_model,
            bert::DemoResults& results) {
  const auto step_start = Clock::now();
  lsq_model = calibrated_copy(lsq_mapping, smooth_alpha, options, data, fp32, choice, nullptr);
  tquant::enable_observers(*lsq_model, false);
  const bert::EvalResult r = bert::evaluate(*lsq_model, data.validation, options.batch_size,
                                            "QAT LSQ validation", /*keep_embeddings=*/true);
  const LadderBase start{base.label + ", LSQ", r.accuracy, kNaN,
                         bert::embedding_error(fp32.validation.embeddings, r.embeddings)};
  say("QAT LSQ: calibrated start, validation " + fixed(start.validation * 100, 2) +
      "%, embedding error " + fixed(start.embedding_error * 1000, 3) + "e-3");
  Qat out = qat_lr_grid(*lsq_model, teacher, options, data, fp32, "QAT LSQ", start,
                        bert::snapshot_parameters(*lsq_model), steps, {lr},
                        options.qat_scale_lr, results);
  results.durations.emplace_back("QAT LSQ", seconds_since(step_start));
  return out;
}

// ---- 5. Convert and measure ------------------------------------------------------------------

struct Converted {
  bert::EvalResult test;  ///< with embeddings
  std::string path;       ///< the INT8 file (tquant::save_state)
  double speedup = kNaN;  ///< CPU latency FP32 / INT8
  double cosine_mean = kNaN;
};

// Of the fallback model and the QAT model, the one with the higher validation accuracy (QAT on
// a tie, since it is fully int8) goes through tquant::convert.
Converted convert_better_model(bert::BertClassifierImpl& model, const Scenario& scenario,
                               const bert::DemoOptions& options, const DemoData& data,
                               const SensitivityAndFallback& fallback, const Qat& qat,
                               bert::DemoResults& results) {
  const auto start = Clock::now();
  const bool use_qat = qat.best_validation >= fallback.fallback.final_metric;
  if (!use_qat) {
    bert::restore_parameters(model, fallback.ptq_parameters);
    for (const auto& group : fallback.float_groups) {
      tquant::enable_quantizers(model, group, false);
    }
  }
  const std::string converted_from =
      !use_qat ? "PTQ model with " + std::to_string(fallback.float_groups.size()) +
                     " group(s) float"
      : qat.best_steps > 0 ? "QAT model (all groups quantized)"
                           : "PTQ model (all groups quantized; QAT chose 0 steps)";
  say("5. convert the " + scenario.name + " " + converted_from + " (higher validation accuracy)");
  const tquant::ConvertReport report = tquant::convert(model);
  bert::write_text_file(scenario.file(options, "convert_report.txt"), report.to_string());
  say(bert::last_line(report.to_string()) + " (full report: " + scenario.file_prefix +
      "convert_report.txt); " + bert::mode_summary(model));
  const bert::EvalResult validation =
      bert::evaluate(model, data.validation, options.batch_size, scenario.name + " validation");
  Converted out;
  out.test = bert::evaluate(model, data.test, options.batch_size, scenario.name + " test",
                            /*keep_embeddings=*/true);
  results.rows.push_back({"converted", converted_from, validation.accuracy, out.test.accuracy,
                          "INT8 GEMMs (tquant::convert)"});
  results.durations.emplace_back("convert + evaluation", seconds_since(start));
  return out;
}

// The converted model saved with tquant::save_state, its size against the FP32 checkpoint's.
void measure_size(bert::BertClassifierImpl& model, const Scenario& scenario,
                  const bert::DemoOptions& options, const Fp32Baseline& fp32,
                  Converted& converted, bert::DemoResults& results) {
  converted.path = options.out_dir + "/" + scenario.model_file;
  tquant::save_state(model, converted.path, tquant::SaveOptions().include_histograms(false));
  const double int8_mb = std::filesystem::file_size(converted.path) / 1e6;
  const double fp32_mb = std::filesystem::file_size(fp32.checkpoint) / 1e6;
  results.measurements.emplace_back("model file FP32 (fine-tuned classifier, safetensors)",
                                    fixed(fp32_mb, 1) + " MB");
  results.measurements.emplace_back("model file " + scenario.name +
                                        " (tquant::save_state of the converted model)",
                                    fixed(int8_mb, 1) + " MB (" + fixed(fp32_mb / int8_mb, 2) +
                                        "x smaller)");
}

// latency_batch test reviews (the longest, as the length-sorted evaluation order puts them
// first) padded to latency_seq tokens.
bert::DemoBatch latency_batch(const bert::DemoOptions& options, const DemoData& data) {
  std::vector<std::string> texts;
  const auto order = bert::length_sorted_batches(data.test, options.latency_batch);
  for (size_t i : order.front()) texts.push_back(data.test_reviews[i].text);
  const bert::BatchEncoding inputs =
      data.tokenizer.encode_batch(texts, options.latency_seq, bert::Padding::kMaxLength);
  return {inputs.input_ids, inputs.token_type_ids, inputs.attention_mask,
          torch::zeros({inputs.input_ids.size(0)}, torch::kInt64)};
}

// A forward of `model` on `batch` (eval mode, no gradients), as a call to time.
std::function<void()> forward_call(bert::BertClassifierImpl& model, const bert::DemoBatch& batch) {
  model.eval();
  return [&model, &batch] {
    torch::NoGradGuard no_grad;
    model.forward(batch.input_ids, batch.token_type_ids, batch.attention_mask);
  };
}

// A fresh FP32 model from the checkpoint against the converted one, timed as the peer bench
// times (lib/latency.h): warm-up, then rounds in which both run once, in alternating order, so
// that both see the same machine load; the median over the rounds.
void measure_latency(bert::BertClassifierImpl& fp32_model, bert::BertClassifierImpl& model,
                     const bert::DemoBatch& batch, const Scenario& scenario,
                     const bert::DemoOptions& options, Converted& converted,
                     bert::DemoResults& results) {
  say("latency: batch " + std::to_string(batch.size()) + " x seq " +
      std::to_string(batch.input_ids.size(1)) + ", " + std::to_string(options.threads) +
      " thread(s), " + std::to_string(options.latency_warmup) + " warm-up forward(s) each, then " +
      std::to_string(options.latency_rounds) +
      " rounds with FP32 and " + scenario.name +
      " interleaved, median over the rounds (the peer bench's method)");
  const bert::RoundTimes times = bert::interleaved_rounds(
      {forward_call(fp32_model, batch), forward_call(model, batch)}, options.latency_warmup,
      options.latency_rounds, /*reps_per_round=*/1,
      [&scenario](int64_t round, const std::vector<double>& ms) {
        say("latency round " + std::to_string(round + 1) + ": FP32 " + fixed(ms[0], 1) +
            " ms, " + scenario.name + " " + fixed(ms[1], 1) + " ms");
      });
  const double fp32_latency = times.median[0];
  const double int8_latency = times.median[1];
  converted.speedup = fp32_latency / int8_latency;
  results.measurements.emplace_back(
      "CPU latency FP32, batch " + std::to_string(options.latency_batch) + " x seq " +
          std::to_string(options.latency_seq) + ", " + std::to_string(options.threads) + " threads",
      fixed(fp32_latency, 1) + " ms (median of " + std::to_string(options.latency_rounds) +
          " interleaved rounds)");
  results.measurements.emplace_back(
      "CPU latency " + scenario.name + ", same batch",
      fixed(int8_latency, 1) + " ms (" + fixed(converted.speedup, 2) + "x)");
}

// Serving after a load: a freshly built classifier (float, as constructed) gets the INT8 file
// with tquant::load_state, which prepares everything a forward needs; its first forward against
// the median of the `latency_rounds` that follow. Earlier steps already warmed the process
// (oneDNN, MKL, thread pool), so a difference is the model's own first-call work.
void measure_first_call(const bert::BertConfig& config, const bert::DemoBatch& batch,
                        const Scenario& scenario, const bert::DemoOptions& options,
                        const Converted& converted, bert::DemoResults& results) {
  bert::BertClassifier loaded(config, 2);
  tquant::load_state(*loaded, converted.path);
  const std::vector<double> ms =
      bert::time_calls_ms(forward_call(*loaded, batch), 1 + options.latency_rounds);
  const double first = ms.front();
  const double steady = bert::median(std::vector<double>(ms.begin() + 1, ms.end()));
  say("first call after tquant::load_state: " + fixed(first, 1) + " ms, then median " +
      fixed(steady, 1) + " ms");
  results.measurements.emplace_back(
      "CPU " + scenario.name + " first call after tquant::load_state into a fresh model, same batch",
      fixed(first, 1) + " ms, then " + fixed(steady, 1) + " ms (median of the next " +
          std::to_string(options.latency_rounds) + "; first / steady " +
          fixed(first / steady, 2) + "x)");
}

// Cosine of INT8 and FP32 sentence embeddings on the test reviews (rows are L2-normalized: the
// dot product is the cosine).
void measure_embedding_agreement(const Fp32Baseline& fp32, const Scenario& scenario,
                                 Converted& converted, bert::DemoResults& results) {
  const at::Tensor cosines = (fp32.test.embeddings * converted.test.embeddings).sum(-1);
  converted.cosine_mean = cosines.mean().item<double>();
  results.measurements.emplace_back(
      "sentence embedding cosine " + scenario.name + " vs FP32 (test, mean-pooled normalized)",
      "mean " + fixed(converted.cosine_mean, 5) + ", min " + fixed(cosines.min().item<double>(), 5));
}

// GPU: the converted model (cuBLASLt INT8 GEMMs) against the FP32 model in bf16. Last, because
// it moves both models to the GPU. A failure is reported, not fatal: everything above is
// already measured.
void compare_on_gpu(bert::BertClassifierImpl& fp32_model, bert::BertClassifierImpl& model,
                    const bert::DemoBatch& batch, const bert::DemoOptions& options,
                    bert::DemoResults& results) {
  if (!torch::cuda::is_available()) {
    results.measurements.emplace_back("CUDA",
                                      "no CUDA GPU present: INT8 vs bf16 on GPU not measured");
    say("no CUDA GPU present: the GPU comparison (INT8 vs bf16) is skipped");
    return;
  }
  say("CUDA: INT8 vs bf16 on the GPU, same batch");
  try {
    const bert::CudaComparison gpu = bert::compare_on_cuda(
        fp32_model, model, batch, options.latency_warmup, options.latency_rounds);
    results.measurements.emplace_back("CUDA latency bf16 (" + gpu.device + "), same batch",
                                      fixed(gpu.bf16_ms, 2) + " ms");
    results.measurements.emplace_back(
        "CUDA latency INT8 (converted model, cuBLASLt)",
        fixed(gpu.int8_ms, 2) + " ms (" + fixed(gpu.bf16_ms / gpu.int8_ms, 2) + "x bf16)");
    results.measurements.emplace_back("INT8 logits GPU vs CPU, max abs difference",
                                      fixed(gpu.int8_gpu_vs_cpu_max_abs, 6));
  } catch (const std::exception& error) {
    const std::string what = error.what();
    results.measurements.emplace_back("CUDA",
                                      "GPU comparison failed: " + what.substr(0, what.find('\n')));
    say("CUDA comparison failed: " + what);
  }
}

Converted convert_and_measure(bert::BertClassifierImpl& model, bert::BertClassifierImpl& fp32_model,
                              const Scenario& scenario, const bert::DemoOptions& options,
                              const DemoData& data, const Fp32Baseline& fp32,
                              const SensitivityAndFallback& fallback, const Qat& qat,
                              bert::DemoResults& results) {
  Converted converted =
      convert_better_model(model, scenario, options, data, fallback, qat, results);
  const auto start = Clock::now();
  measure_size(model, scenario, options, fp32, converted, results);
  const bert::DemoBatch batch = latency_batch(options, data);
  measure_latency(fp32_model, model, batch, scenario, options, converted, results);
  measure_first_call(fp32.config, batch, scenario, options, converted, results);
  results.durations.emplace_back("size + latency", seconds_since(start));
  measure_embedding_agreement(fp32, scenario, converted, results);
  compare_on_gpu(fp32_model, model, batch, options, results);
  return converted;
}

// ---- 6. Outputs ------------------------------------------------------------------------------

// What one scenario's steps produced.
struct ScenarioRun {
  Scenario scenario;
  Ptq ptq_result;
  LadderBase base;
  SmoothQuantStep smooth;
  SensitivityAndFallback fallback;
  bool lsq_converted = false;  ///< step 5 converted the LSQ model
  Qat qat_result;
  Converted converted;
};

bert::GoalRow gap_goal(const std::string& goal, double fp32_acc, double acc, double max_points) {
  const double gap = fp32_acc - acc;
  return bert::GoalRow{goal, "within " + fixed(max_points, 1) + " pt of FP32 (test)",
                       fixed(acc * 100, 2) + "% vs " + fixed(fp32_acc * 100, 2) + "% (" +
                           bert::points(acc - fp32_acc) + ")",
                       gap * 100.0 <= max_points + 1e-9};
}

// The goals of the INT8 scenario, met or missed as measured.
void mark_int8_goals(const Fp32Baseline& fp32, const ScenarioRun& run, bert::DemoResults& results) {
  const double fp32_acc = fp32.test.accuracy;
  const Ptq& ptq = run.ptq_result;
  results.goals.push_back(gap_goal("INT8 best PTQ (" + ptq.best_choice().label + ")", fp32_acc,
                                   ptq.test[ptq.best], 1.0));
  results.goals.push_back(
      gap_goal("INT8 sensitivity fallback", fp32_acc, run.fallback.fallback_test, 0.5));
  results.goals.push_back(gap_goal("INT8 QAT", fp32_acc, run.qat_result.test, 0.3));
  results.goals.push_back({"INT8 CPU latency at batch 32", ">= 1.5x FP32",
                           fixed(run.converted.speedup, 2) + "x", run.converted.speedup >= 1.5});
  results.goals.push_back({"embedding cosine INT8 vs FP32", ">= 0.99 mean",
                           fixed(run.converted.cosine_mean, 5), run.converted.cosine_mean >= 0.99});
}

// The goals of the W4A8 scenario: the setting is aggressive (plain max / percentile PTQ
// loses >= 1.5 points on validation), QAT within 0.5 point of FP32 on test and >= 1 point above
// the best fully quantized PTQ model (the chosen calibrator, with SmoothQuant when it won).
void mark_w4a8_goals(const Fp32Baseline& fp32, const ScenarioRun& run,
                     bert::DemoResults& results) {
  const Ptq& ptq = run.ptq_result;
  double plain = kNaN;
  std::string plain_label;
  for (size_t i = 0; i < ptq.choices.size(); ++i) {
    const auto method = ptq.choices[i].method;
    if (method != tquant::CalibrationMethod::kMax &&
        method != tquant::CalibrationMethod::kPercentile) {
      continue;
    }
    if (!(ptq.validation[i] <= plain)) {
      plain = ptq.validation[i];
      plain_label = ptq.choices[i].label;
    }
  }
  const double loss = fp32.validation.accuracy - plain;
  results.goals.push_back({"W4A8 plain PTQ, best of max / percentile (" + plain_label + ")",
                           ">= 1.5 pt below FP32 (validation): the setting is aggressive",
                           fixed(plain * 100, 2) + "% vs " +
                               fixed(fp32.validation.accuracy * 100, 2) + "% (" +
                               bert::points(plain - fp32.validation.accuracy) + ")",
                           loss * 100.0 >= 1.5 - 1e-9});
  results.goals.push_back(gap_goal("W4A8 QAT", fp32.test.accuracy, run.qat_result.test, 0.5));
  const double best_ptq = std::max(ptq.test[ptq.best], run.base.test);
  const double gain = run.qat_result.test - best_ptq;
  results.goals.push_back({"W4A8 QAT vs best PTQ (" + run.base.label + ")",
                           ">= 1.0 pt above (test)",
                           fixed(run.qat_result.test * 100, 2) + "% vs " +
                               fixed(best_ptq * 100, 2) + "% (" + bert::points(gain) + ")",
                           gain * 100.0 >= 1.0 - 1e-9});
}

// The smoothed layer whose input has the strongest outlier channel (largest max |x_j| over
// the median over j): the one where SmoothQuant has the most to do. Null if none.
const tquant::SmoothedLayer* most_outlying_layer(const tquant::SmoothQuantReport& report) {
  const tquant::SmoothedLayer* chosen = nullptr;
  double chosen_ratio = 0.0;
  for (const auto& layer : report.layers) {
    const double median = layer.act_amax.median().item<double>();
    const double ratio = layer.act_amax.max().item<double>() / std::max(median, 1e-12);
    if (std::isfinite(ratio) && ratio > chosen_ratio) {
      chosen_ratio = ratio;
      chosen = &layer;
    }
  }
  return chosen;
}

// The calibration report's lines, sensitivity bars, SmoothQuant chart and histograms of one
// scenario.
void add_to_html_report(const ScenarioRun& run,
                        std::vector<std::string>& summary,
                        std::vector<bert::QuantizerHistogram>& histograms,
                        std::vector<bert::SensitivityBar>& bars,
                        std::vector<bert::SmoothQuantChart>& smooth_quant) {
  const std::string& name = run.scenario.name;
  const Ptq& ptq = run.ptq_result;
  const SensitivityAndFallback& fallback = run.fallback;
  for (const auto& g : fallback.sensitivity.groups) {
    bars.push_back({name + " " + g.group, g.recovery_when_float * 1000.0,
                    g.drop_when_quantized * 1000.0,
                    std::find(fallback.float_groups.begin(), fallback.float_groups.end(),
                              g.group) != fallback.float_groups.end()});
  }
  for (size_t i = 0; i < ptq.choices.size(); ++i) {
    summary.push_back(name + " PTQ " + ptq.choices[i].label + ": validation " +
                      fixed(ptq.validation[i] * 100, 2) + "%" +
                      (i == ptq.best ? ", test " + fixed(ptq.test[i] * 100, 2) +
                                           "%  <- chosen on validation"
                                     : ""));
  }
  if (run.base.label != ptq.best_choice().label) {
    summary.push_back(name + " " + run.base.label + ": validation " +
                      fixed(run.base.validation * 100, 2) + "%, test " +
                      fixed(run.base.test * 100, 2) + "%");
  }
  summary.push_back(name + " sensitivity: embedding error against FP32 (mean 1 - cosine) on " +
                    std::to_string(fallback.ranked_reviews) +
                    " validation reviews, all groups quantized " +
                    fixed(fallback.sensitivity.quantized_metric, 5) +
                    "; fallback on validation accuracy (all quantized " +
                    fixed(fallback.fallback.quantized_metric * 100, 2) +
                    "%), kept in float: " + kept_in_float(fallback.float_groups));
  summary.push_back(name + " QAT: " + std::to_string(run.qat_result.best_steps) + " of " +
                    std::to_string(run.scenario.qat_steps) + " steps, test " +
                    fixed(run.qat_result.test * 100, 2) + "%; converted: test " +
                    fixed(run.converted.test.accuracy * 100, 2) + "%");
  if (const tquant::SmoothedLayer* layer = most_outlying_layer(run.smooth.report)) {
    smooth_quant.push_back({name, *layer, run.smooth.used});
    summary.push_back(name + " SmoothQuant chart: " + layer->name + ", the smoothed layer with the "
                      "strongest outlier channel (max |x_j| over the median), at alpha " +
                      fixed(run.smooth.alpha, 2) + " (the lowest validation embedding "
                      "error of the alphas tried; " +
                      (run.smooth.used ? "kept" : "not kept: plain PTQ was better") + ")");
  }
  for (bert::QuantizerHistogram h : ptq.histograms) {
    h.name = name + " " + h.name;
    h.chosen = ptq.best_choice().label;
    histograms.push_back(std::move(h));
  }
}

// calibration_report.html: a summary, the sensitivity chart, every quantizer's histogram, for
// every scenario run.
void write_html_report(const bert::DemoOptions& options, const bert::DemoResults& results,
                       const Fp32Baseline& fp32, const std::vector<ScenarioRun>& runs) {
  std::vector<std::string> summary = {
      std::string("mode: ") + results.mode + "; each scenario calibrated once on " +
          std::to_string(runs.front().ptq_result.calibration.batches) + " batches of " +
          std::to_string(options.batch_size) + " training reviews (seq " +
          std::to_string(options.seq_len) + ")",
      "FP32 validation " + fixed(fp32.validation.accuracy * 100, 2) + "%, test " +
          fixed(fp32.test.accuracy * 100, 2) + "%",
  };
  std::vector<bert::QuantizerHistogram> histograms;
  std::vector<bert::SensitivityBar> bars;
  std::vector<bert::SmoothQuantChart> smooth_quant;
  for (const auto& run : runs) {
    add_to_html_report(run, summary, histograms, bars, smooth_quant);
  }
  bert::write_calibration_report(
      options.out_dir + "/calibration_report.html",
      "tquant calibration report: MiniLM-L6 on fine-food reviews", summary,
      runs.front().ptq_result.choices, runs.front().ptq_result.best_choice().label, histograms,
      bars,
      "embedding error against FP32: mean (1 - cosine) x 1000 on " +
          std::to_string(runs.front().fallback.ranked_reviews) + " validation reviews",
      smooth_quant);
}

// The closing notes, then results.md / results.json / calibration_report.html and the table
// on stdout.
void write_outputs(const bert::DemoOptions& options, const DemoData& data,
                   const Fp32Baseline& fp32, const std::vector<ScenarioRun>& runs,
                   Clock::time_point demo_start, bert::DemoResults& results) {
  const size_t validation = data.validation.size(), test = data.test.size();
  results.notes.push_back("validation = " + std::to_string(validation) +
                          " held-out training reviews (1 review = " +
                          fixed(100.0 / std::max<size_t>(1, validation), 2) + " pt); test = " +
                          std::to_string(test) + " reviews (1 review = " +
                          fixed(100.0 / std::max<size_t>(1, test), 2) + " pt)");
  results.durations.emplace_back("total", seconds_since(demo_start));
  results.machine += ", at end " + bert::load_average();

  write_html_report(options, results, fp32, runs);
  bert::write_text_file(options.out_dir + "/results.md", bert::results_markdown(results));
  bert::write_text_file(options.out_dir + "/results.json", bert::results_json(results));
  std::cout << "\n" << bert::format_results(results) << std::endl;
  std::cout << "wrote " << options.out_dir << "/results.md, results.json, calibration_report.html"
            << std::endl;
}

// ---- the run ---------------------------------------------------------------------------------

bert::DemoResults start_results(const bert::DemoOptions& options) {
  bert::DemoResults results;
  results.mode = options.quick ? "quick" : "full";
  results.settings = bert::describe(options);
  results.machine = "CPU threads " + std::to_string(torch::get_num_threads()) + ", " +
                    (torch::cuda::is_available() ? "CUDA GPU present" : "no CUDA GPU present") +
                    ", " + std::to_string(std::thread::hardware_concurrency()) +
                    " hardware threads, load average at start " + bert::load_average();
  say("settings\n" + results.settings + "\n" + results.machine);
  return results;
}

// Steps 2-5 for one scenario on a fresh copy of the fine-tuned FP32 model; the rows, notes,
// measurements and timings it adds carry the scenario's name.
ScenarioRun run_scenario(const std::string& key, const bert::DemoOptions& options,
                         const DemoData& data, const Fp32Baseline& fp32,
                         bert::DemoResults& results) {
  const size_t rows = results.rows.size(), notes = results.notes.size(),
               measurements = results.measurements.size(), durations = results.durations.size();
  ScenarioRun run;
  run.scenario = make_scenario(key, options);
  say("==== scenario " + run.scenario.name + " ====");
  const auto seed = static_cast<uint64_t>(options.seed);
  bert::BertClassifier model = load_fp32_classifier(fp32.config, fp32.checkpoint, seed);
  run.ptq_result = ptq(*model, run.scenario, options, data, fp32, results);
  const Ptq& ptq_result = run.ptq_result;
  run.base = {ptq_result.best_choice().label, ptq_result.validation[ptq_result.best],
              ptq_result.test[ptq_result.best], ptq_result.embedding_error[ptq_result.best]};
  if (run.scenario.smooth_quant) {
    run.smooth =
        smooth_quant_step(model, run.scenario, options, data, fp32, ptq_result, run.base, results);
  }
  // W4A8 ranks one group per layer in the full run too (as --quick does): 7 groups instead of
  // 25 keep the two-scenario full run under 30 minutes (docs/bert.md).
  const bool per_layer_groups = options.quick || key == "w4a8";
  run.fallback = sensitivity_and_fallback(*model, sensitivity_groups(fp32.config, per_layer_groups),
                                          options, data, fp32, run.scenario, run.base, results);
  const auto qat_start = Clock::now();
  // The teacher of QAT and the FP32 baseline of step 5's latency.
  bert::BertClassifier fp32_model = load_fp32_classifier(fp32.config, fp32.checkpoint, seed);
  run.qat_result = qat(*model, *fp32_model, options, data, fp32, run.scenario, run.base,
                       run.fallback, results, qat_start);
  if (run.scenario.lsq_mapping) {
    bert::BertClassifier lsq_model = nullptr;
    const double alpha = run.smooth.used ? run.smooth.alpha : kNaN;
    const Qat lsq = qat_lsq(*run.scenario.lsq_mapping, alpha, run.scenario.qat_steps,
                            run.qat_result.lr, *fp32_model,
                            options, data, fp32, run.base, ptq_result.best_choice(), lsq_model,
                            results);
    // The LSQ model goes on to step 5 if its validation embedding error is lower than
    // fixed-scale QAT's and its validation accuracy reaches the fallback model's (which
    // convert_better_model would otherwise restore into it).
    if (lsq.best_error < run.qat_result.best_error &&
        lsq.best_validation >= run.fallback.fallback.final_metric) {
      say("QAT LSQ beats fixed-scale QAT on the validation embedding error: its model goes on to "
          "step 5");
      model = lsq_model;
      run.qat_result = lsq;
      run.lsq_converted = true;
    }
  }
  run.converted = convert_and_measure(*model, *fp32_model, run.scenario, options, data, fp32,
                                      run.fallback, run.qat_result, results);
  if (key == "w4a8") {
    mark_w4a8_goals(fp32, run, results);
  } else {
    mark_int8_goals(fp32, run, results);
  }
  const std::string& name = run.scenario.name;
  for (size_t i = rows; i < results.rows.size(); ++i) {
    results.rows[i].stage = name + " " + results.rows[i].stage;
  }
  for (size_t i = notes; i < results.notes.size(); ++i) {
    results.notes[i] = name + ": " + results.notes[i];
  }
  for (size_t i = measurements; i < results.measurements.size(); ++i) {
    results.measurements[i].first = name + ": " + results.measurements[i].first;
  }
  for (size_t i = durations; i < results.durations.size(); ++i) {
    results.durations[i].first = name + ": " + results.durations[i].first;
  }
  return run;
}

int run(int argc, char** argv) {
  bool help = false;
  const bert::DemoOptions options = bert::parse_demo_options(argc, argv, &help);
  if (help) {
    std::cout << bert::demo_usage();
    return 0;
  }
  const auto demo_start = Clock::now();
  const std::string malloc_setting = bert::raise_malloc_thresholds();
  torch::set_num_threads(options.threads);
  torch::manual_seed(static_cast<uint64_t>(options.seed));
  std::filesystem::create_directories(options.out_dir);
  bert::DemoResults results = start_results(options);
  say(malloc_setting);
  results.notes.push_back(malloc_setting + ", as the peer bench sets them (lib/latency.h)");

  const DemoData data = load_data(options, results);
  const Fp32Baseline fp32 = fp32_baseline(options, data, results);
  std::vector<ScenarioRun> runs;
  for (const std::string& key : bert::demo_scenarios(options)) {
    runs.push_back(run_scenario(key, options, data, fp32, results));
  }
  write_outputs(options, data, fp32, runs, demo_start, results);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "tquant_bert_demo: error: " << error.what() << std::endl;
    return 1;
  }
}
