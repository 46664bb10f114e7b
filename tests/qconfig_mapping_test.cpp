#include <gtest/gtest.h>
#include "test_util.h"

#include "tquant/qconfig_mapping.h"

#include <string>

#include <torch/torch.h>

#include "tquant/nn/quant_linear.h"

using namespace tquant;

using tquant::test::error_message;

namespace {

/// Configs told apart by whether they quantize activations and by their weight spec.
QConfig static_qc() { return int8_static_qconfig(); }
QConfig weight_only_qc() { return weight_only_int8_qconfig(); }
QConfig int4_qc() { return weight_only_int4_qconfig(4); }

}  // namespace

TEST(ModuleNameMatches, StarMatchesAnyRunIncludingDots) {
  EXPECT_TRUE(module_name_matches("encoder.layer.*.attention.*",
                                  "encoder.layer.3.attention.self.query"));
  EXPECT_TRUE(module_name_matches("*", "a.b.c"));
  EXPECT_TRUE(module_name_matches("fc*", "fc"));
  EXPECT_TRUE(module_name_matches("*.query", "encoder.layer.0.attention.query"));
  EXPECT_FALSE(module_name_matches("*.query", "query"));
  EXPECT_FALSE(module_name_matches("encoder.layer.*.attention.*", "encoder.layer.3.output"));
  EXPECT_FALSE(module_name_matches("fc1", "fc10"));
  EXPECT_TRUE(module_name_matches("fc1", "fc1"));
}

TEST(ModuleNameMatches, AncestorMatchCoversDescendants) {
  EXPECT_TRUE(module_name_or_ancestor_matches("classifier", "classifier.0"));
  EXPECT_TRUE(module_name_or_ancestor_matches("encoder.layer.*", "encoder.layer.1.fc"));
  EXPECT_FALSE(module_name_or_ancestor_matches("classifier", "classifier_head.0"));
}

TEST(QConfigMapping, TypeNamesOfQuantizableAndPlainModules) {
  QuantLinear quant(3, 5);
  torch::nn::Linear plain(3, 5);
  const auto quant_names = module_type_names(*quant);
  ASSERT_EQ(quant_names.size(), 2U);
  EXPECT_EQ(quant_names[0], "QuantLinear");
  EXPECT_EQ(quant_names[1], "tquant::QuantLinear");
  const auto plain_names = module_type_names(*plain);
  ASSERT_EQ(plain_names.size(), 1U);
  EXPECT_EQ(plain_names[0], "torch::nn::Linear");
}

TEST(QConfigMapping, EmptyMappingSelectsNothing) {
  QConfigMapping mapping;
  QuantLinear fc(3, 5);
  const MappingMatch match = mapping.resolve("fc", *fc);
  EXPECT_FALSE(match.qconfig.has_value());
  EXPECT_EQ(match.rule, MappingRule::kNone);
  EXPECT_FALSE(mapping.qconfig_for("fc", *fc).has_value());
}

TEST(QConfigMapping, PrecedenceSkipThenNameThenPatternThenTypeThenGlobal) {
  QConfigMapping mapping(static_qc());
  mapping.set_module_type("QuantLinear", weight_only_qc())
      .set_module_name_pattern("encoder.*", int4_qc())
      .set_module_name("encoder.fc", static_qc())
      .skip("encoder.skipped");
  QuantLinear fc(8, 8);

  // Exact name beats pattern and type.
  auto match = mapping.resolve("encoder.fc", *fc);
  EXPECT_EQ(match.rule, MappingRule::kExactName);
  EXPECT_TRUE(match.qconfig->quantizes_activations());
  // Pattern beats type.
  match = mapping.resolve("encoder.other", *fc);
  EXPECT_EQ(match.rule, MappingRule::kNamePattern);
  EXPECT_EQ(match.key, "encoder.*");
  // Type beats global.
  match = mapping.resolve("decoder.fc", *fc);
  EXPECT_EQ(match.rule, MappingRule::kModuleType);
  EXPECT_FALSE(match.qconfig->quantizes_activations());
  // Global for a type without a rule.
  match = mapping.resolve("decoder.relu", std::vector<std::string>{"torch::nn::ReLU"});
  EXPECT_EQ(match.rule, MappingRule::kGlobal);
  // Skip beats everything, including an exact name rule for the same module.
  mapping.set_module_name("encoder.skipped", static_qc());
  match = mapping.resolve("encoder.skipped", *fc);
  EXPECT_EQ(match.rule, MappingRule::kSkip);
  EXPECT_FALSE(match.qconfig.has_value());
}

TEST(QConfigMapping, MostSpecificPatternWins) {
  QConfigMapping mapping;
  mapping.set_module_name_pattern("encoder.*", weight_only_qc())
      .set_module_name_pattern("encoder.layer.*.attention.*", static_qc())
      .set_module_name_pattern("*", int4_qc());
  QuantLinear fc(8, 8);
  auto match = mapping.resolve("encoder.layer.0.attention.query", *fc);
  EXPECT_EQ(match.key, "encoder.layer.*.attention.*");
  match = mapping.resolve("encoder.layer.0.output", *fc);
  EXPECT_EQ(match.key, "encoder.*");
  match = mapping.resolve("pooler", *fc);
  EXPECT_EQ(match.key, "*");
}

TEST(QConfigMapping, EquallySpecificPatternsLastAddedWins) {
  QConfigMapping mapping;
  mapping.set_module_name_pattern("a.*", weight_only_qc()).set_module_name_pattern("*.b",
                                                                                   static_qc());
  QuantLinear fc(8, 8);
  EXPECT_EQ(mapping.resolve("a.b", *fc).key, "*.b");
  // Setting an existing pattern again replaces it and makes it the latest.
  mapping.set_module_name_pattern("a.*", int4_qc());
  EXPECT_EQ(mapping.resolve("a.b", *fc).key, "a.*");
}

TEST(QConfigMapping, ChildrenInheritNameRulesButOwnTypeRuleWins) {
  QConfigMapping mapping(static_qc());
  mapping.set_module_name("encoder", weight_only_qc()).set_module_type("QuantLinear", int4_qc());
  torch::nn::Linear plain(8, 8);
  QuantLinear fc(8, 8);
  auto match = mapping.resolve("encoder.block.dense", *plain);
  EXPECT_EQ(match.rule, MappingRule::kInheritedName);
  EXPECT_EQ(match.key, "encoder");
  // torch.ao's order: the module's own type rule comes before what its parent passes down.
  match = mapping.resolve("encoder.block.fc", *fc);
  EXPECT_EQ(match.rule, MappingRule::kModuleType);
}

TEST(QConfigMapping, SkipCoversDescendantsAndPatterns) {
  QConfigMapping mapping(static_qc());
  mapping.skip("classifier").skip("*.attention.*");
  QuantLinear fc(8, 8);
  EXPECT_EQ(mapping.resolve("classifier.0", *fc).rule, MappingRule::kSkip);
  EXPECT_EQ(mapping.resolve("encoder.attention.query", *fc).rule, MappingRule::kSkip);
  EXPECT_EQ(mapping.resolve("encoder.output", *fc).rule, MappingRule::kGlobal);
  ASSERT_EQ(mapping.skip_list().size(), 2U);
}

TEST(QConfigMapping, TypeRuleByTorchTypeName) {
  QConfigMapping mapping;
  mapping.set_module_type("torch::nn::Linear", weight_only_qc());
  torch::nn::Linear plain(8, 8);
  EXPECT_EQ(mapping.resolve("fc", *plain).rule, MappingRule::kModuleType);
  // A QuantLinear is also found through its LibTorch type name.
  mapping.set_module_type("tquant::QuantLinear", static_qc());
  QuantLinear fc(8, 8);
  EXPECT_TRUE(mapping.qconfig_for("fc", *fc)->quantizes_activations());
}

TEST(QConfigMapping, BadRulesAreRejected) {
  QConfigMapping mapping;
  EXPECT_NE(error_message([&] { mapping.set_module_name("a.*", static_qc()); })
                .find("set_module_name_pattern"),
            std::string::npos);
  EXPECT_NE(error_message([&] { mapping.skip(""); }).find("expected a module name"),
            std::string::npos);
  EXPECT_NE(error_message([&] { mapping.set_global(QConfig{}); }), "");
}
