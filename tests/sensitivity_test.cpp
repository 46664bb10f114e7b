#include <gtest/gtest.h>
#include "test_util.h"

#include "tquant/sensitivity.h"

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tquant/nn/quant_linear.h"
#include "tquant/quantize.h"

using namespace tquant;

namespace {

constexpr double kOutlierGain = 1000.0;

/// Three QuantLinear layers; the input of fc2 has one channel kOutlierGain times larger than
/// the others (and fc2's weights for it kOutlierGain times smaller, so the float function is
/// unchanged in scale). Per-tensor int8 on fc2's input then takes its scale from the outlier
/// channel and rounds the other 31 channels to zero: fc2 is by far the most sensitive layer.
struct OutlierNetImpl : torch::nn::Module {
  OutlierNetImpl() {
    fc1 = register_module("fc1", QuantLinear(16, 32));
    fc2 = register_module("fc2", QuantLinear(32, 32));
    fc3 = register_module("fc3", QuantLinear(32, 3));
    gain = register_buffer("gain", torch::ones({32}));
    torch::NoGradGuard no_grad;
    gain[0] = kOutlierGain;
    fc2->weight.select(1, 0).div_(kOutlierGain);
  }
  at::Tensor forward(const at::Tensor& x) {
    return fc3(torch::relu(fc2(torch::relu(fc1(x)) * gain)));
  }
  QuantLinear fc1{nullptr};
  QuantLinear fc2{nullptr};
  QuantLinear fc3{nullptr};
  at::Tensor gain;
};
TORCH_MODULE(OutlierNet);

/// A calibrated OutlierNet, held-out inputs and the float model's outputs on them.
struct Fixture {
  OutlierNet net{nullptr};
  at::Tensor inputs;
  at::Tensor reference;

  Fixture() {
    torch::manual_seed(0);
    net = OutlierNet();
    net->eval();
    inputs = torch::randn({65, 16});
    torch::NoGradGuard no_grad;
    reference = net->forward(inputs);
    prepare(*net, QConfigMapping(int8_static_qconfig()));
    calibrate(*net, [&] {
      for (int i = 0; i < 4; ++i) net->forward(torch::randn({33, 16}));
    });
  }

  /// Mean squared error against the float outputs: lower is better.
  double mse() {
    torch::NoGradGuard no_grad;
    return torch::mse_loss(net->forward(inputs), reference).item<double>();
  }

  std::vector<QuantMode> modes() const {
    return {net->fc1->mode(), net->fc2->mode(), net->fc3->mode()};
  }
};

using tquant::test::error_message;

SensitivityOptions lower_is_better() { return SensitivityOptions().higher_is_better(false); }

}  // namespace

TEST(Sensitivity, OutlierLayerRanksFirstAndModesAreRestored) {
  Fixture f;
  const std::vector<QuantMode> modes = f.modes();
  const at::Tensor before = [&] {
    torch::NoGradGuard no_grad;
    return f.net->forward(f.inputs);
  }();

  std::vector<int64_t> progress;
  const SensitivityReport report = analyze_sensitivity(
      *f.net, [&] { return f.mse(); },
      lower_is_better().on_progress([&](int64_t done, int64_t total) {
        progress.push_back(done);
        EXPECT_EQ(total, 8);
      }));

  EXPECT_EQ(progress, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(report.float_metric, 0.0);  // the float model reproduces its own outputs
  EXPECT_GT(report.quantized_metric, 0.0);
  ASSERT_EQ(report.groups.size(), 3U);
  EXPECT_EQ(report.groups[0].group, "fc2");
  EXPECT_EQ(report.groups[0].modules, std::vector<std::string>{"fc2"});
  // fc2 alone costs most of the loss, by the one-at-a-time measure too.
  for (size_t i = 1; i < report.groups.size(); ++i) {
    EXPECT_GT(report.groups[0].drop_when_quantized, 10 * report.groups[i].drop_when_quantized);
    EXPECT_GT(report.groups[0].recovery_when_float, 10 * report.groups[i].recovery_when_float);
  }
  EXPECT_GT(report.groups[0].recovery_when_float, 0.9 * report.loss(report.quantized_metric));

  EXPECT_EQ(f.modes(), modes);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(f.net->forward(f.inputs), before));

  std::ostringstream printed;
  printed << report;
  EXPECT_NE(printed.str().find("3 group(s) ranked by recovery when float"), std::string::npos)
      << printed.str();
}

TEST(Sensitivity, HigherIsBetterRanksTheSame) {
  Fixture f;
  const SensitivityReport report = analyze_sensitivity(
      *f.net, [&] { return -f.mse(); },
      SensitivityOptions().ranking(SensitivityRanking::kDropWhenQuantized));
  ASSERT_EQ(report.groups.size(), 3U);
  EXPECT_EQ(report.groups[0].group, "fc2");
  EXPECT_GT(report.groups[0].drop_when_quantized, 0.0);
  EXPECT_DOUBLE_EQ(report.loss(report.quantized_metric), f.mse());
}

TEST(Sensitivity, PatternGroupsAndDisabledModules) {
  Fixture f;
  enable_quantizers(*f.net, "fc3", false);
  const SensitivityReport report = analyze_sensitivity(
      *f.net, [&] { return f.mse(); }, lower_is_better().groups({"fc1", "fc*"}));
  EXPECT_EQ(report.left_float, std::vector<std::string>{"fc3"});
  ASSERT_EQ(report.groups.size(), 2U);
  EXPECT_EQ(report.groups[0].group, "fc*");
  EXPECT_EQ(report.groups[0].modules, (std::vector<std::string>{"fc1", "fc2"}));
  // Every quantized module in float: exactly the float model.
  EXPECT_EQ(report.groups[0].metric_only_float, report.float_metric);
  EXPECT_EQ(f.net->fc3->mode(), QuantMode::kFloat);
}

TEST(Sensitivity, ModesAreRestoredWhenTheMetricThrows) {
  Fixture f;
  const std::vector<QuantMode> modes = f.modes();
  int calls = 0;
  EXPECT_THROW(analyze_sensitivity(*f.net,
                                   [&]() -> double {
                                     if (++calls == 3) throw std::runtime_error("metric failed");
                                     return f.mse();
                                   }),
               std::runtime_error);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(f.modes(), modes);
  EXPECT_TRUE(f.net->fc1->input_quantizer->fake_quant_enabled());
  EXPECT_FALSE(f.net->fc1->input_quantizer->observer_enabled());
}

TEST(Sensitivity, Errors) {
  // No tquant module at all.
  torch::nn::Sequential plain(torch::nn::Linear(3, 3));
  EXPECT_NE(error_message([&] { analyze_sensitivity(*plain, [] { return 0.0; }); })
                .find("expected a calibrated model"),
            std::string::npos);

  // Prepared but not calibrated: observe mode.
  OutlierNet observing;
  prepare(*observing, QConfigMapping(int8_static_qconfig()));
  EXPECT_NE(error_message([&] { analyze_sensitivity(*observing, [] { return 0.0; }); })
                .find("expected module 'fc1' in fake_quant or float mode (a calibrated model), "
                      "got observe"),
            std::string::npos);

  Fixture f;
  EXPECT_NE(error_message([&] {
              analyze_sensitivity(*f.net, [] { return 0.0; },
                                  SensitivityOptions().groups({"encoder.*"}));
            }).find("expected group pattern 'encoder.*' to match a quantized"),
            std::string::npos);
  EXPECT_NE(error_message([&] { analyze_sensitivity(*f.net, {}); }).find("metric function"),
            std::string::npos);
}

TEST(Fallback, SwitchesTheOutlierLayerFirstAndReachesTheBudget) {
  Fixture f;
  const SensitivityReport report =
      analyze_sensitivity(*f.net, [&] { return f.mse(); }, lower_is_better());
  // A budget the model without fc2 quantized meets with a wide margin (fc2 carries > 90 % of
  // the loss, checked above) and the fully quantized model does not.
  const double budget = 0.5 * report.loss(report.quantized_metric);

  std::vector<std::string> seen;
  const FallbackReport fallback = fallback_to_float(
      *f.net, report, [&] { return f.mse(); }, budget,
      [&](const FallbackStep& step) { seen.push_back(step.group); });

  EXPECT_EQ(fallback.float_groups(), std::vector<std::string>{"fc2"});
  EXPECT_EQ(seen, std::vector<std::string>{"fc2"});
  EXPECT_TRUE(fallback.within_budget);
  EXPECT_LE(fallback.loss(fallback.final_metric), budget);
  EXPECT_DOUBLE_EQ(fallback.quantized_metric, report.quantized_metric);
  // The model is left as the report says: fc2 in float, the others quantized.
  EXPECT_EQ(f.modes(), (std::vector<QuantMode>{QuantMode::kFakeQuant, QuantMode::kFloat,
                                               QuantMode::kFakeQuant}));
  EXPECT_DOUBLE_EQ(f.mse(), fallback.final_metric);

  std::ostringstream printed;
  printed << fallback;
  EXPECT_NE(printed.str().find("fallback: 1 group(s) in float"), std::string::npos)
      << printed.str();
}

TEST(Fallback, ZeroBudgetEndsAllFloatAndGenerousBudgetChangesNothing) {
  Fixture f;
  const SensitivityReport report =
      analyze_sensitivity(*f.net, [&] { return f.mse(); }, lower_is_better());
  const FallbackReport none = fallback_to_float(
      *f.net, report, [&] { return f.mse(); }, 2 * report.loss(report.quantized_metric));
  EXPECT_TRUE(none.steps.empty());
  EXPECT_TRUE(none.within_budget);

  const FallbackReport all = fallback_to_float(*f.net, report, [&] { return f.mse(); }, 0.0);
  EXPECT_EQ(all.steps.size(), 3U);
  EXPECT_EQ(all.final_metric, 0.0);
  EXPECT_TRUE(all.within_budget);
}

TEST(Fallback, RanksByOneMetricAndStopsOnAnother) {
  Fixture f;
  // Ranked by the MSE (lower is better); the stopping rule is the cosine of the outputs with
  // the float outputs, a higher-is-better metric whose float value is exactly 1.
  const SensitivityReport ranking =
      analyze_sensitivity(*f.net, [&] { return f.mse(); }, lower_is_better());
  auto cosine = [&] {
    torch::NoGradGuard no_grad;
    return torch::cosine_similarity(f.net->forward(f.inputs).flatten(), f.reference.flatten(), 0)
        .item<double>();
  };
  const double quantized_cosine = cosine();
  ASSERT_LT(quantized_cosine, 1.0 - 1e-4);
  const double budget = 0.5 * (1.0 - quantized_cosine);

  const FallbackReport fallback =
      fallback_to_float(*f.net, ranking, cosine, FallbackCriterion{1.0, true}, budget);
  EXPECT_EQ(fallback.float_groups(), std::vector<std::string>{"fc2"});
  EXPECT_DOUBLE_EQ(fallback.float_metric, 1.0);
  EXPECT_TRUE(fallback.higher_is_better);
  EXPECT_DOUBLE_EQ(fallback.quantized_metric, quantized_cosine);
  EXPECT_DOUBLE_EQ(fallback.final_metric, cosine());
  EXPECT_GT(fallback.final_metric, quantized_cosine);
  EXPECT_TRUE(fallback.within_budget);
  EXPECT_LE(fallback.loss(fallback.final_metric), budget);

  // The same criterion with a budget nothing meets: every group ends in float, and the loss
  // is measured against 1.0 in the higher-is-better direction (all float: cosine 1, loss 0).
  const FallbackReport all =
      fallback_to_float(*f.net, ranking, cosine, FallbackCriterion{1.0, true}, 0.0);
  EXPECT_EQ(all.steps.size(), 3U);
  EXPECT_NEAR(all.final_metric, 1.0, 1e-6);
}

TEST(Fallback, Errors) {
  Fixture f;
  const SensitivityReport report =
      analyze_sensitivity(*f.net, [&] { return f.mse(); }, lower_is_better());
  EXPECT_NE(error_message([&] { fallback_to_float(*f.net, report, [] { return 0.0; }, -1.0); })
                .find("expected budget >= 0, got -1"),
            std::string::npos);
  torch::nn::Sequential other(QuantLinear(16, 3));
  prepare(*other, QConfigMapping(int8_static_qconfig()));
  EXPECT_NE(error_message([&] { fallback_to_float(*other, report, [] { return 0.0; }, 0.1); })
                .find("expected module 'fc2' of group 'fc2' to be a prepared tquant module"),
            std::string::npos);

  // The metric throws mid-way: the model gets its calibrated modes back.
  int calls = 0;
  EXPECT_THROW(fallback_to_float(*f.net, report,
                                 [&]() -> double {
                                   if (++calls == 2) throw std::runtime_error("metric failed");
                                   return f.mse();
                                 },
                                 0.0),
               std::runtime_error);
  EXPECT_EQ(f.modes(), (std::vector<QuantMode>(3, QuantMode::kFakeQuant)));
}
