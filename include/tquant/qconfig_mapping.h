#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "tquant/qconfig.h"

namespace tquant {

/// True when `name` matches `pattern`, where '*' matches any run of characters, dots included
/// (fnmatch style, as ModelOpt's wildcards): "encoder.layer.*.attention.*" matches
/// "encoder.layer.3.attention.self.query". A pattern without '*' matches only itself.
bool module_name_matches(const std::string& pattern, const std::string& name);

/// True when `pattern` matches `name` or one of its ancestors ("a.b" and "a" for "a.b.c"), so a
/// rule given for a parent covers everything under it.
///
/// The one rule for every module-name pattern in tquant: a pattern applies to each module it
/// matches and to everything under it. skip, enable_quantizers and the groups of
/// analyze_sensitivity test this function; QConfigMapping's name rules and patterns reach the
/// same modules through inheritance (a module without a rule of its own takes its nearest
/// ancestor's, see QConfigMapping), where a more specific rule further down may override them.
bool module_name_or_ancestor_matches(const std::string& pattern, const std::string& name);

/// Type names a mapping rule can use for `module`: for a tquant module its quant_type_name()
/// ("QuantLinear"), then the LibTorch type name without the "Impl" suffix
/// ("torch::nn::Linear", "tquant::QuantLinear", "MyBlock" for a user's MyBlockImpl).
std::vector<std::string> module_type_names(const torch::nn::Module& module);

/// The LibTorch type name of a module without the "Impl" suffix, e.g. "torch::nn::Linear".
std::string torch_type_name(const torch::nn::Module& module);

/// Which rule of a QConfigMapping decided a module's config.
enum class MappingRule {
  kSkip,           ///< an explicit skip matched the module or an ancestor: left in float
  kExactName,      ///< set_module_name(name) for the module itself
  kNamePattern,    ///< the most specific set_module_name_pattern matching the module's name
  kModuleType,     ///< set_module_type for one of the module's type names
  kInheritedName,  ///< an exact name or pattern rule of the nearest ancestor that has one
  kGlobal,         ///< set_global
  kNone,           ///< nothing matched and there is no global config: left in float
};

/// "skip", "name", "pattern", "type", "inherited", "global" or "none".
std::string to_string(MappingRule rule);

/// The decision for one module: its config (empty when it stays float) and why.
struct MappingMatch {
  std::optional<QConfig> qconfig;
  MappingRule rule = MappingRule::kNone;
  /// The name, pattern or type of the rule that matched ("" for global and none); for
  /// kInheritedName, the ancestor's rule key.
  std::string key;
};

/// Which QConfig each module of a model gets (torch.ao's QConfigMapping plus ModelOpt-style
/// wildcards and an explicit skip list). Rules are looked up by qualified module name, the
/// names of named_modules() ("encoder.layer.0.attention.query"; "" for the root).
///
/// Precedence for the module named N with type names T (first rule that applies wins):
///   1. skip:       a skip(...) entry matching N or an ancestor of N -> float;
///   2. exact name: set_module_name(N, ...);
///   3. pattern:    the most specific set_module_name_pattern(...) matching N: the pattern
///                  with the most literal (non-'*') characters; on a tie the one with fewer
///                  '*'; on a further tie the one added last;
///   4. type:       set_module_type(t, ...) for the first t in T that has a rule
///                  (the tquant type name "QuantLinear" before "torch::nn::Linear");
///   5. inherited:  steps 2 and 3 for the parent of N, then its parent, up to the root's
///                  children (torch.ao's propagate_qconfig_: a child inherits its parent's
///                  name-based config unless it has its own);
///   6. global:     set_global(...);
///   otherwise the module stays float (not selected).
/// Type rules are not inherited: a rule for "BertLayer" configures modules of that type only,
/// not their children (torch.ao would propagate it; name rules and patterns cover that need).
///
/// Setting the same name, pattern or type again replaces the earlier rule.
///
/// Example:
///   tquant::QConfigMapping mapping;
///   mapping.set_global(tquant::int8_static_qconfig())
///       .set_module_name_pattern("encoder.layer.*.attention.*", tquant::weight_only_int8_qconfig())
///       .skip("classifier");
///   std::optional<tquant::QConfig> qc = mapping.qconfig_for("encoder.layer.0.attention.query",
///                                                          *model->encoder->layer0->query);
class QConfigMapping {
 public:
  QConfigMapping() = default;
  /// A mapping whose global config is `global`.
  explicit QConfigMapping(QConfig global);

  QConfigMapping& set_global(QConfig qconfig);
  /// Rule for one module by its exact qualified name (no '*'; use set_module_name_pattern).
  QConfigMapping& set_module_name(const std::string& name, QConfig qconfig);
  /// Rule for every module whose qualified name matches `pattern` ('*' matches anything,
  /// dots included), and, by inheritance, for the modules under it that have no rule of their
  /// own (the pattern rule of module_name_or_ancestor_matches).
  QConfigMapping& set_module_name_pattern(const std::string& pattern, QConfig qconfig);
  /// Rule by type: a tquant type name ("QuantLinear", "QuantConv2d", ...) or a LibTorch type
  /// name as torch_type_name() gives it ("torch::nn::Linear", or a user type "MyBlock").
  QConfigMapping& set_module_type(const std::string& type_name, QConfig qconfig);
  /// Leaves the module named (or matched by the pattern) and everything under it in float,
  /// whatever the other rules say.
  QConfigMapping& skip(const std::string& name_or_pattern);

  /// The config for the module named `name` with the given type names (see the precedence
  /// above).
  MappingMatch resolve(const std::string& name, const std::vector<std::string>& type_names) const;
  /// resolve(name, module_type_names(module)).
  MappingMatch resolve(const std::string& name, const torch::nn::Module& module) const;
  /// The config for a module, or nullopt when it stays float.
  std::optional<QConfig> qconfig_for(const std::string& name,
                                     const torch::nn::Module& module) const;

  bool has_global() const { return global_.has_value(); }
  const std::vector<std::string>& skip_list() const { return skips_; }

 private:
  struct Rule {
    std::string key;
    QConfig qconfig;
  };
  /// Exact name, then the most specific pattern, for one name; nullptr when none matches.
  const Rule* name_rule(const std::string& name, MappingRule* kind) const;

  std::optional<QConfig> global_;
  std::vector<Rule> names_;
  std::vector<Rule> patterns_;
  std::vector<Rule> types_;
  std::vector<std::string> skips_;
};

}  // namespace tquant
