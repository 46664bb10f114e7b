#include "tquant/quantize.h"

#include <memory>
#include <utility>
#include <vector>

#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "tquant/fake_quantize.h"
#include "tquant/histogram_observer.h"
#include "tquant/nn/quant_conv2d.h"
#include "tquant/nn/quant_embedding.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/nn/quantizable.h"
#include "calibrate_passes.h"
#include "error_context.h"
#include "module_walk.h"

namespace tquant {

namespace {

namespace nn = torch::nn;

using detail::quantizable_modules;
using detail::quantizers_of;

std::string join(const std::string& prefix, const std::string& key) {
  return detail::join_name(prefix, key);
}

std::string display_name(const std::string& name) { return name.empty() ? "<root>" : name; }

using detail::is_container;
using detail::twin_rule_for;
using detail::TwinRule;

std::string scheme_of(nn::Module& module) {
  std::string scheme;
  for (const auto& [name, quantizer] : quantizers_of(module)) {
    if (!scheme.empty()) scheme += ", ";
    scheme += name + "=" + to_string(quantizer->observer_ref().quant_spec());
    if (quantizer->options.dynamic()) scheme += " dynamic per-token";
  }
  return scheme.empty() ? "-" : scheme;
}

std::string rule_text(const MappingMatch& match) {
  if (match.key.empty()) return to_string(match.rule);
  return to_string(match.rule) + " '" + match.key + "'";
}

FloatModule unselected(const std::string& name, const std::string& type,
                       const MappingMatch& match) {
  if (match.rule == MappingRule::kSkip) {
    return {name, type, FloatReason::kSkipped, "skipped by '" + match.key + "'"};
  }
  return {name, type, FloatReason::kNotSelected, "no mapping rule and no global config"};
}

/// One walk over the module tree for prepare / prepare_qat.
class PrepareWalk {
 public:
  PrepareWalk(const QConfigMapping& mapping, QuantMode mode) : mapping_(mapping), mode_(mode) {}

  /// `in_container`: the module is an entry of Sequential / ModuleList / ModuleDict.
  void visit(nn::Module& module, const std::string& name, bool in_container) {
    if (auto* quantizable = as_quantizable(module)) {
      configure(module, *quantizable, name, mapping_.resolve(name, module));
      return;  // its children are its quantizers
    }
    if (is_container(module)) {
      visit_container(module, name);
      return;
    }
    bool has_children = false;
    for (const auto& item : module.named_children()) {
      has_children = true;
      visit(*item.value(), join(name, item.key()), /*in_container=*/false);
    }
    if (!has_children) classify_leaf(module, name, in_container);
  }

  PrepareReport take_report() { return std::move(report_); }

 private:
  void configure(nn::Module& module, Quantizable& quantizable, const std::string& name,
                 const MappingMatch& match) {
    if (!match.qconfig) {
      if (quantizable.mode() != QuantMode::kFloat) quantizable.set_mode(QuantMode::kFloat);
      report_.left_float.push_back(unselected(name, quantizable.quant_type_name(), match));
      return;
    }
    detail::named_errors(display_name(name), [&] {
      quantizable.set_qconfig(*match.qconfig);
      quantizable.set_mode(mode_);
    });
    report_.quantized.push_back({name, quantizable.quant_type_name(), mode_, scheme_of(module),
                                 rule_text(match), quantizable.convert_note()});
  }

  void classify_leaf(nn::Module& module, const std::string& name, bool in_container) {
    const std::string type = torch_type_name(module);
    const TwinRule* rule = twin_rule_for(module);
    if (rule == nullptr) {
      report_.left_float.push_back({name, type, FloatReason::kNoTwin, "no tquant twin"});
      return;
    }
    const MappingMatch match = mapping_.resolve(name, {rule->twin_type, rule->torch_type});
    if (!match.qconfig) {
      report_.left_float.push_back(unselected(name, type, match));
    } else if (in_container) {
      report_.left_float.push_back({name, type, FloatReason::kNoTwin,
                                    std::string("prepare cannot build ") + rule->twin_type +
                                        " from " + type + " yet"});
    } else {
      report_.left_float.push_back(
          {name, type, FloatReason::kUnreachable,
           name.empty() ? "the model itself is a plain " + type + "; use tquant::" +
                              rule->twin_type
                        : "plain " + type + " held in a member field: its parent calls it "
                          "directly, so it cannot be swapped; declare it as tquant::" +
                              rule->twin_type});
    }
  }

  /// The registry name under which `container` holds `child`, or "" if it does not.
  static std::string key_of(nn::Module& container, const nn::Module* child) {
    for (const auto& item : container.named_children()) {
      if (item.value().get() == child) return item.key();
    }
    return "";
  }

  /// Decides what to do with entry `child` of a container. Returns the twin to put in its
  /// place, or an empty AnyModule when the entry stays (reported, or visited when `descend`).
  /// `references`: how many owners the entry has when only the container and `child` hold it.
  nn::AnyModule consider(const std::shared_ptr<nn::Module>& child, const std::string& name,
                         long references, bool* descend) {
    *descend = false;
    const TwinRule* rule = twin_rule_for(*child);
    if (rule == nullptr) {
      *descend = true;
      return {};
    }
    const std::string type = torch_type_name(*child);
    const MappingMatch match = mapping_.resolve(name, {rule->twin_type, rule->torch_type});
    if (!match.qconfig) {
      report_.left_float.push_back(unselected(name, type, match));
      return {};
    }
    if (rule->make == nullptr) {
      report_.left_float.push_back({name, type, FloatReason::kNoTwin,
                                    std::string("prepare cannot build ") + rule->twin_type +
                                        " from " + type + " yet"});
      return {};
    }
    if (child.use_count() > references) {
      report_.left_float.push_back(
          {name, type, FloatReason::kContainerNotUpdated,
           "also referenced outside its container (" +
               std::to_string(child.use_count() - references) +
               " more owner(s): a member field, another container or a kept handle); replacing "
               "only the container's entry would leave that reference running float"});
      return {};
    }
    nn::AnyModule twin = rule->make(child);
    pending_match_ = match;
    return twin;
  }

  /// Called after the twin is in place in the container.
  void replaced(const std::string& name, const std::string& from, nn::Module& twin) {
    auto* quantizable = as_quantizable(twin);
    TORCH_INTERNAL_ASSERT(quantizable != nullptr, "prepare: the twin of ", name,
                          " is not a tquant module");
    report_.replaced.push_back({name, from, quantizable->quant_type_name()});
    configure(twin, *quantizable, name, pending_match_);
  }

  void not_in_registry(const std::string& container_name, const nn::Module& child) {
    report_.left_float.push_back(
        {join(container_name, "?"), torch_type_name(child), FloatReason::kContainerNotUpdated,
         "entry of " + display_name(container_name) + " missing from its module registry"});
  }

  /// One entry of a container: replaces it by its twin (in the container's own list and its
  /// registry) or descends into it.
  void visit_entry(nn::Module& container, const std::string& name, const std::string& key,
                   std::shared_ptr<nn::Module> child) {
    bool descend = false;
    const std::string child_name = join(name, key);
    const std::string from = torch_type_name(*child);
    // Owners: the container's own list, its registry, and `child`.
    nn::AnyModule twin = consider(child, child_name, 3, &descend);
    if (!twin.is_empty()) {
      const nn::Module* old = child.get();
      child.reset();
      std::shared_ptr<nn::Module> twin_ptr = twin.ptr();
      detail::replace_container_entry(container, key, old, std::move(twin));
      replaced(child_name, from, *twin_ptr);
    } else if (descend) {
      visit(*child, child_name, /*in_container=*/true);
    }
  }

  void visit_container(nn::Module& container, const std::string& name) {
    std::vector<std::shared_ptr<nn::Module>> entries;
    if (auto* sequential = dynamic_cast<nn::SequentialImpl*>(&container)) {
      for (size_t i = 0; i < sequential->size(); ++i) entries.push_back(sequential->ptr(i));
    } else if (auto* list = dynamic_cast<nn::ModuleListImpl*>(&container)) {
      for (size_t i = 0; i < list->size(); ++i) entries.push_back(list->ptr(i));
    } else if (auto* dict = dynamic_cast<nn::ModuleDictImpl*>(&container)) {
      for (const std::string& key : dict->keys()) entries.push_back((*dict)[key]);
    }
    for (auto& entry : entries) {
      std::shared_ptr<nn::Module> child = std::move(entry);
      const std::string key = key_of(container, child.get());
      if (key.empty()) {
        not_in_registry(name, *child);
        continue;
      }
      visit_entry(container, name, key, std::move(child));
    }
  }

  const QConfigMapping& mapping_;
  QuantMode mode_;
  PrepareReport report_;
  MappingMatch pending_match_;
};

PrepareReport prepare_with_mode(torch::nn::Module& model, const QConfigMapping& mapping,
                                QuantMode mode) {
  PrepareWalk walk(mapping, mode);
  walk.visit(model, "", /*in_container=*/false);
  detail::name_quantizers(model);
  return walk.take_report();
}

bool all_quantizers_have_data(nn::Module& module) {
  const auto quantizers = quantizers_of(module);
  if (quantizers.empty()) return false;
  for (const auto& [name, quantizer] : quantizers) {
    if (!quantizer->observer_ref().has_data()) return false;
  }
  return true;
}

QuantizerReport describe_quantizer(const std::string& module_name, const std::string& name,
                                   FakeQuantizeImpl& quantizer) {
  QuantizerReport entry;
  entry.module = module_name;
  entry.name = join(module_name, name);
  const QuantSpec& spec = quantizer.observer_ref().quant_spec();
  entry.spec = to_string(spec);
  entry.observer = quantizer.observer_ref().describe();
  const QParams qparams = quantizer.qparams();
  entry.calibrated = quantizer.observer_ref().has_data() && qparams.defined();
  if (entry.calibrated) {
    const at::Tensor scale = qparams.scale.detach().to(at::kCPU, at::kDouble);
    entry.scale_min = scale.min().item<double>();
    entry.scale_max = scale.max().item<double>();
    const double levels = static_cast<double>(quant_max(spec) - quant_min(spec));
    const double factor = spec.symmetric() ? levels / 2.0 : levels;
    entry.amax_min = entry.scale_min * factor;
    entry.amax_max = entry.scale_max * factor;
  }
  return entry;
}

}  // namespace

PrepareReport prepare(torch::nn::Module& model, const QConfigMapping& mapping) {
  return prepare_with_mode(model, mapping, QuantMode::kObserve);
}

PrepareReport prepare_qat(torch::nn::Module& model, const QConfigMapping& mapping) {
  return prepare_with_mode(model, mapping, QuantMode::kFakeQuant);
}

void CalibrationProgress::step(int64_t batches) {
  TORCH_CHECK_VALUE(batches >= 0, "CalibrationProgress::step: expected batches >= 0, got ",
                    batches);
  batches_ += batches;
  if (on_step_) on_step_(batches_);
}

namespace detail {

namespace {

HistogramObserverImpl* shared_grid_histogram(FakeQuantizeImpl& quantizer) {
  auto* histogram = dynamic_cast<HistogramObserverImpl*>(quantizer.observer.get());
  return histogram != nullptr && histogram->options.grid() == HistogramGrid::kShared ? histogram
                                                                                     : nullptr;
}

}  // namespace

CalibrationReport calibrate_in_passes(torch::nn::Module& model,
                                      const std::function<void(CalibrationProgress&)>& forward_loop,
                                      CalibrationProgress::Callback on_step,
                                      const std::function<void()>& after_range_pass,
                                      const std::function<void()>& after_last_pass) {
  TORCH_CHECK_VALUE(static_cast<bool>(forward_loop), "calibrate: expected a forward loop, got an "
                    "empty function");
  CalibrationReport report;
  std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>> driven;
  bool any_prepared = false;
  bool two_passes = false;
  for (auto& [name, module] : quantizable_modules(model)) {
    Quantizable& quantizable = *as_quantizable(*module);
    if (!quantizable.qconfig()) continue;
    any_prepared = true;
    if (quantizable.mode() == QuantMode::kFloat) {
      report.left_float.push_back({name, quantizable.quant_type_name(), FloatReason::kDisabled,
                                   "in float mode (disabled); not calibrated"});
      continue;
    }
    for (auto& [quantizer_name, quantizer] : quantizers_of(*module)) {
      quantizer->observer_ref().reset_stats();
      two_passes = two_passes || shared_grid_histogram(*quantizer) != nullptr;
    }
    quantizable.set_mode(QuantMode::kObserve);
    driven.emplace_back(name, module);
  }
  TORCH_CHECK_VALUE(any_prepared, "calibrate: expected a prepared model (tquant modules with a "
                    "QConfig), got none; call tquant::prepare first");

  detail::name_quantizers(model);  // observer errors in the loop name their quantizer
  CalibrationProgress progress(on_step);
  forward_loop(progress);
  report.batches = progress.batches();

  if (two_passes) {
    if (after_range_pass) after_range_pass();
    // Second pass: shared-grid histograms count on their fixed grids; every other observer
    // already holds the statistics of one pass and sits it out.
    std::vector<FakeQuantizeImpl*> paused;
    for (auto& [name, module] : driven) {
      for (auto& [quantizer_name, quantizer] : quantizers_of(*module)) {
        if (auto* histogram = shared_grid_histogram(*quantizer)) {
          if (histogram->awaiting_grid()) histogram->fix_grid();
        } else if (quantizer->observer_enabled()) {
          quantizer->enable_observer(false);
          paused.push_back(quantizer);
        }
      }
    }
    CalibrationProgress counting(on_step);
    try {
      forward_loop(counting);
    } catch (...) {
      for (auto* quantizer : paused) quantizer->enable_observer(true);  // back in observe mode
      throw;
    }
    for (auto* quantizer : paused) quantizer->enable_observer(true);
  }
  if (after_last_pass) after_last_pass();

  for (auto& [name, module] : driven) {
    Quantizable& quantizable = *as_quantizable(*module);
    if (all_quantizers_have_data(*module)) {
      quantizable.set_mode(QuantMode::kFakeQuant);  // freezes scale and zero point
    } else {
      quantizable.set_mode(QuantMode::kFloat);
      report.left_float.push_back({name, quantizable.quant_type_name(),
                                   FloatReason::kNotCalibrated,
                                   "its quantizers saw no data: the forward loop never ran it"});
    }
    for (auto& [quantizer_name, quantizer] : quantizers_of(*module)) {
      report.quantizers.push_back(describe_quantizer(name, quantizer_name, *quantizer));
    }
  }
  return report;
}

}  // namespace detail

CalibrationReport calibrate(torch::nn::Module& model,
                            const std::function<void(CalibrationProgress&)>& forward_loop,
                            CalibrationProgress::Callback on_step) {
  return detail::calibrate_in_passes(model, forward_loop, std::move(on_step), {}, {});
}

CalibrationReport calibrate(torch::nn::Module& model, const std::function<void()>& forward_loop) {
  TORCH_CHECK_VALUE(static_cast<bool>(forward_loop), "calibrate: expected a forward loop, got an "
                    "empty function");
  return calibrate(model, [&](CalibrationProgress&) { forward_loop(); });
}

int64_t enable_quantizers(torch::nn::Module& model, const std::string& pattern, bool enabled) {
  int64_t switched = 0;
  for (auto& [name, module] : quantizable_modules(model)) {
    Quantizable& quantizable = *as_quantizable(*module);
    if (!quantizable.qconfig() || !module_name_or_ancestor_matches(pattern, name)) continue;
    detail::named_errors(display_name(name), [&] {
      if (!enabled) {
        quantizable.set_mode(QuantMode::kFloat);
      } else {
        quantizable.set_mode(all_quantizers_have_data(*module) ? QuantMode::kFakeQuant
                                                               : QuantMode::kObserve);
      }
    });
    ++switched;
  }
  TORCH_CHECK_VALUE(switched > 0, "enable_quantizers: expected pattern '", pattern,
                    "' to match a prepared tquant module, got no match");
  return switched;
}

int64_t set_calibration_method(torch::nn::Module& model, CalibrationMethod method,
                               std::optional<double> percentile) {
  int64_t switched = 0;
  for (const auto& item : model.named_modules()) {
    auto* quantizer = dynamic_cast<FakeQuantizeImpl*>(item.value().get());
    if (quantizer == nullptr) continue;
    auto* histogram = dynamic_cast<HistogramObserverImpl*>(quantizer->observer.get());
    if (histogram == nullptr) continue;
    histogram->set_calibration_method(method, percentile);
    // Refresh frozen parameters from the kept histogram; never observe again.
    if (histogram->has_data() && quantizer->qparams().defined()) quantizer->update_qparams();
    ++switched;
  }
  TORCH_CHECK_VALUE(switched > 0, "set_calibration_method: expected quantizers with a "
                    "HistogramObserver (e.g. from int8_static_qconfig), got none in the model");
  return switched;
}

namespace {

int64_t disable_all_observers(torch::nn::Module& model) {
  int64_t frozen = 0;
  for (const auto& [name, quantizer] : quantizers_of(model)) {
    TORCH_CHECK_VALUE(!quantizer->fake_quant_enabled() || quantizer->options.dynamic() ||
                          quantizer->qparams().defined(),
                      "enable_observers(false): ", name, " has no scale yet (its observer saw no "
                      "data); run a training step that reaches it (or tquant::calibrate) "
                      "before freezing, or switch its module off with enable_quantizers");
    quantizer->enable_observer(false);
    ++frozen;
  }
  TORCH_CHECK_VALUE(frozen > 0, "enable_observers(false): expected a prepared model (tquant "
                    "modules with quantizers), got none; call tquant::prepare_qat or "
                    "tquant::prepare first");
  detail::name_quantizers(model);
  return frozen;
}

int64_t enable_fake_quant_observers(torch::nn::Module& model) {
  int64_t enabled = 0;
  for (auto& [name, module] : quantizable_modules(model)) {
    if (as_quantizable(*module)->mode() != QuantMode::kFakeQuant) continue;
    for (auto& [quantizer_name, quantizer] : quantizers_of(*module)) {
      quantizer->enable_observer(true);
      ++enabled;
    }
  }
  TORCH_CHECK_VALUE(enabled > 0, "enable_observers: expected tquant modules in fake-quant mode "
                    "(after prepare_qat, or prepare and calibrate), got none");
  detail::name_quantizers(model);
  return enabled;
}

}  // namespace

int64_t enable_observers(torch::nn::Module& model, bool enabled) {
  return enabled ? enable_fake_quant_observers(model) : disable_all_observers(model);
}

}  // namespace tquant
