#include "tquant/qconfig_mapping.h"

#include <algorithm>
#include <utility>

#include "tquant/nn/quantizable.h"

namespace tquant {

namespace {

/// Literal characters and wildcards of a pattern, for "most specific" ordering.
std::pair<int64_t, int64_t> specificity(const std::string& pattern) {
  const auto stars = static_cast<int64_t>(std::count(pattern.begin(), pattern.end(), '*'));
  return {static_cast<int64_t>(pattern.size()) - stars, stars};
}

/// Replaces the rule with the same key or appends a new one (so "added last" is the end).
void upsert(std::vector<std::string>& keys, const std::string& key) {
  keys.erase(std::remove(keys.begin(), keys.end(), key), keys.end());
  keys.push_back(key);
}

/// "a.b.c" -> "a.b"; "a" -> "" (the root); "" -> nullopt.
std::optional<std::string> parent_name(const std::string& name) {
  if (name.empty()) return std::nullopt;
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return std::string();
  return name.substr(0, dot);
}

}  // namespace

bool module_name_matches(const std::string& pattern, const std::string& name) {
  // Greedy glob with backtracking to the last '*': O(|pattern| * |name|) at worst.
  size_t p = 0;
  size_t n = 0;
  size_t star = std::string::npos;
  size_t star_n = 0;
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_n = n;
    } else if (p < pattern.size() && pattern[p] == name[n]) {
      ++p;
      ++n;
    } else if (star != std::string::npos) {
      p = star + 1;
      n = ++star_n;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool module_name_or_ancestor_matches(const std::string& pattern, const std::string& name) {
  std::optional<std::string> current = name;
  while (current) {
    if (module_name_matches(pattern, *current)) return true;
    current = parent_name(*current);
    if (current && current->empty()) break;  // the root has no name a pattern could target
  }
  return false;
}

std::string torch_type_name(const torch::nn::Module& module) {
  std::string type = module.name();
  const std::string suffix = "Impl";
  if (type.size() > suffix.size() &&
      type.compare(type.size() - suffix.size(), suffix.size(), suffix) == 0) {
    type.erase(type.size() - suffix.size());
  }
  return type;
}

std::vector<std::string> module_type_names(const torch::nn::Module& module) {
  std::vector<std::string> names;
  if (const auto* quantizable = dynamic_cast<const Quantizable*>(&module)) {
    names.push_back(quantizable->quant_type_name());
  }
  names.push_back(torch_type_name(module));
  return names;
}

std::string to_string(MappingRule rule) {
  switch (rule) {
    case MappingRule::kSkip:
      return "skip";
    case MappingRule::kExactName:
      return "name";
    case MappingRule::kNamePattern:
      return "pattern";
    case MappingRule::kModuleType:
      return "type";
    case MappingRule::kInheritedName:
      return "inherited";
    case MappingRule::kGlobal:
      return "global";
    case MappingRule::kNone:
      return "none";
  }
  return "unknown";
}

QConfigMapping::QConfigMapping(QConfig global) { set_global(std::move(global)); }

QConfigMapping& QConfigMapping::set_global(QConfig qconfig) {
  check_qconfig(qconfig, "QConfigMapping global config");
  global_ = std::move(qconfig);
  return *this;
}

QConfigMapping& QConfigMapping::set_module_name(const std::string& name, QConfig qconfig) {
  TORCH_CHECK_VALUE(name.find('*') == std::string::npos,
                    "QConfigMapping::set_module_name: expected an exact module name, got the "
                    "pattern '", name, "'; use set_module_name_pattern for wildcards");
  check_qconfig(qconfig, "QConfigMapping rule for module '" + name + "'");
  names_.erase(std::remove_if(names_.begin(), names_.end(),
                              [&](const Rule& rule) { return rule.key == name; }),
               names_.end());
  names_.push_back({name, std::move(qconfig)});
  return *this;
}

QConfigMapping& QConfigMapping::set_module_name_pattern(const std::string& pattern,
                                                        QConfig qconfig) {
  TORCH_CHECK_VALUE(!pattern.empty(),
                    "QConfigMapping::set_module_name_pattern: expected a pattern, got ''");
  check_qconfig(qconfig, "QConfigMapping rule for pattern '" + pattern + "'");
  patterns_.erase(std::remove_if(patterns_.begin(), patterns_.end(),
                                 [&](const Rule& rule) { return rule.key == pattern; }),
                  patterns_.end());
  patterns_.push_back({pattern, std::move(qconfig)});
  return *this;
}

QConfigMapping& QConfigMapping::set_module_type(const std::string& type_name, QConfig qconfig) {
  TORCH_CHECK_VALUE(!type_name.empty(),
                    "QConfigMapping::set_module_type: expected a type name, got ''");
  check_qconfig(qconfig, "QConfigMapping rule for type '" + type_name + "'");
  types_.erase(std::remove_if(types_.begin(), types_.end(),
                              [&](const Rule& rule) { return rule.key == type_name; }),
               types_.end());
  types_.push_back({type_name, std::move(qconfig)});
  return *this;
}

QConfigMapping& QConfigMapping::skip(const std::string& name_or_pattern) {
  TORCH_CHECK_VALUE(!name_or_pattern.empty(),
                    "QConfigMapping::skip: expected a module name or pattern, got ''");
  upsert(skips_, name_or_pattern);
  return *this;
}

const QConfigMapping::Rule* QConfigMapping::name_rule(const std::string& name,
                                                      MappingRule* kind) const {
  for (const auto& rule : names_) {
    if (rule.key == name) {
      *kind = MappingRule::kExactName;
      return &rule;
    }
  }
  const Rule* best = nullptr;
  std::pair<int64_t, int64_t> best_rank{-1, 0};
  for (const auto& rule : patterns_) {
    if (!module_name_matches(rule.key, name)) continue;
    const auto [literals, stars] = specificity(rule.key);
    // More literals wins; then fewer stars; ">=" on a full tie lets the later rule win.
    const bool better = best == nullptr || literals > best_rank.first ||
                        (literals == best_rank.first && stars <= best_rank.second);
    if (better) {
      best = &rule;
      best_rank = {literals, stars};
    }
  }
  if (best != nullptr) *kind = MappingRule::kNamePattern;
  return best;
}

MappingMatch QConfigMapping::resolve(const std::string& name,
                                     const std::vector<std::string>& type_names) const {
  for (const auto& skip : skips_) {
    if (module_name_or_ancestor_matches(skip, name)) {
      return {std::nullopt, MappingRule::kSkip, skip};
    }
  }
  MappingRule kind = MappingRule::kNone;
  if (const Rule* rule = name_rule(name, &kind)) return {rule->qconfig, kind, rule->key};
  for (const auto& type : type_names) {
    for (const auto& rule : types_) {
      if (rule.key == type) return {rule.qconfig, MappingRule::kModuleType, rule.key};
    }
  }
  for (auto ancestor = parent_name(name); ancestor && !ancestor->empty();
       ancestor = parent_name(*ancestor)) {
    if (const Rule* rule = name_rule(*ancestor, &kind)) {
      return {rule->qconfig, MappingRule::kInheritedName, rule->key};
    }
  }
  if (global_) return {global_, MappingRule::kGlobal, ""};
  return {std::nullopt, MappingRule::kNone, ""};
}

MappingMatch QConfigMapping::resolve(const std::string& name,
                                     const torch::nn::Module& module) const {
  return resolve(name, module_type_names(module));
}

std::optional<QConfig> QConfigMapping::qconfig_for(const std::string& name,
                                                   const torch::nn::Module& module) const {
  return resolve(name, module).qconfig;
}

}  // namespace tquant
