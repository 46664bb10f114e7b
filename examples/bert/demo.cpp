// The BERT PTQ / QAT demo of issue 5 (README command one): fine-tune all-MiniLM-L6-v2 on Amazon
// fine-food reviews, then post-training quantization with every calibrator from one pass of
// data, per-group sensitivity and automatic fallback to float, a short QAT, conversion to
// INT8 GEMMs, and the measurements (accuracy, size, CPU latency, embedding agreement).
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
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
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

// tquant::prepare with the scenario's mapping, then tquant::calibrate once on training reviews.
tquant::CalibrationReport prepare_and_calibrate(bert::BertClassifierImpl& model,
                                                const tquant::QConfigMapping& mapping,
                                                const bert::DemoOptions& options,
                                                const DemoData& data) {
  const tquant::PrepareReport prepared = tquant::prepare(model, mapping);
  bert::write_text_file(options.out_dir + "/prepare_report.txt", prepared.to_string());
  say("2. PTQ: " + bert::last_line(prepared.to_string()) + " (full report: prepare_report.txt)");

  std::mt19937_64 calibration_rng(options.seed + 1);
  auto batches = bert::shuffled_batches(data.train, options.batch_size, calibration_rng);
  const int64_t count = std::max<int64_t>(
      1, (options.calibration_reviews + options.batch_size - 1) / options.batch_size);
  if (static_cast<int64_t>(batches.size()) > count) batches.resize(count);
  bert::DemoProgress progress_line("calibrate", count, "batches", 0.0);
  tquant::CalibrationReport calibration;
  {
    torch::NoGradGuard no_grad;
    model.eval();
    calibration = tquant::calibrate(
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
  bert::write_text_file(options.out_dir + "/calibration_report.txt", calibration.to_string());
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

Ptq ptq(bert::BertClassifierImpl& model, const tquant::QConfigMapping& mapping,
        const bert::DemoOptions& options, const DemoData& data, const Fp32Baseline& fp32,
        bert::DemoResults& results) {
  Ptq out;
  auto start = Clock::now();
  out.calibration = prepare_and_calibrate(model, mapping, options, data);
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
                          "(mean 1 - cosine of INT8-simulated vs FP32 sentence embeddings); test "
                          "accuracy is measured only for the chosen one");
  results.durations.emplace_back("PTQ: 7 calibrators evaluated", seconds_since(start));
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
                                                const Ptq& ptq, bert::DemoResults& results) {
  SensitivityAndFallback out;
  auto start = Clock::now();
  out.ranked_reviews =
      std::min<int64_t>(options.sensitivity_reviews, static_cast<int64_t>(data.validation.size()));
  out.sensitivity = rank_sensitivity(model, groups, out.ranked_reviews, options, data, fp32);
  bert::write_text_file(options.out_dir + "/sensitivity_report.txt", out.sensitivity.to_string());
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
  results.notes.push_back("kept in float by the fallback (" + ptq.best_choice().label +
                          "): " + kept_in_float(out.float_groups));
  results.durations.emplace_back("fallback to float", seconds_since(start));
  return out;
}

// ---- 4. QAT ----------------------------------------------------------------------------------

struct Qat {
  double best_validation = kNaN;
  int64_t best_steps = 0;  ///< 0: plain PTQ was best on validation
  double test = kNaN;
};

// From the fully quantized best-PTQ model (the fallback groups switched back on), a short
// fine-tune with frozen activation ranges and weight scales (NVIDIA's recipe: calibrate, then
// fine-tune with fixed ranges); the straight-through gradients train the float weights. The
// loss distills the FP32 teacher's sentence embeddings besides the labels: QAT should bring the
// quantized model back toward FP32, not fine-tune it somewhere else. Dropout is off, so the
// distillation term is the quantization error itself (the teacher runs in eval mode). The
// checkpoint best on validation is kept (0 steps included). Leaves the model with it. `start`:
// when the step began (loading the teacher counts to it).
Qat qat(bert::BertClassifierImpl& model, bert::BertClassifierImpl& teacher,
        const bert::DemoOptions& options, const DemoData& data, const Ptq& ptq,
        const SensitivityAndFallback& fallback, bert::DemoResults& results,
        Clock::time_point start) {
  for (const auto& group : fallback.float_groups) tquant::set_quantizers_enabled(model, group, true);
  tquant::freeze_observers(model);  // ranges stay the calibrated ones during QAT and its evaluations
  Qat out;
  out.best_validation = ptq.validation[ptq.best];
  std::vector<at::Tensor> best_parameters = fallback.ptq_parameters;
  std::vector<std::pair<int64_t, double>> curve = {{0, out.best_validation}};
  if (options.qat_steps > 0) {
    bert::TrainSettings settings;
    settings.steps = options.qat_steps;
    settings.batch_size = options.batch_size;
    settings.encoder_lr = options.qat_lr;
    settings.head_lr = options.qat_lr;
    settings.warmup_fraction = 0.0;
    settings.seed = options.seed + 2;
    settings.label = "QAT";
    settings.teacher = &teacher;
    settings.distill_weight = options.qat_distill_weight;
    settings.dropout = false;
    const int64_t every = std::max<int64_t>(1, options.qat_steps / options.qat_checkpoints);
    say("4. QAT: " + std::to_string(options.qat_steps) + " steps at lr " +
        fixed(options.qat_lr * 1e6, 1) + "e-6, validation every " + std::to_string(every) +
        " steps");
    bert::train_classifier(model, data.train, settings, every, [&](int64_t step) {
      const double acc =
          bert::evaluate(model, data.validation, options.batch_size, "QAT validation").accuracy;
      curve.emplace_back(step, acc);
      say("QAT step " + std::to_string(step) + ": validation " + fixed(acc * 100, 2) + "%");
      if (acc > out.best_validation) {
        out.best_validation = acc;
        out.best_steps = step;
        best_parameters = bert::snapshot_parameters(model);
      }
    });
  }
  bert::restore_parameters(model, best_parameters);
  // 0 steps chosen: the model is the fully quantized PTQ model, whose test accuracy is known.
  out.test = out.best_steps == 0
                 ? ptq.test[ptq.best]
                 : bert::evaluate(model, data.test, options.batch_size, "QAT test").accuracy;
  std::string curve_text;
  for (const auto& [s, a] : curve) {
    curve_text += (curve_text.empty() ? "" : ", ") + std::to_string(s) + ": " + fixed(a * 100, 2);
  }
  results.rows.push_back({"QAT", std::to_string(out.best_steps) + " of " +
                                     std::to_string(options.qat_steps) + " steps (" +
                                     ptq.best_choice().label + ")",
                          out.best_validation, out.test, "length chosen on validation"});
  results.notes.push_back("QAT validation accuracy by step: " + curve_text);
  results.durations.emplace_back("QAT", seconds_since(start));
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
Converted convert_better_model(bert::BertClassifierImpl& model, const bert::DemoOptions& options,
                  const DemoData& data, const SensitivityAndFallback& fallback, const Qat& qat,
                  bert::DemoResults& results) {
  const auto start = Clock::now();
  const bool use_qat = qat.best_validation >= fallback.fallback.final_metric;
  if (!use_qat) {
    bert::restore_parameters(model, fallback.ptq_parameters);
    for (const auto& group : fallback.float_groups) {
      tquant::set_quantizers_enabled(model, group, false);
    }
  }
  const std::string converted_from =
      !use_qat ? "PTQ model with " + std::to_string(fallback.float_groups.size()) +
                     " group(s) float"
      : qat.best_steps > 0 ? "QAT model (all groups int8)"
                           : "PTQ model (all groups int8; QAT chose 0 steps)";
  say("5. convert the " + converted_from + " (higher validation accuracy)");
  const tquant::ConvertReport report = tquant::convert(model);
  bert::write_text_file(options.out_dir + "/convert_report.txt", report.to_string());
  say(bert::last_line(report.to_string()) + " (full report: convert_report.txt); " +
      bert::mode_summary(model));
  const bert::EvalResult validation =
      bert::evaluate(model, data.validation, options.batch_size, "INT8 validation");
  Converted out;
  out.test =
      bert::evaluate(model, data.test, options.batch_size, "INT8 test", /*keep_embeddings=*/true);
  results.rows.push_back({"INT8", "converted " + converted_from, validation.accuracy,
                          out.test.accuracy, "INT8 GEMMs (tquant::convert)"});
  results.durations.emplace_back("convert + INT8 evaluation", seconds_since(start));
  return out;
}

// The converted model saved with tquant::save_state, its size against the FP32 checkpoint's.
void measure_size(bert::BertClassifierImpl& model, const bert::DemoOptions& options,
                  const Fp32Baseline& fp32, Converted& converted, bert::DemoResults& results) {
  converted.path = options.out_dir + "/minilm_fine_foods_int8.safetensors";
  tquant::save_state(model, converted.path, tquant::SaveOptions().include_histograms(false));
  const double int8_mb = std::filesystem::file_size(converted.path) / 1e6;
  const double fp32_mb = std::filesystem::file_size(fp32.checkpoint) / 1e6;
  results.measurements.emplace_back("model file FP32 (fine-tuned classifier, safetensors)",
                                    fixed(fp32_mb, 1) + " MB");
  results.measurements.emplace_back("model file INT8 (tquant::save_state of the converted model)",
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
                     const bert::DemoBatch& batch, const bert::DemoOptions& options,
                     Converted& converted, bert::DemoResults& results) {
  say("latency: batch " + std::to_string(batch.size()) + " x seq " +
      std::to_string(batch.input_ids.size(1)) + ", " + std::to_string(options.threads) +
      " thread(s), " + std::to_string(options.latency_warmup) + " warm-up forward(s) each, then " +
      std::to_string(options.latency_rounds) +
      " rounds with FP32 and INT8 interleaved, median over the rounds (the peer bench's method)");
  const bert::RoundTimes times = bert::interleaved_rounds(
      {forward_call(fp32_model, batch), forward_call(model, batch)}, options.latency_warmup,
      options.latency_rounds, /*reps_per_round=*/1,
      [](int64_t round, const std::vector<double>& ms) {
        say("latency round " + std::to_string(round + 1) + ": FP32 " + fixed(ms[0], 1) +
            " ms, INT8 " + fixed(ms[1], 1) + " ms");
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
      "CPU latency INT8, same batch",
      fixed(int8_latency, 1) + " ms (" + fixed(converted.speedup, 2) + "x)");
}

// Serving after a load: a freshly built classifier (float, as constructed) gets the INT8 file
// with tquant::load_state, which prepares everything a forward needs; its first forward against
// the median of the `latency_rounds` that follow. Earlier steps already warmed the process
// (oneDNN, MKL, thread pool), so a difference is the model's own first-call work.
void measure_first_call(const bert::BertConfig& config, const bert::DemoBatch& batch,
                        const bert::DemoOptions& options, const Converted& converted,
                        bert::DemoResults& results) {
  bert::BertClassifier loaded(config, 2);
  tquant::load_state(*loaded, converted.path);
  const std::vector<double> ms =
      bert::time_calls_ms(forward_call(*loaded, batch), 1 + options.latency_rounds);
  const double first = ms.front();
  const double steady = bert::median(std::vector<double>(ms.begin() + 1, ms.end()));
  say("first call after tquant::load_state: " + fixed(first, 1) + " ms, then median " +
      fixed(steady, 1) + " ms");
  results.measurements.emplace_back(
      "CPU INT8 first call after tquant::load_state into a fresh model, same batch",
      fixed(first, 1) + " ms, then " + fixed(steady, 1) + " ms (median of the next " +
          std::to_string(options.latency_rounds) + "; first / steady " +
          fixed(first / steady, 2) + "x)");
}

// Cosine of INT8 and FP32 sentence embeddings on the test reviews (rows are L2-normalized: the
// dot product is the cosine).
void measure_embedding_agreement(const Fp32Baseline& fp32, Converted& converted,
                                 bert::DemoResults& results) {
  const at::Tensor cosines = (fp32.test.embeddings * converted.test.embeddings).sum(-1);
  converted.cosine_mean = cosines.mean().item<double>();
  results.measurements.emplace_back(
      "sentence embedding cosine INT8 vs FP32 (test, mean-pooled normalized)",
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
                              const bert::DemoOptions& options, const DemoData& data,
                              const Fp32Baseline& fp32, const SensitivityAndFallback& fallback,
                              const Qat& qat, bert::DemoResults& results) {
  Converted converted = convert_better_model(model, options, data, fallback, qat, results);
  const auto start = Clock::now();
  measure_size(model, options, fp32, converted, results);
  const bert::DemoBatch batch = latency_batch(options, data);
  measure_latency(fp32_model, model, batch, options, converted, results);
  measure_first_call(fp32.config, batch, options, converted, results);
  results.durations.emplace_back("size + latency", seconds_since(start));
  measure_embedding_agreement(fp32, converted, results);
  compare_on_gpu(fp32_model, model, batch, options, results);
  return converted;
}

// ---- 6. Outputs ------------------------------------------------------------------------------

// The goals of issue 5, met or missed as measured.
void mark_goals(const Fp32Baseline& fp32, const Ptq& ptq, const SensitivityAndFallback& fallback,
                const Qat& qat, const Converted& converted, bert::DemoResults& results) {
  const double fp32_acc = fp32.test.accuracy;
  auto gap_goal = [&](const std::string& goal, double acc, double max_points) {
    const double gap = fp32_acc - acc;
    return bert::GoalRow{goal, "within " + fixed(max_points, 1) + " pt of FP32 (test)",
                         fixed(acc * 100, 2) + "% vs " + fixed(fp32_acc * 100, 2) + "% (" +
                             bert::points(acc - fp32_acc) + ")",
                         gap * 100.0 <= max_points + 1e-9};
  };
  results.goals.push_back(
      gap_goal("best PTQ (" + ptq.best_choice().label + ")", ptq.test[ptq.best], 1.0));
  results.goals.push_back(gap_goal("sensitivity fallback", fallback.fallback_test, 0.5));
  results.goals.push_back(gap_goal("QAT", qat.test, 0.3));
  results.goals.push_back({"INT8 CPU latency at batch 32", ">= 1.5x FP32",
                           fixed(converted.speedup, 2) + "x", converted.speedup >= 1.5});
  results.goals.push_back({"embedding cosine INT8 vs FP32", ">= 0.99 mean",
                           fixed(converted.cosine_mean, 5), converted.cosine_mean >= 0.99});
}

// calibration_report.html: a summary, the sensitivity chart, every quantizer's histogram.
void write_html_report(const bert::DemoOptions& options, const bert::DemoResults& results,
                              const Fp32Baseline& fp32, const Ptq& ptq,
                              const SensitivityAndFallback& fallback) {
  std::vector<bert::SensitivityBar> bars;
  for (const auto& g : fallback.sensitivity.groups) {
    bars.push_back({g.group, g.recovery_when_float * 1000.0, g.drop_when_quantized * 1000.0,
                    std::find(fallback.float_groups.begin(), fallback.float_groups.end(),
                              g.group) != fallback.float_groups.end()});
  }
  std::vector<std::string> summary = {
      std::string("mode: ") + results.mode + "; calibrated once on " +
          std::to_string(ptq.calibration.batches) + " batches of " +
          std::to_string(options.batch_size) + " training reviews (seq " +
          std::to_string(options.seq_len) + ")",
      "FP32 validation " + fixed(fp32.validation.accuracy * 100, 2) + "%, test " +
          fixed(fp32.test.accuracy * 100, 2) + "%",
  };
  for (size_t i = 0; i < ptq.choices.size(); ++i) {
    summary.push_back("PTQ " + ptq.choices[i].label + ": validation " +
                      fixed(ptq.validation[i] * 100, 2) + "%" +
                      (i == ptq.best ? ", test " + fixed(ptq.test[i] * 100, 2) +
                                           "%  <- chosen on validation"
                                     : ""));
  }
  summary.push_back("sensitivity: embedding error against FP32 (mean 1 - cosine) on " +
                    std::to_string(fallback.ranked_reviews) + " validation reviews, all groups quantized " +
                    fixed(fallback.sensitivity.quantized_metric, 5) +
                    "; fallback on validation accuracy (FP32 " +
                    fixed(fp32.validation.accuracy * 100, 2) + "%, all quantized " +
                    fixed(fallback.fallback.quantized_metric * 100, 2) +
                    "%), kept in float: " + kept_in_float(fallback.float_groups));
  bert::write_calibration_report(options.out_dir + "/calibration_report.html",
                                 "tquant calibration report: MiniLM-L6 on fine-food reviews",
                                 summary, ptq.choices, ptq.best_choice().label, ptq.histograms,
                                 bars,
                                 "embedding error against FP32: mean (1 - cosine) x 1000 on " +
                                     std::to_string(fallback.ranked_reviews) +
                                     " validation reviews");
}

// Goals, the closing notes, then results.md / results.json / calibration_report.html and the
// table on stdout.
void write_outputs(const bert::DemoOptions& options, const DemoData& data,
                   const Fp32Baseline& fp32, const Ptq& ptq,
                   const SensitivityAndFallback& fallback, const Qat& qat,
                   const Converted& converted, Clock::time_point demo_start,
                   bert::DemoResults& results) {
  mark_goals(fp32, ptq, fallback, qat, converted, results);
  const size_t validation = data.validation.size(), test = data.test.size();
  results.notes.push_back("validation = " + std::to_string(validation) +
                          " held-out training reviews (1 review = " +
                          fixed(100.0 / std::max<size_t>(1, validation), 2) + " pt); test = " +
                          std::to_string(test) + " reviews (1 review = " +
                          fixed(100.0 / std::max<size_t>(1, test), 2) + " pt)");
  results.durations.emplace_back("total", seconds_since(demo_start));
  results.machine += ", at end " + bert::load_average();

  write_html_report(options, results, fp32, ptq, fallback);
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
  Fp32Baseline fp32 = fp32_baseline(options, data, results);
  bert::BertClassifierImpl& model = *fp32.model;  // quantized in place from here on
  const tquant::QConfigMapping mapping =
      bert::demo_int8_mapping("bert.", options.float_attention);
  const Ptq ptq_result = ptq(model, mapping, options, data, fp32, results);
  const SensitivityAndFallback fallback =
      sensitivity_and_fallback(model, sensitivity_groups(fp32.config, options.quick), options,
                               data, fp32, ptq_result, results);
  const auto qat_start = Clock::now();
  // The teacher of QAT and the FP32 baseline of step 5's latency.
  bert::BertClassifier fp32_model =
      load_fp32_classifier(fp32.config, fp32.checkpoint, static_cast<uint64_t>(options.seed));
  const Qat qat_result =
      qat(model, *fp32_model, options, data, ptq_result, fallback, results, qat_start);
  const Converted converted = convert_and_measure(model, *fp32_model, options, data, fp32,
                                                  fallback, qat_result, results);
  write_outputs(options, data, fp32, ptq_result, fallback, qat_result, converted, demo_start,
                results);
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
