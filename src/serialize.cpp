#include "tquant/serialize.h"

#include <map>
#include <optional>
#include <sstream>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "tquant/fake_quantize.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/nn/quantizable.h"
#include "tquant/safetensors.h"
#include "module_walk.h"
#include "quantizer_recipe.h"

namespace tquant {

namespace {

using nlohmann::json;

constexpr const char* kFormatKey = "tquant.format";
constexpr const char* kFormatName = "tquant-state";
constexpr const char* kVersionKey = "tquant.format_version";
constexpr const char* kModulesKey = "tquant.modules";
constexpr const char* kHistogramsKey = "tquant.histograms";
/// Per-module key of the quantizer recipes ({child name: recipe}, quantizer_recipe.h).
constexpr const char* kRecipesKey = "quantizers";
/// Per-module key of a SmoothQuant module: the number of factors (Quantizable::smoothing), so
/// load_state registers the buffer before copying it.
constexpr const char* kSmoothKey = "smooth_factors";
/// Per-QuantLinear key: whether forward applies a fused GELU (QuantLinearImpl::set_fused_gelu).
/// The flag is not a tensor, and a model that lost it would skip a GELU without an error.
constexpr const char* kFusedGeluKey = "fused_gelu";
/// Differences listed by name in a structure-mismatch error, per kind.
constexpr size_t kListedDifferences = 5;

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

std::map<std::string, at::Tensor> model_tensors(const torch::nn::Module& model) {
  std::map<std::string, at::Tensor> result;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (item.value().defined()) result[item.key()] = item.value();
  }
  for (const auto& item : model.named_buffers(/*recurse=*/true)) {
    if (item.value().defined()) result[item.key()] = item.value();
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

std::string file_key(const std::string& name) { return name.empty() ? "." : name; }

/// {child name: recipe} of a module's quantizers; empty when one of them has no recipe (a
/// user-defined observer), so a load never rebuilds only some of them.
json quantizer_recipes(torch::nn::Module& module) {
  json recipes = json::object();
  for (const auto& child : module.named_children()) {
    auto* quantizer = dynamic_cast<FakeQuantizeImpl*>(child.value().get());
    if (quantizer == nullptr) continue;
    auto recipe = detail::quantizer_recipe(*quantizer);
    if (!recipe) return json::object();
    recipes[child.key()] = *recipe;
  }
  return recipes;
}

/// {name: {"type", "mode", "scheme", "<quantizer>": "<spec>", "quantizers": {recipes}}} for
/// every tquant module.
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
    const json recipes = quantizer_recipes(*item.value());
    if (!recipes.empty()) entry[kRecipesKey] = recipes;
    const at::Tensor smooth_factor = quantizable->get_smooth_factor();
    if (smooth_factor.defined()) entry[kSmoothKey] = smooth_factor.numel();
    if (const auto* linear = dynamic_cast<const QuantLinearImpl*>(item.value().get())) {
      entry[kFusedGeluKey] = linear->fused_gelu();
    }
    modules[file_key(item.key())] = entry;
  }
  return modules;
}

/// What load_state does to one tquant module of the model, or to the twin it puts in place of
/// a plain torch module inside a container.
struct ModulePlan {
  std::shared_ptr<torch::nn::Module> module;  ///< the live module, or the twin
  QuantMode mode = QuantMode::kFloat;
  std::string scheme;              ///< for kConverted
  std::optional<QConfig> qconfig;  ///< rebuilt from the file's recipes (module has none)
  int64_t smooth_factors = 0;      ///< SmoothQuant factors in the file (0: not smoothed)
  json recipes;                    ///< the file's recipes, to check what qconfig builds
  // A container entry to replace by `module` (a twin built with from_float):
  torch::nn::Module* container = nullptr;
  std::string key;
  const torch::nn::Module* old = nullptr;
  torch::nn::AnyModule twin;
};

/// A QuantLinear's fused GELU must be the file's (files written before the key existed are not
/// checked). The model's own module must already have it: its class decides whether forward
/// applies GELU itself. A twin that load_state puts into a container takes the file's flag.
void check_fused_gelu(const json& entry, ModulePlan& step, const std::string& key,
                      const std::string& what) {
  auto* linear = dynamic_cast<QuantLinearImpl*>(step.module.get());
  if (linear == nullptr || !entry.contains(kFusedGeluKey)) return;
  const bool saved = entry.at(kFusedGeluKey).get<bool>();
  if (step.container != nullptr) {
    linear->set_fused_gelu(saved);
    return;
  }
  TORCH_CHECK_VALUE(saved == linear->fused_gelu(), what, ": module '", key, "' was saved ",
                    saved ? "with" : "without", " a fused GELU but has ",
                    linear->fused_gelu() ? "one" : "none", " in the model; call ",
                    "set_fused_gelu(", saved ? "true" : "false", ") on it before load_state, as "
                    "the saved model did (the flag changes what forward computes)");
}

/// The QConfig whose factories rebuild the recorded quantizers: the weight factory from
/// "weight_quantizer", the activation factory from the others (all built by one factory).
QConfig qconfig_from_recipes(const json& recipes, const std::string& name) {
  QConfig qconfig;
  for (const auto& [child, recipe] : recipes.items()) {
    const std::string what = detail::join_name(name, child);
    if (child == "weight_quantizer") {
      qconfig.weight = detail::quantizer_factory(recipe, what);
    } else if (!qconfig.activation) {
      qconfig.activation = detail::quantizer_factory(recipe, what);
    }
  }
  return qconfig;
}

/// Puts a module into the state the plan asks for (on a clone while checking, on the live
/// module or twin when loading).
void apply_step(torch::nn::Module& module, const ModulePlan& step, const std::string& name,
                const std::string& what) {
  auto& quantizable = *as_quantizable(module);
  if (step.qconfig) {
    quantizable.set_qconfig(*step.qconfig);
    // Each rebuilt quantizer must be the recorded one (one activation factory serves all
    // activation quantizers; a module whose activation quantizers differ cannot be rebuilt).
    const json built = quantizer_recipes(module);
    TORCH_CHECK_VALUE(built == step.recipes, what, ": module '", file_key(name),
                      "': its quantizers cannot be rebuilt from the file (recorded ",
                      step.recipes.dump(), ", rebuilt ", built.dump(),
                      "); prepare the model like the saved one before loading");
  }
  // SmoothQuant: the factors' buffer exists exactly when the file has it (placeholder ones,
  // overwritten by the copy); before make_converted, which a converted module's factors outlive.
  if ((step.smooth_factors > 0) != quantizable.get_smooth_factor().defined()) {
    quantizable.set_smooth_factor(step.smooth_factors > 0 ? at::ones({step.smooth_factors})
                                                      : at::Tensor());
  }
  if (step.mode == QuantMode::kConverted) {
    if (quantizable.mode() != QuantMode::kConverted) quantizable.make_converted(step.scheme);
  } else {
    quantizable.set_mode(step.mode);
  }
}

/// True when the step changes the module's tensors (names, dtypes or shapes).
bool changes_tensors(const ModulePlan& step) {
  const bool smoothed = as_quantizable(*step.module)->get_smooth_factor().defined();
  return step.qconfig.has_value() || (step.smooth_factors > 0) != smoothed ||
         (step.mode == QuantMode::kConverted &&
          as_quantizable(*step.module)->mode() != QuantMode::kConverted);
}

/// Differences between the model (as the plan will leave it) and the file, by kind.
struct Differences {
  std::vector<std::string> modules;      ///< module-level: missing, extra
  std::vector<std::string> missing;      ///< model tensors the file lacks
  std::vector<std::string> extra;        ///< file tensors the model lacks
  std::vector<std::string> mismatched;   ///< same name, other dtype or shape

  bool empty() const {
    return modules.empty() && missing.empty() && extra.empty() && mismatched.empty();
  }

  std::string to_string() const {
    std::ostringstream out;
    auto list = [&](const std::vector<std::string>& items, const char* label) {
      if (items.empty()) return;
      out << "; " << items.size() << ' ' << label << ": ";
      for (size_t i = 0; i < items.size() && i < kListedDifferences; ++i) {
        out << (i == 0 ? "" : ", ") << items[i];
      }
      if (items.size() > kListedDifferences) out << ", ...";
    };
    list(modules, "module difference(s)");
    list(missing, "model tensor(s) not in the file");
    list(extra, "file tensor(s) not in the model");
    list(mismatched, "tensor(s) of another dtype or shape");
    return out.str();
  }
};

}  // namespace

void save_state(const torch::nn::Module& model, const std::string& path,
                const SaveOptions& options) {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, tensor] : model_tensors(model)) {
    if (!options.include_histograms() && is_histogram_state(name)) continue;
    tensors[name] = tensor;
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
  const auto modules = json::parse(file.metadata.count(kModulesKey) != 0
                                       ? file.metadata.at(kModulesKey)
                                       : std::string("{}"));

  // Check everything first (on clones and off-model twins), so a mismatch leaves the model
  // untouched.
  Differences differences;
  std::map<std::string, ModulePlan> plan;
  auto plan_module = [&](const std::string& name, const json& entry, ModulePlan step) {
    auto& quantizable = *as_quantizable(*step.module);
    const std::string key = file_key(name);
    TORCH_CHECK_VALUE(entry.value("type", "") == quantizable.quant_type_name(), what,
                      ": module '", key, "' is a ", quantizable.quant_type_name(),
                      " in the model but a ", entry.value("type", "?"), " in the file");
    const auto mode = mode_from_string(entry.value("mode", ""));
    TORCH_CHECK_VALUE(mode.has_value(), what, ": module '", key, "' has an unknown mode '",
                      entry.value("mode", ""), "'");
    step.mode = *mode;
    step.scheme = entry.value("scheme", "");
    step.smooth_factors = entry.value(kSmoothKey, int64_t{0});
    check_fused_gelu(entry, step, key, what);
    if (quantizable.mode() == QuantMode::kConverted) {
      TORCH_CHECK_VALUE(*mode == QuantMode::kConverted &&
                            step.scheme == quantizable.converted_scheme(),
                        what, ": module '", key, "' is converted ('",
                        quantizable.converted_scheme(), "') in the model but ",
                        to_string(*mode), " ", step.scheme, " in the file; load into a float "
                        "model of the same structure");
    } else if (!quantizable.qconfig() && *mode != QuantMode::kConverted &&
               (*mode != QuantMode::kFloat || entry.contains(kRecipesKey))) {
      // A fresh model: its quantizers are built from the recipes the file records.
      TORCH_CHECK_VALUE(entry.contains(kRecipesKey), what, ": module '", key, "' is in ",
                        to_string(*mode), " mode in the file but has no quantizers in the "
                        "model, and the file does not record how to build them (a user-defined "
                        "observer, or a file of an older tquant); prepare the model like the "
                        "saved one before loading");
      step.recipes = entry.at(kRecipesKey);
      step.qconfig = qconfig_from_recipes(step.recipes, name);
    }
    plan[name] = std::move(step);
  };

  std::vector<std::string> unmatched;  // file entries that are no tquant module of the model
  {
    std::map<std::string, bool> in_model;
    for (const auto& item : model.named_modules("", /*include_self=*/true)) {
      if (as_quantizable(*item.value()) == nullptr) continue;
      const std::string key = file_key(item.key());
      in_model[key] = true;
      if (!modules.contains(key)) {
        differences.modules.push_back("'" + key + "' (" +
                                      as_quantizable(*item.value())->quant_type_name() +
                                      ") is not in the file");
        continue;
      }
      ModulePlan step;
      step.module = item.value();
      plan_module(item.key(), modules[key], std::move(step));
    }
    for (const auto& [key, entry] : modules.items()) {
      if (in_model.count(key) == 0) unmatched.push_back(key);
    }
  }
  for (const std::string& key : unmatched) {
    const json& entry = modules[key];
    const std::string type = entry.value("type", "?");
    const std::string name = key == "." ? "" : key;
    std::shared_ptr<torch::nn::Module> found = detail::find_module(model, name);
    if (!found) {
      differences.modules.push_back("'" + key + "' (" + type + " in the file) is not in the "
                                    "model");
      continue;
    }
    const detail::TwinRule* rule = detail::twin_rule_for(*found);
    TORCH_CHECK_VALUE(rule != nullptr && rule->twin_type == type, what, ": module '", key,
                      "' is a ", found->name(), " in the model but a ", type, " in the file");
    const auto mode = mode_from_string(entry.value("mode", ""));
    if (mode == QuantMode::kFloat && !entry.contains(kRecipesKey)) continue;  // same tensors
    const auto dot = name.rfind('.');
    const std::string parent_name = dot == std::string::npos ? "" : name.substr(0, dot);
    std::shared_ptr<torch::nn::Module> parent_ptr = detail::find_module(model, parent_name);
    torch::nn::Module& parent = parent_ptr ? *parent_ptr : model;
    TORCH_CHECK_VALUE(detail::is_container(parent), what, ": module '", key, "' is a plain ",
                      rule->torch_type, " held in a member field, but the file has a ", type,
                      " there: declare the field as tquant::", type, " (its parent calls it "
                      "directly, so load_state cannot swap it)");
    // Owners: the container's own list, its registry, and `found`.
    TORCH_CHECK_VALUE(found.use_count() <= 3, what, ": module '", key, "' is a plain ",
                      rule->torch_type, " that is also referenced outside its container (",
                      found.use_count() - 3, " more owner(s)); replacing it by the file's ",
                      type, " would leave that reference running float");
    ModulePlan step;
    step.container = &parent;
    step.key = dot == std::string::npos ? name : name.substr(dot + 1);
    step.old = found.get();
    step.twin = rule->make(found);
    step.module = step.twin.ptr();
    plan_module(name, entry, std::move(step));
  }

  // The model's tensors as they will be once the plan is applied: a module whose tensors
  // change is changed on a clone (a twin is changed itself), whose tensors replace its own.
  auto targets = model_tensors(model);
  for (auto& [name, step] : plan) {
    if (!changes_tensors(step) && !step.container) continue;
    const std::string prefix = name.empty() ? "" : name + ".";
    for (auto it = targets.begin(); it != targets.end();) {
      it = it->first.rfind(prefix, 0) == 0 ? targets.erase(it) : std::next(it);
    }
    std::shared_ptr<torch::nn::Module> target =
        step.container != nullptr ? step.module : step.module->clone();
    try {
      apply_step(*target, step, name, what);
    } catch (const c10::Error& error) {
      TORCH_CHECK_VALUE(false, what, ": module '", file_key(name), "' cannot take the saved "
                        "state (", to_string(step.mode),
                        step.scheme.empty() ? "" : " '" + step.scheme + "'", "): ",
                        error.what_without_backtrace());
    }
    for (const auto& [local, tensor] : model_tensors(*target)) targets[prefix + local] = tensor;
  }
  for (const auto& [name, target] : targets) {
    if (!has_histograms && is_histogram_state(name)) continue;
    if (file.tensors.count(name) == 0) differences.missing.push_back("'" + name + "'");
  }
  for (const auto& [name, saved] : file.tensors) {
    const auto target = targets.find(name);
    if (target == targets.end()) {
      differences.extra.push_back("'" + name + "'");
      continue;
    }
    const auto& t = target->second;
    if (saved.scalar_type() != t.scalar_type() ||
        (!is_observer_state(name) && saved.sizes() != t.sizes())) {
      std::ostringstream line;
      line << "'" << name << "' (model " << t.scalar_type() << " " << t.sizes() << ", file "
           << saved.scalar_type() << " " << saved.sizes() << ")";
      differences.mismatched.push_back(line.str());
    }
  }
  TORCH_CHECK_VALUE(differences.empty(), what, ": the file does not fit the model (a different "
                    "model structure, or a model prepared differently from the saved one)",
                    differences.to_string());

  // Modes first: switching mode may refresh quantizer parameters from their observers, and
  // converting builds the integer layout; the saved tensors copied afterwards (scales, zero
  // points, switches, codes) are what the model keeps.
  for (auto& [name, step] : plan) {
    if (step.container != nullptr) {
      detail::replace_container_entry(*step.container, step.key, step.old, std::move(step.twin));
    } else {
      apply_step(*step.module, step, name, what);
    }
  }
  auto live = model_tensors(model);
  at::NoGradGuard no_grad;
  for (const auto& [name, saved] : file.tensors) {
    auto& target = live.at(name);
    if (saved.sizes() == target.sizes()) {
      target.copy_(saved);
    } else {
      target.set_data(saved.to(target.device()));
    }
  }
  detail::name_quantizers(model);
  // Prepack what the converted forwards need now, not in the first (maybe concurrent) forward.
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    Quantizable* quantizable = as_quantizable(*item.value());
    if (quantizable != nullptr && quantizable->mode() == QuantMode::kConverted) {
      quantizable->prepare_converted();
    }
  }
}

}  // namespace tquant
