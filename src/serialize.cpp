#include "tquant/serialize.h"

#include <map>
#include <optional>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "tquant/fake_quantize.h"
#include "tquant/nn/quantizable.h"
#include "tquant/safetensors.h"

namespace tquant {

namespace {

using nlohmann::json;

constexpr const char* kFormatKey = "tquant.format";
constexpr const char* kFormatName = "tquant-state";
constexpr const char* kVersionKey = "tquant.format_version";
constexpr const char* kModulesKey = "tquant.modules";
constexpr const char* kHistogramsKey = "tquant.histograms";

/// Quantizer and observer state has data-dependent shapes ([0] before the first batch, [] or
/// [C] after): names under a "*quantizer" or "observer" child.
bool is_observer_state(const std::string& name) {
  return name.find("quantizer.") != std::string::npos ||
         name.find(".observer.") != std::string::npos || name.rfind("observer.", 0) == 0;
}

bool is_histogram_state(const std::string& name) {
  if (!is_observer_state(name)) return false;
  const auto leaf = name.substr(name.rfind('.') + 1);
  return leaf == "counts" || leaf == "bin_width";
}

struct ModelTensor {
  at::Tensor tensor;
  bool is_parameter;
};

std::map<std::string, ModelTensor> model_tensors(const torch::nn::Module& model) {
  std::map<std::string, ModelTensor> result;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (item.value().defined()) result[item.key()] = {item.value(), true};
  }
  for (const auto& item : model.named_buffers(/*recurse=*/true)) {
    if (item.value().defined()) result[item.key()] = {item.value(), false};
  }
  return result;
}

std::optional<QuantMode> mode_from_string(const std::string& text) {
  for (auto mode : {QuantMode::kFloat, QuantMode::kObserve, QuantMode::kFakeQuant,
                    QuantMode::kConverted}) {
    if (to_string(mode) == text) return mode;
  }
  return std::nullopt;
}

/// {name: {"type": ..., "mode": ..., "<quantizer>": "<spec>"}} for every tquant module.
json describe_modules(const torch::nn::Module& model) {
  json modules = json::object();
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    auto* quantizable = as_quantizable(*item.value());
    if (quantizable == nullptr) continue;
    json entry = {{"type", quantizable->quant_type_name()},
                  {"mode", to_string(quantizable->mode())}};
    if (quantizable->mode() == QuantMode::kConverted) {
      entry["scheme"] = quantizable->converted_scheme();
    }
    for (const auto& child : item.value()->named_children()) {
      if (auto* fq = dynamic_cast<FakeQuantizeImpl*>(child.value().get())) {
        entry[child.key()] = to_string(fq->observer_ref().quant_spec());
      }
    }
    modules[item.key().empty() ? "." : item.key()] = entry;
  }
  return modules;
}

/// What load_state will do to one tquant module.
struct ModulePlan {
  std::shared_ptr<torch::nn::Module> module;
  QuantMode mode = QuantMode::kFloat;
  std::string scheme;  ///< for kConverted
};

/// The model's tensors as they will be once the plan is applied: a module to be converted is
/// converted on a clone, whose tensors replace the module's own under its name.
std::map<std::string, ModelTensor> planned_tensors(const torch::nn::Module& model,
                                                   const std::map<std::string, ModulePlan>& plan,
                                                   const std::string& what) {
  auto tensors = model_tensors(model);
  for (const auto& [name, step] : plan) {
    auto* quantizable = as_quantizable(*step.module);
    if (step.mode != QuantMode::kConverted || quantizable->mode() == QuantMode::kConverted) {
      continue;
    }
    const std::string prefix = name.empty() ? "" : name + ".";
    for (auto it = tensors.begin(); it != tensors.end();) {
      it = it->first.rfind(prefix, 0) == 0 ? tensors.erase(it) : std::next(it);
    }
    auto copy = step.module->clone();
    try {
      as_quantizable(*copy)->make_converted(step.scheme);
    } catch (const c10::Error& error) {
      TORCH_CHECK_VALUE(false, what, ": module '", name, "' cannot take the saved converted "
                        "scheme '", step.scheme, "': ", error.what_without_backtrace());
    }
    for (const auto& [local, tensor] : model_tensors(*copy)) tensors[prefix + local] = tensor;
  }
  return tensors;
}

}  // namespace

void save_state(const torch::nn::Module& model, const std::string& path,
                const SaveOptions& options) {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, entry] : model_tensors(model)) {
    if (!options.include_histograms() && is_histogram_state(name)) continue;
    tensors[name] = entry.tensor;
  }
  std::map<std::string, std::string> metadata = {
      {kFormatKey, kFormatName},
      {kVersionKey, kStateFormatVersion},
      {kModulesKey, describe_modules(model).dump()},
      {kHistogramsKey, options.include_histograms() ? "true" : "false"}};
  write_safetensors(path, tensors, metadata);
}

void load_state(torch::nn::Module& model, const std::string& path) {
  const auto file = read_safetensors(path);
  const std::string what = "load_state('" + path + "')";
  const auto format = file.metadata.find(kFormatKey);
  TORCH_CHECK_VALUE(format != file.metadata.end() && format->second == kFormatName, what,
                    ": not a tquant state file (metadata '", kFormatKey, "' is missing)");
  const auto version = file.metadata.find(kVersionKey);
  TORCH_CHECK_VALUE(version != file.metadata.end() && version->second == kStateFormatVersion,
                    what, ": expected format version ", kStateFormatVersion, ", got ",
                    version == file.metadata.end() ? std::string("none") : version->second);
  const bool has_histograms = file.metadata.count(kHistogramsKey) == 0 ||
                              file.metadata.at(kHistogramsKey) == "true";

  // Check everything first, so a mismatch leaves the model untouched.
  const auto modules = json::parse(file.metadata.count(kModulesKey) != 0
                                       ? file.metadata.at(kModulesKey)
                                       : std::string("{}"));
  std::map<std::string, ModulePlan> plan;
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    auto* quantizable = as_quantizable(*item.value());
    if (quantizable == nullptr) continue;
    const std::string key = item.key().empty() ? "." : item.key();
    TORCH_CHECK_VALUE(modules.contains(key), what, ": the model's tquant module '", key,
                      "' is not described in the file");
    const auto& entry = modules[key];
    TORCH_CHECK_VALUE(entry.value("type", "") == quantizable->quant_type_name(), what,
                      ": module '", key, "' is a ", quantizable->quant_type_name(),
                      " in the model but a ", entry.value("type", "?"), " in the file");
    const auto mode = mode_from_string(entry.value("mode", ""));
    TORCH_CHECK_VALUE(mode.has_value(), what, ": module '", key, "' has an unknown mode '",
                      entry.value("mode", ""), "'");
    ModulePlan step{item.value(), *mode, entry.value("scheme", "")};
    if (quantizable->mode() == QuantMode::kConverted) {
      TORCH_CHECK_VALUE(*mode == QuantMode::kConverted &&
                            step.scheme == quantizable->converted_scheme(),
                        what, ": module '", key, "' is converted ('",
                        quantizable->converted_scheme(), "') in the model but ",
                        to_string(*mode), " ", step.scheme, " in the file; load into a float "
                        "model of the same structure");
    }
    plan[item.key()] = step;
  }
  const auto targets = planned_tensors(model, plan, what);
  for (const auto& [name, target] : targets) {
    if (!has_histograms && is_histogram_state(name)) continue;
    TORCH_CHECK_VALUE(file.tensors.count(name) == 1, what, ": the model's tensor '", name,
                      "' is not in the file (different model structure, or a model not "
                      "prepared like the saved one)");
  }
  for (const auto& [name, saved] : file.tensors) {
    const auto target = targets.find(name);
    TORCH_CHECK_VALUE(target != targets.end(), what, ": the file's tensor '", name,
                      "' has no counterpart in the model (different model structure, or a "
                      "model not prepared like the saved one)");
    const auto& t = target->second.tensor;
    TORCH_CHECK_VALUE(saved.scalar_type() == t.scalar_type(), what, ": tensor '", name,
                      "' expected dtype ", t.scalar_type(), ", the file has ",
                      saved.scalar_type());
    TORCH_CHECK_VALUE(is_observer_state(name) || saved.sizes() == t.sizes(), what, ": tensor '",
                      name, "' expected shape ", t.sizes(), ", the file has ", saved.sizes());
  }

  // Modes first: switching mode may refresh quantizer parameters from their observers, and
  // converting builds the integer layout; the saved tensors copied afterwards (scales, zero
  // points, switches, codes) are what the model keeps.
  for (const auto& [name, step] : plan) {
    auto* quantizable = as_quantizable(*step.module);
    if (step.mode == QuantMode::kConverted) {
      if (quantizable->mode() != QuantMode::kConverted) quantizable->make_converted(step.scheme);
    } else {
      quantizable->set_mode(step.mode);
    }
  }
  auto live = model_tensors(model);
  at::NoGradGuard no_grad;
  for (const auto& [name, saved] : file.tensors) {
    auto& target = live.at(name).tensor;
    if (saved.sizes() == target.sizes()) {
      target.copy_(saved);
    } else {
      target.set_data(saved.to(target.device()));
    }
  }
}

}  // namespace tquant
