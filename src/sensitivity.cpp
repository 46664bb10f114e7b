#include "tquant/sensitivity.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <utility>

#include "tquant/fake_quantize.h"
#include "tquant/nn/quantizable.h"
#include "tquant/qconfig_mapping.h"

#include "module_walk.h"

namespace tquant {

namespace {

namespace nn = torch::nn;

/// How much worse than float `metric` is, in the metric's units (positive = worse).
double loss_against(bool higher_is_better, double float_metric, double metric) {
  return higher_is_better ? float_metric - metric : metric - float_metric;
}

std::string number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.6g", value);
  return buffer;
}

/// Every prepared tquant module (one with a QConfig) with its qualified name, in
/// named_modules() order.
std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>> prepared_modules(
    nn::Module& model) {
  auto modules = detail::quantizable_modules(model);
  const auto unprepared = [](const auto& item) {
    return !as_quantizable(*item.second)->qconfig();
  };
  modules.erase(std::remove_if(modules.begin(), modules.end(), unprepared), modules.end());
  return modules;
}

/// Everything a mode switch can change in a module: its mode and, per quantizer, the two
/// switches and the frozen scale and zero point (set_mode(kFakeQuant) refreezes them, and a
/// quantizer that observed at every step would stop doing so).
class Snapshot {
 public:
  explicit Snapshot(nn::Module& model) {
    for (auto& [name, module] : prepared_modules(model)) {
      Entry entry{module, as_quantizable(*module)->mode(), {}};
      for (const auto& [quantizer_name, quantizer] : detail::quantizers_of(*module)) {
        // Owned here too: restore() must not depend on the model still holding the quantizer.
        entry.quantizers.push_back({std::static_pointer_cast<FakeQuantizeImpl>(
                                        quantizer->shared_from_this()),
                                    quantizer->observer_enabled(),
                                    quantizer->fake_quant_enabled(),
                                    quantizer->scale.detach().clone(),
                                    quantizer->zero_point.detach().clone()});
      }
      entries_.push_back(std::move(entry));
    }
  }

  void restore() {
    torch::NoGradGuard no_grad;
    for (Entry& entry : entries_) {
      Quantizable& quantizable = *as_quantizable(*entry.module);
      if (quantizable.mode() != entry.mode) quantizable.set_mode(entry.mode);
      for (QuantizerState& state : entry.quantizers) {
        state.quantizer->enable_observer(state.observer);
        state.quantizer->enable_fake_quant(state.fake_quant);
        state.quantizer->scale.set_data(state.scale);
        state.quantizer->zero_point.set_data(state.zero_point);
      }
    }
  }

 private:
  struct QuantizerState {
    std::shared_ptr<FakeQuantizeImpl> quantizer;
    bool observer;
    bool fake_quant;
    at::Tensor scale;
    at::Tensor zero_point;
  };
  struct Entry {
    std::shared_ptr<nn::Module> module;
    QuantMode mode;
    std::vector<QuantizerState> quantizers;
  };
  std::vector<Entry> entries_;
};

/// Runs `body`; on an exception restores the snapshot and rethrows.
template <typename Body>
auto restoring_on_error(Snapshot& snapshot, Body&& body) {
  try {
    return body();
  } catch (...) {
    snapshot.restore();
    throw;
  }
}

/// Prepared modules in fake-quant mode, by name.
struct QuantizedSet {
  std::map<std::string, Quantizable*> modules;
  std::vector<std::string> left_float;
};

QuantizedSet quantized_modules(nn::Module& model) {
  QuantizedSet set;
  for (auto& [name, module] : prepared_modules(model)) {
    Quantizable* quantizable = as_quantizable(*module);
    const QuantMode mode = quantizable->mode();
    if (mode == QuantMode::kFloat) {
      set.left_float.push_back(name);
      continue;
    }
    TORCH_CHECK_VALUE(mode == QuantMode::kFakeQuant, "analyze_sensitivity: expected module '",
                      name, "' in fake_quant or float mode (a calibrated model), got ",
                      to_string(mode), "; run tquant::calibrate first");
    set.modules.emplace(name, quantizable);
  }
  TORCH_CHECK_VALUE(!set.modules.empty(), "analyze_sensitivity: expected a calibrated model "
                    "(prepared tquant modules in fake_quant mode), got none; run tquant::prepare "
                    "and tquant::calibrate first");
  return set;
}

/// Puts each module of `all` in fake-quant mode if `quantized(name)`, else in float.
template <typename Predicate>
void set_modes(const std::map<std::string, Quantizable*>& all, Predicate quantized) {
  for (const auto& [name, module] : all) {
    const QuantMode mode = quantized(name) ? QuantMode::kFakeQuant : QuantMode::kFloat;
    if (module->mode() != mode) module->set_mode(mode);
  }
}

std::vector<GroupSensitivity> make_groups(const QuantizedSet& set,
                                          const std::vector<std::string>& patterns) {
  std::vector<GroupSensitivity> groups;
  if (patterns.empty()) {
    for (const auto& [name, module] : set.modules) groups.push_back({name, {name}});
    return groups;
  }
  for (const std::string& pattern : patterns) {
    GroupSensitivity group{pattern, {}};
    for (const auto& [name, module] : set.modules) {
      if (module_name_or_ancestor_matches(pattern, name)) group.modules.push_back(name);
    }
    TORCH_CHECK_VALUE(!group.modules.empty(), "analyze_sensitivity: expected group pattern '",
                      pattern, "' to match a quantized (fake_quant) module, got no match");
    groups.push_back(std::move(group));
  }
  return groups;
}

double key_of(const GroupSensitivity& group, SensitivityRanking ranking) {
  return ranking == SensitivityRanking::kRecoveryWhenFloat ? group.recovery_when_float
                                                           : group.drop_when_quantized;
}

double tie_key_of(const GroupSensitivity& group, SensitivityRanking ranking) {
  return ranking == SensitivityRanking::kRecoveryWhenFloat ? group.drop_when_quantized
                                                           : group.recovery_when_float;
}

}  // namespace

std::string to_string(SensitivityRanking ranking) {
  switch (ranking) {
    case SensitivityRanking::kRecoveryWhenFloat:
      return "recovery when float";
    case SensitivityRanking::kDropWhenQuantized:
      return "drop when quantized";
  }
  return "unknown";
}

double SensitivityReport::loss(double metric) const {
  return loss_against(higher_is_better, float_metric, metric);
}

double FallbackReport::loss(double metric) const {
  return loss_against(higher_is_better, float_metric, metric);
}

const GroupSensitivity* SensitivityReport::find_group(const std::string& group) const {
  for (const auto& entry : groups) {
    if (entry.group == group) return &entry;
  }
  return nullptr;
}

SensitivityReport analyze_sensitivity(torch::nn::Module& model,
                                      const std::function<double()>& metric,
                                      const SensitivityOptions& options) {
  TORCH_CHECK_VALUE(static_cast<bool>(metric),
                    "analyze_sensitivity: expected a metric function, got an empty one");
  const QuantizedSet set = quantized_modules(model);
  SensitivityReport report;
  report.higher_is_better = options.higher_is_better();
  report.ranking = options.ranking();
  report.left_float = set.left_float;
  report.groups = make_groups(set, options.groups());

  const int64_t total = 2 + 2 * static_cast<int64_t>(report.groups.size());
  int64_t done = 0;
  const auto measure = [&]() {
    const double value = metric();
    if (options.on_progress()) options.on_progress()(++done, total);
    return value;
  };

  Snapshot snapshot(model);
  restoring_on_error(snapshot, [&] {
    set_modes(set.modules, [](const std::string&) { return false; });
    report.float_metric = measure();
    set_modes(set.modules, [](const std::string&) { return true; });
    report.quantized_metric = measure();
    for (GroupSensitivity& group : report.groups) {
      const std::set<std::string> members(group.modules.begin(), group.modules.end());
      const auto in_group = [&](const std::string& name) { return members.count(name) > 0; };
      set_modes(set.modules, in_group);
      group.metric_only_quantized = measure();
      set_modes(set.modules, [&](const std::string& name) { return !in_group(name); });
      group.metric_only_float = measure();
      group.drop_when_quantized = report.loss(group.metric_only_quantized);
      group.recovery_when_float =
          report.loss(report.quantized_metric) - report.loss(group.metric_only_float);
    }
  });
  snapshot.restore();

  std::stable_sort(report.groups.begin(), report.groups.end(),
                   [&](const GroupSensitivity& a, const GroupSensitivity& b) {
                     const double ka = key_of(a, report.ranking);
                     const double kb = key_of(b, report.ranking);
                     if (ka != kb) return ka > kb;
                     return tie_key_of(a, report.ranking) > tie_key_of(b, report.ranking);
                   });
  return report;
}

std::string SensitivityReport::to_string() const {
  size_t width = std::string("group").size();
  for (const auto& group : groups) width = std::max(width, group.group.size());
  const auto row = [&](const std::string& rank, const std::string& group,
                       const std::string& modules, const std::string& only_quantized,
                       const std::string& drop, const std::string& only_float,
                       const std::string& recovery) {
    char line[512];
    std::snprintf(line, sizeof(line), "%-4s  %-*s  %7s  %14s  %12s  %12s  %12s\n",
                  rank.c_str(), static_cast<int>(width), group.c_str(), modules.c_str(),
                  only_quantized.c_str(), drop.c_str(), only_float.c_str(), recovery.c_str());
    return std::string(line);
  };
  std::ostringstream out;
  out << row("rank", "group", "modules", "only quantized", "drop", "only float", "recovery");
  for (size_t i = 0; i < groups.size(); ++i) {
    const GroupSensitivity& group = groups[i];
    out << row(std::to_string(i + 1), group.group, std::to_string(group.modules.size()),
               number(group.metric_only_quantized), number(group.drop_when_quantized),
               number(group.metric_only_float), number(group.recovery_when_float));
  }
  out << "sensitivity: " << groups.size() << " group(s) ranked by "
      << tquant::to_string(ranking) << "; metric float " << number(float_metric)
      << ", quantized " << number(quantized_metric) << " ("
      << (higher_is_better ? "higher" : "lower") << " is better)";
  if (!left_float.empty()) out << "; " << left_float.size() << " module(s) left float";
  out << '\n';
  return out.str();
}

std::vector<std::string> FallbackReport::float_groups() const {
  std::vector<std::string> names;
  for (const auto& step : steps) names.push_back(step.group);
  return names;
}

FallbackReport fallback_to_float(torch::nn::Module& model, const SensitivityReport& report,
                                 const std::function<double()>& metric, double budget,
                                 const std::function<void(const FallbackStep&)>& on_step) {
  return fallback_to_float(model, report, metric,
                           FallbackCriterion{report.float_metric, report.higher_is_better}, budget,
                           on_step);
}

FallbackReport fallback_to_float(torch::nn::Module& model, const SensitivityReport& report,
                                 const std::function<double()>& metric,
                                 const FallbackCriterion& criterion, double budget,
                                 const std::function<void(const FallbackStep&)>& on_step) {
  TORCH_CHECK_VALUE(static_cast<bool>(metric),
                    "fallback_to_float: expected a metric function, got an empty one");
  TORCH_CHECK_VALUE(budget >= 0.0, "fallback_to_float: expected budget >= 0, got ", budget);
  TORCH_CHECK_VALUE(!report.groups.empty(),
                    "fallback_to_float: expected a sensitivity report with groups, got none");

  std::map<std::string, Quantizable*> prepared;
  for (auto& [name, module] : prepared_modules(model)) prepared[name] = as_quantizable(*module);
  std::map<std::string, Quantizable*> covered;
  for (const GroupSensitivity& group : report.groups) {
    for (const std::string& name : group.modules) {
      const auto it = prepared.find(name);
      TORCH_CHECK_VALUE(it != prepared.end(), "fallback_to_float: expected module '", name,
                        "' of group '", group.group, "' to be a prepared tquant module of the "
                        "model, got none of that name (a report of another model?)");
      covered.insert(*it);
    }
  }

  FallbackReport result;
  result.float_metric = criterion.float_metric;
  result.budget = budget;
  result.higher_is_better = criterion.higher_is_better;

  Snapshot snapshot(model);
  restoring_on_error(snapshot, [&] {
    std::set<std::string> in_float;
    set_modes(covered, [](const std::string&) { return true; });
    result.quantized_metric = metric();
    double current = result.quantized_metric;
    for (const GroupSensitivity& group : report.groups) {
      if (result.loss(current) <= budget) break;
      in_float.insert(group.modules.begin(), group.modules.end());
      set_modes(covered, [&](const std::string& name) { return in_float.count(name) == 0; });
      current = metric();
      result.steps.push_back({group.group, current});
      if (on_step) on_step(result.steps.back());
    }
    result.final_metric = current;
    result.within_budget = result.loss(current) <= budget;
  });
  return result;
}

std::string FallbackReport::to_string() const {
  std::ostringstream out;
  out << "start (all quantized): metric " << number(quantized_metric) << ", loss "
      << number(loss(quantized_metric)) << '\n';
  for (size_t i = 0; i < steps.size(); ++i) {
    out << "step " << i + 1 << ": " << steps[i].group << " -> float: metric "
        << number(steps[i].metric) << ", loss " << number(loss(steps[i].metric)) << '\n';
  }
  out << "fallback: " << steps.size() << " group(s) in float; final metric "
      << number(final_metric) << " vs float " << number(float_metric) << ", loss "
      << number(loss(final_metric)) << (within_budget ? " within" : " over") << " budget "
      << number(budget) << '\n';
  return out.str();
}

std::ostream& operator<<(std::ostream& stream, const SensitivityReport& report) {
  return stream << report.to_string();
}

std::ostream& operator<<(std::ostream& stream, const FallbackReport& report) {
  return stream << report.to_string();
}

}  // namespace tquant
