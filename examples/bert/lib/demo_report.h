#pragma once

#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

#include "tquant/histogram_search.h"
#include "tquant/smooth_quant.h"

namespace bert {

// ---------------------------------------------------------------------------------------------
// Results table

/// One model variant: its accuracy on validation (where choices are made) and on test (only
/// reported). NaN means "not measured".
struct ResultRow {
  std::string stage;    ///< "FP32", "PTQ", "fallback", "QAT", "INT8"
  std::string setting;  ///< "percentile 99.99", "3 groups float", ...
  double validation = 0.0;
  double test = 0.0;
  std::string note;  ///< "chosen on validation", ...
};

/// A goal of the demo, met or missed as measured.
struct GoalRow {
  std::string goal;
  std::string target;
  std::string measured;
  bool met = false;
};

/// Everything the demo prints at the end and writes as results.md / results.json.
struct DemoResults {
  std::string mode;      ///< "quick" or "full"
  std::string settings;  ///< describe(DemoOptions)
  std::string machine;   ///< threads, GPU presence
  std::vector<ResultRow> rows;
  std::vector<GoalRow> goals;
  /// Other measurements (size, latency, cosine, ...) as name -> value text.
  std::vector<std::pair<std::string, std::string>> measurements;
  /// Step -> seconds.
  std::vector<std::pair<std::string, double>> durations;
  /// Which quantizable modules stayed float, and why (free text lines).
  std::vector<std::string> notes;
};

/// Plain-text table for the terminal.
std::string format_results(const DemoResults& results);
/// The same as Markdown (tables).
std::string results_markdown(const DemoResults& results);
/// The same as JSON (numbers as numbers, NaN as null).
std::string results_json(const DemoResults& results);

// ---------------------------------------------------------------------------------------------
// Calibration report

/// A calibrator whose range the report draws.
struct RangeChoice {
  std::string label;  ///< "max", "p99.99", "entropy", "mse"
  tquant::CalibrationMethod method = tquant::CalibrationMethod::kMax;
  double percentile = 99.99;
};

/// The histogram of one per-tensor HistogramObserver and the amax each calibrator picks from
/// it (per-channel histograms, whose channels have their own bin widths, are not drawn).
struct QuantizerHistogram {
  std::string name;  ///< "bert.encoder.layer.0.attention.self.query.input_quantizer"
  std::vector<double> counts;
  double bin_width = 0.0;
  double abs_max = 0.0;
  std::vector<std::pair<std::string, double>> amax;  ///< label -> amax, in `choices` order
  /// The calibrator drawn solid; empty: write_calibration_report's chosen_label.
  std::string chosen;
};

/// Collects every per-tensor HistogramObserver under `model` (quantizers named "*_quantizer"),
/// with the amax of each choice computed from the histogram it holds.
std::vector<QuantizerHistogram> collect_histograms(torch::nn::Module& model,
                                                   const std::vector<RangeChoice>& choices);

/// One group of the sensitivity analysis, in accuracy points.
struct SensitivityBar {
  std::string group;
  double recovery_when_float = 0.0;  ///< loss won back when only this group runs float
  double drop_when_quantized = 0.0;  ///< loss when only this group is quantized
  bool kept_float = false;           ///< switched to float by the fallback
};

/// The SmoothQuant factors of one layer, drawn as one chart of the report.
struct SmoothQuantChart {
  std::string scenario;  ///< "W4A8": the demo scenario whose SmoothQuant step smoothed it
  /// From tquant::smooth_quant's report: name, alpha, and the [in_features] float32 CPU
  /// tensors factor (s_j), act_amax (max |x_j|) and weight_amax (max_i |W[i, j]|).
  tquant::SmoothedLayer layer;
  /// true: the smoothed model won on validation and the demo kept it; false: the best alpha
  /// tried, shown for reference although plain PTQ won.
  bool used = false;
};

/// Writes a self-contained HTML page: a summary, the sensitivity chart (two bars per group, in
/// the units `sensitivity_unit` names), one log-scale chart per SmoothQuant layer (max |x_j|,
/// max |W_j|, s_j and the ranges after smoothing, per input channel; "No SmoothQuant step was
/// run." when `smooth_quant` is empty), and one inline SVG per quantizer with log-count bars
/// and a vertical line per calibrator's range. Throws c10::Error naming the layer when a
/// chart's tensors are undefined, empty or of different sizes.
void write_calibration_report(const std::string& path, const std::string& title,
                              const std::vector<std::string>& summary,
                              const std::vector<RangeChoice>& choices,
                              const std::string& chosen_label,
                              const std::vector<QuantizerHistogram>& histograms,
                              const std::vector<SensitivityBar>& sensitivity,
                              const std::string& sensitivity_unit,
                              const std::vector<SmoothQuantChart>& smooth_quant = {});

/// Writes `text` to `path`, creating parent directories; throws on failure.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace bert
