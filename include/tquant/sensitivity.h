#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include <torch/arg.h>
#include <torch/nn/module.h>

#include "tquant/report.h"

namespace tquant {

/// What analyze_sensitivity ranks groups by (most sensitive first).
///   kRecoveryWhenFloat:  how much of the quantized model's loss comes back when only this
///                        group runs in float and every other group stays quantized
///                        (leave-one-out). This is the default because it is exactly the first
///                        step fallback_to_float takes, and it sees a group in the company of
///                        the other quantized groups, as the deployed model will.
///   kDropWhenQuantized:  how much worse than float the model gets when only this group is
///                        quantized and every other group runs in float (one at a time).
/// The other measure breaks ties.
enum class SensitivityRanking { kRecoveryWhenFloat, kDropWhenQuantized };

/// "recovery when float" or "drop when quantized".
std::string to_string(SensitivityRanking ranking);

/// Options of analyze_sensitivity.
///
/// Example:
///   auto options = tquant::SensitivityOptions()
///                      .groups({"encoder.layer.*.attention.*", "encoder.layer.*.output.*"})
///                      .higher_is_better(false);   // the metric is a loss
struct SensitivityOptions {
  /// Name patterns ('*' wildcards, matched against a module's qualified name or an ancestor's,
  /// as enable_quantizers does); each pattern is one group. Empty: one group per
  /// quantized module, named after it.
  TORCH_ARG(std::vector<std::string>, groups) = {};
  /// True for accuracy-like metrics; false for losses and errors.
  TORCH_ARG(bool, higher_is_better) = true;
  TORCH_ARG(SensitivityRanking, ranking) = SensitivityRanking::kRecoveryWhenFloat;
  /// Called after each metric evaluation with (evaluations done, evaluations in all).
  TORCH_ARG(ProgressCallback, on_progress) = {};
};

/// One group's measurements. "Loss" below is how much worse than the float model a metric
/// value is, in the metric's units: float_metric - m when higher is better, m - float_metric
/// otherwise (positive = worse).
struct GroupSensitivity {
  std::string group;                 ///< the pattern, or the module name for default groups
  std::vector<std::string> modules;  ///< the quantized modules it covers
  double metric_only_quantized = 0.0;  ///< only this group quantized, the rest float
  double metric_only_float = 0.0;      ///< only this group float, the rest quantized
  /// Loss of metric_only_quantized (kDropWhenQuantized's key).
  double drop_when_quantized = 0.0;
  /// Loss of the fully quantized model minus loss of metric_only_float (kRecoveryWhenFloat's
  /// key): what running this group in float wins back.
  double recovery_when_float = 0.0;
};

/// What analyze_sensitivity measured. Print it with operator<<.
struct SensitivityReport {
  double float_metric = 0.0;      ///< every group in float
  double quantized_metric = 0.0;  ///< every group quantized (the model as calibrated)
  bool higher_is_better = true;
  SensitivityRanking ranking = SensitivityRanking::kRecoveryWhenFloat;
  /// Most sensitive first.
  std::vector<GroupSensitivity> groups;
  /// Prepared modules that were in float before the analysis (disabled, or not calibrated):
  /// they are in no group and stay float.
  std::vector<std::string> left_float;

  /// Loss of a metric value (see GroupSensitivity), positive = worse than float.
  double loss(double metric) const;
  /// The group named `group` (its pattern, or the module name for default groups), or nullptr.
  const GroupSensitivity* find_group(const std::string& group) const;
  [[deprecated("use find_group()")]] const GroupSensitivity* find(const std::string& group) const {
    return find_group(group);
  }
  /// Table (rank, group, number of modules, metric with only the group quantized, its drop,
  /// metric with only the group float, its recovery) and a summary line.
  std::string to_string() const;
};

/// Measures how much each group of quantized modules costs, on a calibrated model (after
/// tquant::calibrate: prepared modules in fake-quant mode). `metric` evaluates the model as it
/// is when called (e.g. accuracy on a held-out set); it is called 2 + 2 * groups times:
///   1. every group float, then every group quantized;
///   2. for each group: only that group quantized (the rest float), then only that group float
///      (the rest quantized).
/// Switching uses Quantizable::set_mode (kFloat, or kFakeQuant with the calibrated ranges
/// frozen again from the kept statistics, as enable_quantizers does). Modules that were in
/// float before (disabled or not calibrated) stay float throughout and are listed in
/// left_float.
///
/// Afterwards, and also when `metric` throws, every module gets back its mode and each of its
/// quantizers its observer / fake-quant switches, scale and zero point.
///
/// Throws if no prepared module is in fake-quant mode (not calibrated, or no tquant module),
/// if a module is still in observe mode (calibrate first), or if a group pattern matches no
/// quantized module.
///
/// Example:
///   tquant::calibrate(*net, loop);
///   torch::NoGradGuard no_grad;
///   tquant::SensitivityReport report = tquant::analyze_sensitivity(
///       *net, [&] { return accuracy(*net, dev_set); },
///       tquant::SensitivityOptions().groups({"encoder.layer.*.attention.*", "classifier"}));
///   std::cout << report;    // groups ranked, most sensitive first
SensitivityReport analyze_sensitivity(torch::nn::Module& model,
                                      const std::function<double()>& metric,
                                      const SensitivityOptions& options = SensitivityOptions());

/// One group switched to float by fallback_to_float.
struct FallbackStep {
  std::string group;
  double metric = 0.0;  ///< the model's metric after this group went float
};

/// What fallback_to_float did. Print it with operator<<.
struct FallbackReport {
  double float_metric = 0.0;      ///< from the SensitivityReport
  double quantized_metric = 0.0;  ///< measured with every group quantized, before any step
  double budget = 0.0;
  bool higher_is_better = true;
  std::vector<FallbackStep> steps;  ///< in the order taken
  double final_metric = 0.0;
  /// The final loss (see SensitivityReport::loss) is at most the budget.
  bool within_budget = false;

  /// Loss of a metric value against float_metric, positive = worse.
  double loss(double metric) const;
  /// The groups now in float, in the order they were switched.
  std::vector<std::string> float_groups() const;
  std::string to_string() const;
};

/// Mixed precision by greedy fallback: starting from the model with every group of `report`
/// quantized, switches the groups to float one at a time in the report's ranking order, until
/// the metric's loss against report.float_metric is at most `budget` (in the metric's units,
/// e.g. 0.01 for one point of accuracy) or every group is float. The model is left in that
/// state. `metric` is called once for the start and once per step; `on_step` (optional) sees
/// each step as it is taken. If `metric` throws, the model gets back the modes and quantizer
/// state it had before the call.
///
/// Throws if budget < 0, if the report has no groups, or if a module of the report is not a
/// quantized module of `model` (a report of another model).
///
/// Example:
///   tquant::SensitivityReport sensitivity = tquant::analyze_sensitivity(*net, accuracy);
///   tquant::FallbackReport fallback =
///       tquant::fallback_to_float(*net, sensitivity, accuracy, /*budget=*/0.005);
///   std::cout << fallback;  // which groups went float, metric after each step
FallbackReport fallback_to_float(torch::nn::Module& model, const SensitivityReport& report,
                                 const std::function<double()>& metric, double budget,
                                 const std::function<void(const FallbackStep&)>& on_step = {});

/// The stopping rule of fallback_to_float when it is not the metric the report ranked by.
/// A typical split: rank the groups by a smooth, cheap proxy (the error of the model's output
/// against the float model's on a few batches), then stop on the task metric (accuracy on the
/// whole validation split), which is what the budget is about.
struct FallbackCriterion {
  double float_metric = 0.0;     ///< `metric` of the model with every group in float
  bool higher_is_better = true;  ///< true for accuracy-like metrics
};

/// As above, but the groups are switched in `ranking`'s order while the budget applies to
/// `metric` against criterion.float_metric: the report's own metric and float value are not
/// used. The returned report carries the criterion's float_metric and direction.
///
/// Example (rank by embedding error on 160 reviews, stop on validation accuracy):
///   tquant::SensitivityReport ranking = tquant::analyze_sensitivity(
///       *net, embedding_error, tquant::SensitivityOptions().higher_is_better(false));
///   tquant::FallbackReport fallback = tquant::fallback_to_float(
///       *net, ranking, validation_accuracy, {float_accuracy, /*higher_is_better=*/true}, 0.005);
FallbackReport fallback_to_float(torch::nn::Module& model, const SensitivityReport& ranking,
                                 const std::function<double()>& metric,
                                 const FallbackCriterion& criterion, double budget,
                                 const std::function<void(const FallbackStep&)>& on_step = {});

std::ostream& operator<<(std::ostream& stream, const SensitivityReport& report);
std::ostream& operator<<(std::ostream& stream, const FallbackReport& report);

}  // namespace tquant
