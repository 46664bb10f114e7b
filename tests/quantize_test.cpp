#include <gtest/gtest.h>
#include "test_util.h"

#include "tquant/nn/quant_conv2d.h"
#include "tquant/nn/quant_embedding.h"
#include "tquant/quantize.h"

#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tquant/functional.h"
#include "tquant/histogram_observer.h"
#include "tquant/nn/quant_linear.h"

using namespace tquant;
namespace F = torch::nn::functional;

using tquant::test::error_message;

namespace {

/// A model written with tquant modules in member fields, as the user's path recommends.
struct MemberNetImpl : torch::nn::Module {
  MemberNetImpl() {
    fc1 = register_module("fc1", QuantLinear(17, 33));
    fc2 = register_module("fc2", QuantLinear(33, 5));
    unused = register_module("unused", QuantLinear(5, 3));
  }
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  QuantLinear fc1{nullptr};
  QuantLinear fc2{nullptr};
  QuantLinear unused{nullptr};
};
TORCH_MODULE(MemberNet);

/// A plain torch::nn::Linear in a member field: prepare cannot swap it.
struct PlainMemberNetImpl : torch::nn::Module {
  PlainMemberNetImpl() {
    plain = register_module("plain", torch::nn::Linear(17, 33));
    quant = register_module("quant", QuantLinear(33, 5));
  }
  at::Tensor forward(const at::Tensor& x) { return quant(plain(x)); }
  torch::nn::Linear plain{nullptr};
  QuantLinear quant{nullptr};
};
TORCH_MODULE(PlainMemberNet);

std::vector<at::Tensor> batches(int64_t count, int64_t features, int64_t seed) {
  torch::manual_seed(seed);
  std::vector<at::Tensor> result;
  for (int64_t i = 0; i < count; ++i) result.push_back(torch::randn({7, features}));
  return result;
}

/// What a QuantLinear in fake-quant mode must compute, from its frozen quantizers.
at::Tensor manual_fake_quant_linear(QuantLinearImpl& fc, const at::Tensor& x) {
  const at::Tensor xq = fake_quantize(x, fc.input_quantizer->qparams());
  const at::Tensor wq = fake_quantize(fc.weight, fc.weight_quantizer->qparams());
  return F::linear(xq, wq, fc.bias);
}

QConfigMapping static_mapping() { return QConfigMapping(int8_static_qconfig()); }

}  // namespace

TEST(Prepare, ReportNamesDynamicPerTokenInputs) {
  MemberNet net;
  QConfigMapping mapping(int8_static_qconfig());
  mapping.set_module_name("fc2", int8_dynamic_qconfig());
  const PrepareReport report = prepare(*net, mapping);
  ASSERT_NE(report.find_quantized("fc1"), nullptr);
  ASSERT_NE(report.find_quantized("fc2"), nullptr);
  EXPECT_EQ(report.find_quantized("fc1")->scheme.find("dynamic"), std::string::npos);
  EXPECT_NE(report.find_quantized("fc2")->scheme.find("input_quantizer=int8 symmetric narrow "
                                                       "per_tensor dynamic per-token"),
            std::string::npos)
      << report.find_quantized("fc2")->scheme;
}

TEST(Prepare, MemberFieldsAreQuantizedInPlace) {
  MemberNet net;
  QuantLinearImpl* fc1_before = net->fc1.get();
  const PrepareReport report = prepare(*net, static_mapping());
  EXPECT_EQ(report.quantized.size(), 3U);
  EXPECT_TRUE(report.replaced.empty());
  EXPECT_TRUE(report.left_float.empty()) << report;
  ASSERT_NE(report.find_quantized("fc1"), nullptr);
  EXPECT_EQ(report.find_quantized("fc1")->type, "QuantLinear");
  EXPECT_EQ(report.find_quantized("fc1")->rule, "global");
  EXPECT_NE(report.find_quantized("fc1")->scheme.find("input_quantizer=int8"), std::string::npos);
  // Same objects, new mode: the parent's member field is what was prepared.
  EXPECT_EQ(net->fc1.get(), fc1_before);
  EXPECT_EQ(net->fc1->mode(), QuantMode::kObserve);
  EXPECT_FALSE(net->fc1->input_quantizer.is_empty());

  const auto data = batches(4, 17, 1);
  torch::NoGradGuard no_grad;
  calibrate(*net, [&] {
    for (const auto& batch : data) net->forward(batch);
  });
  EXPECT_EQ(net->fc1->mode(), QuantMode::kFakeQuant);
  EXPECT_EQ(net->fc2->mode(), QuantMode::kFakeQuant);

  // fc1(x) through the member field runs the quantized computation.
  const at::Tensor x = torch::randn({3, 17});
  const at::Tensor y = net->fc1(x);
  EXPECT_TRUE(torch::equal(y, manual_fake_quant_linear(*net->fc1, x)));
  EXPECT_FALSE(torch::equal(y, F::linear(x, net->fc1->weight, net->fc1->bias)));
  // The whole model too.
  const at::Tensor expected =
      manual_fake_quant_linear(*net->fc2, torch::relu(manual_fake_quant_linear(*net->fc1, x)));
  EXPECT_TRUE(torch::equal(net->forward(x), expected));
}

TEST(Prepare, SequentialLinearsAreReplacedAndRunInItsForward) {
  torch::manual_seed(0);
  torch::nn::Sequential seq(torch::nn::Linear(17, 33), torch::nn::ReLU(),
                            torch::nn::Linear(33, 5));
  const at::Tensor w0 = seq->ptr<torch::nn::LinearImpl>(0)->weight.detach().clone();
  const at::Tensor x = torch::randn({3, 17});
  const at::Tensor y_float = seq->forward(x).detach();

  const PrepareReport report = prepare(*seq, static_mapping());
  ASSERT_EQ(report.replaced.size(), 2U) << report;
  EXPECT_EQ(report.replaced[0].name, "0");
  EXPECT_EQ(report.replaced[0].from, "torch::nn::Linear");
  EXPECT_EQ(report.replaced[0].to, "QuantLinear");
  EXPECT_EQ(report.replaced[1].name, "2");
  EXPECT_EQ(report.quantized.size(), 2U);
  ASSERT_NE(report.find_float("1"), nullptr);
  EXPECT_EQ(report.find_float("1")->reason, FloatReason::kNoTwin);

  // The Sequential's own list (what forward iterates) and its registry hold the twins.
  auto q0 = seq->ptr<QuantLinearImpl>(0);
  auto q2 = seq->ptr<QuantLinearImpl>(2);
  ASSERT_NE(q0, nullptr);
  ASSERT_NE(q2, nullptr);
  EXPECT_EQ(seq->named_children()["0"].get(), q0.get());
  EXPECT_EQ(seq->named_children()["2"].get(), q2.get());
  EXPECT_TRUE(seq->named_modules().contains("0.input_quantizer"));
  EXPECT_TRUE(torch::equal(q0->weight, w0));
  EXPECT_EQ(q0->mode(), QuantMode::kObserve);
  // Observe mode computes the float result.
  EXPECT_TRUE(torch::equal(seq->forward(x), y_float));

  const auto data = batches(4, 17, 2);
  torch::NoGradGuard no_grad;
  calibrate(*seq, [&] {
    for (const auto& batch : data) seq->forward(batch);
  });
  const at::Tensor y = seq->forward(x);
  EXPECT_FALSE(torch::equal(y, y_float));
  const at::Tensor expected =
      manual_fake_quant_linear(*q2, torch::relu(manual_fake_quant_linear(*q0, x)));
  EXPECT_TRUE(torch::equal(y, expected));
}

TEST(Prepare, SequentialConvAndEmbeddingAreReplacedByTwins) {
  torch::manual_seed(0);
  torch::nn::Sequential convs(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3)),
                              torch::nn::ReLU());
  const at::Tensor x = torch::randn({2, 3, 8, 8});
  const at::Tensor y_float = convs->forward(x).detach();
  PrepareReport report = prepare(*convs, static_mapping());
  ASSERT_EQ(report.replaced.size(), 1U) << report;
  EXPECT_EQ(report.replaced[0].to, "QuantConv2d");
  auto conv = convs->ptr<QuantConv2dImpl>(0);
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ(conv->mode(), QuantMode::kObserve);
  EXPECT_TRUE(torch::equal(convs->forward(x), y_float));

  torch::nn::ModuleList tables(torch::nn::Embedding(10, 4));
  report = prepare(*tables, static_mapping());
  ASSERT_EQ(report.replaced.size(), 1U) << report;
  EXPECT_EQ(report.replaced[0].to, "QuantEmbedding");
  EXPECT_NE(tables->ptr<QuantEmbeddingImpl>(0), nullptr);
}

TEST(Prepare, ModuleListAndModuleDictEntriesAreReplaced) {
  torch::nn::ModuleList list(torch::nn::Linear(4, 6), torch::nn::Linear(6, 3));
  torch::nn::ModuleDict dict(torch::OrderedDict<std::string, std::shared_ptr<torch::nn::Module>>{
      {"proj", torch::nn::Linear(4, 6).ptr()}, {"act", torch::nn::ReLU().ptr()}});
  PrepareReport report = prepare(*list, static_mapping());
  EXPECT_EQ(report.replaced.size(), 2U) << report;
  auto first = list->ptr<QuantLinearImpl>(0);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ((*list)[0].get(), first.get());
  EXPECT_EQ(list->named_children()["0"].get(), first.get());

  report = prepare(*dict, static_mapping());
  EXPECT_EQ(report.replaced.size(), 1U) << report;
  auto proj = std::dynamic_pointer_cast<QuantLinearImpl>((*dict)["proj"]);
  ASSERT_NE(proj, nullptr);
  EXPECT_EQ(dict->named_children()["proj"].get(), proj.get());
  EXPECT_EQ(proj->mode(), QuantMode::kObserve);
}

TEST(Prepare, ContainerEntryReferencedElsewhereIsReportedNotReplaced) {
  torch::nn::Linear kept(4, 6);  // the caller keeps a handle to the entry
  torch::nn::Sequential seq(kept, torch::nn::ReLU());
  const PrepareReport report = prepare(*seq, static_mapping());
  EXPECT_TRUE(report.replaced.empty());
  ASSERT_NE(report.find_float("0"), nullptr) << report;
  EXPECT_EQ(report.find_float("0")->reason, FloatReason::kContainerNotUpdated);
  EXPECT_EQ(seq->ptr(0).get(), kept.get());
}

TEST(Prepare, PlainLinearInMemberFieldIsReportedUnreachable) {
  PlainMemberNet net;
  const PrepareReport report = prepare(*net, static_mapping());
  const auto unreachable = report.left_float_with(FloatReason::kUnreachable);
  ASSERT_EQ(unreachable.size(), 1U) << report;
  EXPECT_EQ(unreachable[0].name, "plain");
  EXPECT_EQ(unreachable[0].type, "torch::nn::Linear");
  EXPECT_NE(unreachable[0].detail.find("member field"), std::string::npos);
  EXPECT_NE(report.find_quantized("quant"), nullptr);
  // The printed report names it too.
  const std::string text = report.to_string();
  EXPECT_NE(text.find("plain"), std::string::npos);
  EXPECT_NE(text.find("unreachable"), std::string::npos);
  EXPECT_NE(text.find("prepare: 1 quantized"), std::string::npos) << text;
}

TEST(Prepare, SkipListIsRespected) {
  MemberNet net;
  QConfigMapping mapping = static_mapping();
  mapping.skip("fc2");
  const PrepareReport report = prepare(*net, mapping);
  EXPECT_EQ(net->fc1->mode(), QuantMode::kObserve);
  EXPECT_EQ(net->fc2->mode(), QuantMode::kFloat);
  EXPECT_FALSE(net->fc2->qconfig().has_value());
  ASSERT_NE(report.find_float("fc2"), nullptr);
  EXPECT_EQ(report.find_float("fc2")->reason, FloatReason::kSkipped);

  // In a container a skipped Linear is not replaced.
  torch::nn::Sequential seq(torch::nn::Linear(4, 6), torch::nn::Linear(6, 3));
  QConfigMapping seq_mapping = static_mapping();
  seq_mapping.skip("1");
  const PrepareReport seq_report = prepare(*seq, seq_mapping);
  EXPECT_EQ(seq_report.replaced.size(), 1U);
  EXPECT_NE(seq->ptr<torch::nn::LinearImpl>(1), nullptr);
  EXPECT_EQ(seq_report.find_float("1")->reason, FloatReason::kSkipped);
}

TEST(Prepare, NoGlobalConfigLeavesModulesUnselected) {
  MemberNet net;
  QConfigMapping mapping;
  mapping.set_module_name("fc1", int8_static_qconfig());
  const PrepareReport report = prepare(*net, mapping);
  EXPECT_EQ(report.quantized.size(), 1U);
  EXPECT_EQ(report.find_float("fc2")->reason, FloatReason::kNotSelected);
}

TEST(PrepareQat, ModulesFakeQuantizeAndTrain) {
  MemberNet net;
  prepare_qat(*net, QConfigMapping(int8_qat_qconfig()));
  EXPECT_EQ(net->fc1->mode(), QuantMode::kFakeQuant);
  const auto data = batches(1, 17, 3);
  torch::optim::SGD optimizer(net->parameters(), 0.1);
  const at::Tensor target = torch::zeros({7, 5});
  double first_loss = 0.0;
  double last_loss = 0.0;
  for (int step = 0; step < 20; ++step) {
    optimizer.zero_grad();
    const at::Tensor loss = F::mse_loss(net->forward(data[0]), target);
    loss.backward();
    optimizer.step();
    if (step == 0) first_loss = loss.item<double>();
    last_loss = loss.item<double>();
  }
  EXPECT_LT(last_loss, first_loss);
  EXPECT_TRUE(net->fc1->weight_quantizer->observer_ref().has_data());
}

TEST(Calibrate, ReportsRangesAndUncalibratedModules) {
  MemberNet net;
  prepare(*net, static_mapping());
  const auto data = batches(3, 17, 4);
  torch::NoGradGuard no_grad;
  std::vector<int64_t> progress_seen;
  const CalibrationReport report = calibrate(
      *net,
      [&](CalibrationProgress& progress) {
        for (const auto& batch : data) {
          net->forward(batch);
          progress.step();
        }
      },
      [&](int64_t done) { progress_seen.push_back(done); });
  EXPECT_EQ(report.batches, 3);
  EXPECT_EQ(progress_seen, (std::vector<int64_t>{1, 2, 3}));

  const QuantizerReport* weight = report.find_quantizer("fc1.weight_quantizer");
  ASSERT_NE(weight, nullptr) << report;
  EXPECT_TRUE(weight->calibrated);
  EXPECT_EQ(weight->module, "fc1");
  // Per-channel min-max weights: the largest amax is max |W| (symmetric, narrow range).
  const double max_abs_w = net->fc1->weight.abs().max().item<double>();
  EXPECT_NEAR(weight->amax_max, max_abs_w, 1e-6 * max_abs_w);
  EXPECT_LT(weight->scale_min, weight->scale_max);
  const QuantizerReport* input = report.find_quantizer("fc1.input_quantizer");
  ASSERT_NE(input, nullptr);
  EXPECT_TRUE(input->calibrated);
  EXPECT_EQ(input->scale_min, input->scale_max);
  EXPECT_GT(input->amax_max, 0.0);
  EXPECT_NE(input->observer.find("Histogram"), std::string::npos) << input->observer;

  // "unused" never ran: float, reported.
  EXPECT_EQ(net->unused->mode(), QuantMode::kFloat);
  ASSERT_EQ(report.left_float.size(), 1U);
  EXPECT_EQ(report.left_float[0].name, "unused");
  EXPECT_EQ(report.left_float[0].reason, FloatReason::kNotCalibrated);
  EXPECT_FALSE(report.find_quantizer("unused.input_quantizer")->calibrated);
  const std::string text = report.to_string();
  EXPECT_NE(text.find("calibrate: 4 of 6 quantizers calibrated over 3 batches"),
            std::string::npos)
      << text;
}

TEST(Calibrate, UnpreparedModelIsRejected) {
  MemberNet net;
  EXPECT_NE(error_message([&] { calibrate(*net, [] {}); }).find("expected a prepared model"),
            std::string::npos);
}

TEST(SetCalibrationMethod, ChangesScalesWithoutCollectingAgain) {
  MemberNet net;
  prepare(*net, static_mapping());
  auto data = batches(4, 17, 5);
  data[0].index_put_({0, 0}, 40.0);  // one outlier: a 99 % percentile clips it, max does not
  torch::NoGradGuard no_grad;
  calibrate(*net, [&] {
    for (const auto& batch : data) net->forward(batch);
  });
  FakeQuantizeImpl& quantizer = *net->fc1->input_quantizer;
  auto& histogram = dynamic_cast<HistogramObserverImpl&>(*quantizer.observer);
  const at::Tensor counts = histogram.counts.clone();
  EXPECT_EQ(set_calibration_method(*net, CalibrationMethod::kPercentile, 99.0), 3);
  const double percentile_scale = quantizer.scale.item<double>();
  const at::Tensor x = torch::randn({3, 17});
  const at::Tensor y_percentile = net->forward(x);

  EXPECT_EQ(set_calibration_method(*net, CalibrationMethod::kMax), 3);
  const double max_scale = quantizer.scale.item<double>();
  EXPECT_GT(max_scale, percentile_scale);
  EXPECT_NEAR(max_scale * 127.0, 40.0, 1e-4);
  EXPECT_TRUE(torch::equal(histogram.counts, counts));  // nothing collected again
  EXPECT_EQ(net->fc1->mode(), QuantMode::kFakeQuant);
  EXPECT_FALSE(torch::equal(net->forward(x), y_percentile));

  // Back to the percentile: the first scale again.
  set_calibration_method(*net, CalibrationMethod::kPercentile, 99.0);
  EXPECT_DOUBLE_EQ(quantizer.scale.item<double>(), percentile_scale);
  EXPECT_TRUE(torch::equal(net->forward(x), y_percentile));
}

TEST(EnableQuantizers, DisabledModuleIsBitEqualToFloat) {
  MemberNet net;
  prepare(*net, static_mapping());
  const auto data = batches(4, 17, 6);
  torch::NoGradGuard no_grad;
  calibrate(*net, [&] {
    for (const auto& batch : data) net->forward(batch);
  });
  const at::Tensor x = torch::randn({3, 17});
  const at::Tensor y_quant = net->fc1(x);

  EXPECT_EQ(enable_quantizers(*net, "fc1", false), 1);
  EXPECT_EQ(net->fc1->mode(), QuantMode::kFloat);
  EXPECT_TRUE(torch::equal(net->fc1(x), F::linear(x, net->fc1->weight, net->fc1->bias)));
  EXPECT_EQ(net->fc2->mode(), QuantMode::kFakeQuant);  // others untouched

  EXPECT_EQ(enable_quantizers(*net, "fc1", true), 1);
  EXPECT_EQ(net->fc1->mode(), QuantMode::kFakeQuant);
  EXPECT_TRUE(torch::equal(net->fc1(x), y_quant));

  // Patterns; the never-calibrated "unused" goes back to observe mode.
  EXPECT_EQ(enable_quantizers(*net, "*", false), 3);
  EXPECT_EQ(enable_quantizers(*net, "fc*", true), 2);
  EXPECT_EQ(enable_quantizers(*net, "unused", true), 1);
  EXPECT_EQ(net->unused->mode(), QuantMode::kObserve);
  EXPECT_NE(error_message([&] { enable_quantizers(*net, "nope", false); })
                .find("got no match"),
            std::string::npos);
}

TEST(EnableQuantizers, DisabledBeforeCalibrationStaysFloat) {
  MemberNet net;
  prepare(*net, static_mapping());
  enable_quantizers(*net, "fc2", false);
  const auto data = batches(2, 17, 7);
  torch::NoGradGuard no_grad;
  const CalibrationReport report = calibrate(*net, [&] {
    for (const auto& batch : data) net->forward(batch);
  });
  EXPECT_EQ(net->fc2->mode(), QuantMode::kFloat);
  EXPECT_EQ(net->fc1->mode(), QuantMode::kFakeQuant);
  bool reported = false;
  for (const auto& module : report.left_float) {
    if (module.name == "fc2") reported = module.reason == FloatReason::kDisabled;
  }
  EXPECT_TRUE(reported) << report;
}

TEST(Calibrate, ObserverErrorNamesTheQuantizer) {
  MemberNet net;
  prepare(*net, static_mapping());
  at::Tensor bad = torch::randn({4, 17});
  bad[2][5] = std::numeric_limits<float>::quiet_NaN();
  torch::NoGradGuard no_grad;
  const std::string message = error_message([&] { calibrate(*net, [&] { net->forward(bad); }); });
  EXPECT_EQ(message.rfind("fc1.input_quantizer: HistogramObserver: expected finite values", 0),
            0U)
      << message;
  // The type is kept (ValueError), so callers can still catch it by type.
  EXPECT_THROW(calibrate(*net, [&] { net->forward(bad); }), c10::ValueError);
}

TEST(Calibrate, PresetCanIgnoreNonFiniteCalibrationData) {
  MemberNet net;
  prepare(*net, QConfigMapping(int8_static_qconfig(
                    PresetOptions().non_finite(NonFinitePolicy::kIgnore))));
  at::Tensor data = torch::randn({64, 17});
  at::Tensor bad = data.clone();
  bad[2][5] = std::numeric_limits<float>::infinity();
  bad[3][0] = std::numeric_limits<float>::quiet_NaN();
  torch::NoGradGuard no_grad;
  const CalibrationReport report = calibrate(*net, [&] { net->forward(bad); });
  ASSERT_NE(report.find_quantizer("fc1.input_quantizer"), nullptr) << report;
  EXPECT_TRUE(report.find_quantizer("fc1.input_quantizer")->calibrated) << report;
  EXPECT_TRUE(std::isfinite(report.find_quantizer("fc1.input_quantizer")->scale_max)) << report;
  EXPECT_EQ(net->fc1->mode(), QuantMode::kFakeQuant);
}

TEST(Qat, FreezeObserversKeepsRangesInEvalAndEnableObserversLetsThemMove) {
  MemberNet net;
  prepare_qat(*net, QConfigMapping(int8_qat_qconfig()));
  torch::NoGradGuard no_grad;
  net->forward(torch::randn({8, 17}));  // first step: ranges from data
  const at::Tensor scale = net->fc1->input_quantizer->scale.clone();
  net->eval();
  net->forward(10 * torch::randn({8, 17}));  // eval() alone does not stop the observers
  EXPECT_FALSE(torch::equal(net->fc1->input_quantizer->scale, scale));

  // "unused" never ran, so it has no range: switch it off, or enable_observers(false) names it.
  enable_quantizers(*net, "unused", false);
  EXPECT_EQ(enable_observers(*net, false), 6);  // input and weight quantizers of the three modules
  const at::Tensor frozen = net->fc1->input_quantizer->scale.clone();
  net->forward(100 * torch::randn({8, 17}));
  EXPECT_TRUE(torch::equal(net->fc1->input_quantizer->scale, frozen));
  EXPECT_FALSE(net->fc1->input_quantizer->observer_enabled());

  EXPECT_EQ(enable_observers(*net), 4);
  net->forward(100 * torch::randn({8, 17}));
  EXPECT_FALSE(torch::equal(net->fc1->input_quantizer->scale, frozen));
}

TEST(Qat, FreezeObserversNamesAQuantizerWithoutRange) {
  MemberNet net;
  prepare_qat(*net, QConfigMapping(int8_qat_qconfig()));  // no step run yet
  const std::string message = error_message([&] { enable_observers(*net, false); });
  EXPECT_NE(message.find("enable_observers(false): fc1.input_quantizer has no scale yet"),
            std::string::npos)
      << message;
}

TEST(Calibrate, SharedGridHistogramsGetARangePassThenACountingPass) {
  // fc1's input: a shared-grid histogram; fc2's input: a moving average, which must see each
  // batch once (a second pass would move it); the weights: per-channel min-max.
  QConfig shared = int8_static_qconfig(PresetOptions().histogram_grid(HistogramGrid::kShared));
  QConfig moving = int8_qat_qconfig();
  auto data = batches(4, 17, 9);
  data[2] = data[2] * 3.0;  // a later batch widens the range: no grid may follow the first
  auto run = [&](const QConfigMapping& mapping, int* loops) {
    torch::manual_seed(1);  // the same weights in both models
    MemberNet net;
    prepare(*net, mapping);
    torch::NoGradGuard no_grad;
    const auto report = calibrate(*net, [&](CalibrationProgress& progress) {
      ++*loops;
      for (const auto& batch : data) {
        net->forward(batch);
        progress.step();
      }
    });
    EXPECT_EQ(report.batches, 4);
    return net;
  };
  int loops = 0;
  MemberNet net = run(QConfigMapping().set_module_name("fc1", shared).set_module_name("fc2", moving),
                      &loops);
  EXPECT_EQ(loops, 2);
  int one_pass_loops = 0;
  MemberNet reference = run(QConfigMapping(moving), &one_pass_loops);
  EXPECT_EQ(one_pass_loops, 1);
  EXPECT_EQ(net->fc1->mode(), QuantMode::kFakeQuant);
  EXPECT_FALSE(net->fc1->input_quantizer->observer_enabled());  // frozen as usual
  for (const std::string name : {"input_quantizer", "weight_quantizer"}) {
    auto* mine = dynamic_cast<FakeQuantizeImpl*>(net->fc2->named_children()[name].get());
    auto* theirs = dynamic_cast<FakeQuantizeImpl*>(reference->fc2->named_children()[name].get());
    EXPECT_TRUE(torch::equal(mine->qparams().scale, theirs->qparams().scale)) << name;
  }
  // fc1's histogram: the whole range over 2048 bins, every value counted once.
  auto& histogram = dynamic_cast<HistogramObserverImpl&>(*net->fc1->input_quantizer->observer);
  double top = 0;
  int64_t total = 0;
  for (const auto& batch : data) {
    top = std::max(top, batch.abs().max().item<double>());
    total += batch.numel();
  }
  EXPECT_EQ(histogram.bin_width.item<double>(), top / 2048);
  EXPECT_EQ(histogram.counts.sum().item<double>(), static_cast<double>(total));
  EXPECT_NE(histogram.describe().find("shared grid"), std::string::npos);
}

TEST(Prepare, ReportSaysAtOnceWhenDefaultSpecsWillNotConvert) {
  // QuantSpec defaults to narrow_range(false); the INT8 GEMMs take narrow codes only, so a
  // QConfig built from default specs simulates but never converts. prepare says so at once.
  auto quantizer = [](QuantSpec spec) {
    return fake_quantize_factory(FakeQuantizeOptions(
        observer_factory<MinMaxObserver>(MinMaxObserverOptions(spec))));
  };
  const QConfig default_specs{quantizer(QuantSpec()), quantizer(QuantSpec())};
  MemberNet net;
  const PrepareReport report = prepare(*net, QConfigMapping(default_specs));
  const QuantizedModule* fc1 = report.find_quantized("fc1");
  ASSERT_NE(fc1, nullptr);
  EXPECT_NE(fc1->convert_note.find("narrow_range(true)"), std::string::npos) << fc1->convert_note;
  EXPECT_NE(report.to_string().find("convert will keep simulating"), std::string::npos)
      << report;
  EXPECT_NE(report.to_string().find("3 that convert will not lower"), std::string::npos)
      << report;
  // ... and convert keeps them simulated, with the same reason.
  calibrate(*net, [&] { net->forward(torch::randn({4, 17})); });
  const ConvertReport converted = convert(*net);
  ASSERT_NE(converted.find_unconverted("fc1"), nullptr) << converted;
  EXPECT_NE(converted.find_unconverted("fc1")->reason.find("narrow_range(true)"),
            std::string::npos);

  // The same specs with narrow_range(true), as the presets set it: nothing to say.
  const QuantSpec narrow = QuantSpec().narrow_range(true);
  MemberNet preset_like;
  const PrepareReport fine =
      prepare(*preset_like, QConfigMapping(QConfig{quantizer(narrow), quantizer(narrow)}));
  EXPECT_TRUE(fine.find_quantized("fc1")->convert_note.empty());
  MemberNet preset;
  EXPECT_TRUE(prepare(*preset, static_mapping()).find_quantized("fc2")->convert_note.empty());
}
