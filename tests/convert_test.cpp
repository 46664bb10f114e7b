#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tquant/nn/quant_conv2d.h"
#include "tquant/nn/quant_embedding.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/nn/quant_matmul.h"
#include "tquant/qconfig.h"
#include "tquant/quantize.h"

using namespace tquant;

namespace {

/// Two Linear layers and an attention-like product, as the BERT example uses them.
struct RandomNetImpl : torch::nn::Module {
  RandomNetImpl(int64_t in, int64_t hidden, int64_t out) {
    fc1 = register_module("fc1", QuantLinear(in, hidden));
    fc2 = register_module("fc2", QuantLinear(hidden, out));
    scores = register_module("scores", QuantMatMul());
  }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor h = torch::gelu(fc1(x));
    const at::Tensor s = scores(h, h.transpose(-2, -1)).softmax(-1);
    return fc2(torch::matmul(s, h));
  }
  QuantLinear fc1{nullptr};
  QuantLinear fc2{nullptr};
  QuantMatMul scores{nullptr};
};
TORCH_MODULE(RandomNet);

/// Max |a - b| in units of one int8 step of b's range (max |b| / 127).
double error_in_output_steps(const at::Tensor& a, const at::Tensor& b) {
  const double step = b.abs().max().item<double>() / 127.0;
  return (a - b).abs().max().item<double>() / step;
}

void calibrate_on(torch::nn::Module& model, const std::function<at::Tensor(const at::Tensor&)>& run,
                  const std::vector<int64_t>& shape, int64_t batches) {
  torch::NoGradGuard no_grad;
  calibrate(model, [&] {
    for (int64_t i = 0; i < batches; ++i) run(torch::randn(shape));
  });
}

}  // namespace

TEST(ConvertTest, StaticInt8EqualsFakeQuantWithinOneOutputStepOnRandomModelsAndOddShapes) {
  // (in, hidden, out, tokens): odd and prime sizes, 3-D inputs.
  const std::vector<std::vector<int64_t>> shapes = {
      {17, 33, 5, 7}, {64, 96, 32, 16}, {31, 129, 77, 13}, {1, 3, 2, 1}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto& s = shapes[i];
    torch::manual_seed(100 + static_cast<int64_t>(i));
    RandomNet net(s[0], s[1], s[2]);
    net->eval();
    prepare(*net, QConfigMapping(int8_static_qconfig()));
    calibrate_on(*net, [&](const at::Tensor& x) { return net->forward(x); }, {2, s[3], s[0]}, 4);

    torch::NoGradGuard no_grad;
    const at::Tensor x = torch::randn({3, s[3], s[0]});
    const at::Tensor simulated = net->forward(x);
    const ConvertReport report = convert(*net);
    ASSERT_EQ(report.converted.size(), 3u) << report;
    EXPECT_EQ(net->fc1->mode(), QuantMode::kConverted);
    EXPECT_EQ(net->fc1->converted_scheme(), "int8_static");
    EXPECT_EQ(net->scores->converted_scheme(), "int8_static");
    const at::Tensor converted = net->forward(x);
    ASSERT_EQ(converted.sizes(), simulated.sizes());
    // The integer codes are those of the simulation; only float32 rounding of the GEMM and its
    // epilogue differs, far below one output step.
    const double steps = error_in_output_steps(converted, simulated);
    EXPECT_LE(steps, 1.0) << "shape " << i;
    EXPECT_LE(steps, 0.01) << "shape " << i << ": more than float rounding apart";
  }
}

TEST(ConvertTest, DynamicInt8EqualsDynamicFakeQuantSimulation) {
  torch::manual_seed(7);
  torch::nn::Sequential net(torch::nn::Linear(45, 70), torch::nn::ReLU(),
                            torch::nn::Linear(70, 9));
  // Simulation first: prepare_qat with the dynamic config runs per-token fake quantization.
  prepare_qat(*net, QConfigMapping().set_module_type("QuantLinear", int8_dynamic_qconfig()));
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({5, 11, 45}) * torch::linspace(0.1, 10, 45);
  const at::Tensor simulated = net->forward(x);
  const ConvertReport report = convert(*net);
  ASSERT_EQ(report.converted.size(), 2u) << report;
  EXPECT_EQ(report.converted[0].scheme, "int8_dynamic");
  const at::Tensor converted = net->forward(x);
  EXPECT_LE(error_in_output_steps(converted, simulated), 0.01);
}

TEST(ConvertTest, QuantizeDynamicReplacesContainerLinearsAndRunsInt8) {
  torch::manual_seed(8);
  torch::nn::Sequential net(torch::nn::Linear(32, 64), torch::nn::GELU(),
                            torch::nn::Linear(64, 16));
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({4, 32});
  const at::Tensor reference = net->forward(x);
  const ConvertReport report = quantize_dynamic(*net);
  ASSERT_EQ(report.converted.size(), 2u) << report;
  EXPECT_NE(report.converted[0].backend.find("int8 GEMM"), std::string::npos);
  EXPECT_FALSE(report.left_float.empty());  // the GELU, with its reason
  ASSERT_NE(report.find_float("1"), nullptr) << report;
  EXPECT_EQ(report.find_float("1")->type, "torch::nn::GELU");
  EXPECT_EQ(report.find_float("0"), nullptr);
  const at::Tensor quantized = net->forward(x);
  // int8 per-token / per-channel on a 2-layer MLP: a few percent of the output range.
  EXPECT_LE(error_in_output_steps(quantized, reference), 4.0);
  EXPECT_EQ(net->named_parameters().find("0.weight"), nullptr);
  EXPECT_NE(net->named_buffers().find("0.weight_int8"), nullptr);
}

TEST(ConvertTest, WeightOnlyLinearAndEmbeddingEqualTheirSimulation) {
  torch::manual_seed(9);
  QuantLinear fc(256, 24);
  QuantEmbedding table(50, 256);
  for (const auto& qconfig : {weight_only_int8_qconfig(), weight_only_int4_qconfig(64)}) {
    QuantLinear linear = std::dynamic_pointer_cast<QuantLinearImpl>(fc->clone());
    QuantEmbedding embedding = std::dynamic_pointer_cast<QuantEmbeddingImpl>(table->clone());
    linear->set_qconfig(qconfig);
    linear->set_mode(QuantMode::kFakeQuant);
    embedding->set_qconfig(qconfig);
    embedding->set_mode(QuantMode::kFakeQuant);
    torch::NoGradGuard no_grad;
    const at::Tensor x = torch::randn({6, 256});
    const at::Tensor ids = torch::randint(50, {3, 4});
    const at::Tensor linear_sim = linear(x);
    const at::Tensor embedding_sim = embedding(ids);
    ASSERT_TRUE(linear->convert().converted);
    ASSERT_TRUE(embedding->convert().converted);
    EXPECT_EQ(linear->mode(), QuantMode::kConverted);
    // code * scale is the very product fake quantization computes: equal lookups, and a GEMM
    // on the same weight values.
    EXPECT_TRUE(torch::equal(embedding(ids), embedding_sim)) << embedding->converted_scheme();
    EXPECT_TRUE(torch::allclose(linear(x), linear_sim, 1e-5, 1e-5)) << linear->converted_scheme();
  }
}

TEST(ConvertTest, ConvertBeforeCalibrationIsAnErrorNamingTheQuantizerAndChangesNothing) {
  RandomNet net(8, 16, 4);
  prepare(*net, QConfigMapping(int8_static_qconfig()));
  try {
    convert(*net);
    FAIL() << "expected an error";
  } catch (const c10::Error& error) {
    EXPECT_NE(std::string(error.what()).find("fc1.input_quantizer"), std::string::npos)
        << error.what();
    EXPECT_NE(std::string(error.what()).find("calibrate"), std::string::npos);
  }
  EXPECT_EQ(net->fc1->mode(), QuantMode::kObserve);
  EXPECT_TRUE(net->fc1->weight.defined());
}

TEST(ConvertTest, UnpreparedModelIsAnError) {
  RandomNet net(8, 16, 4);
  EXPECT_THROW(convert(*net), c10::Error);
}

TEST(ConvertTest, ConvertedModulesRefuseModeChangesAndSetModeConverted) {
  QuantLinear fc(8, 4);
  fc->set_qconfig(weight_only_int8_qconfig());
  EXPECT_THROW(fc->set_mode(QuantMode::kConverted), c10::Error);
  fc->set_mode(QuantMode::kFakeQuant);
  ASSERT_TRUE(fc->convert().converted);
  EXPECT_THROW(fc->set_mode(QuantMode::kFloat), c10::Error);
  EXPECT_THROW(fc->set_mode(QuantMode::kFakeQuant), c10::Error);
  fc->set_mode(QuantMode::kConverted);  // no change: allowed
}

TEST(ConvertTest, ModulesWhoseSchemeHasNoIntegerKernelKeepSimulatingAndAreReported) {
  struct NetImpl : torch::nn::Module {
    NetImpl() {
      conv = register_module("conv", QuantConv2d(torch::nn::Conv2dOptions(3, 4, 3)));
      fc = register_module("fc", QuantLinear(4, 2));
      off = register_module("off", QuantLinear(2, 2));
    }
    at::Tensor forward(const at::Tensor& x) {
      return off(fc(conv(x).mean({2, 3})));
    }
    QuantConv2d conv{nullptr};
    QuantLinear fc{nullptr};
    QuantLinear off{nullptr};
  };
  auto net = std::make_shared<NetImpl>();
  // Affine uint8 activations: no INT8 convolution takes them, so the conv keeps simulating.
  QConfig affine{fake_quantize_factory(FakeQuantizeOptions(observer_factory<MinMaxObserver>(
                     MinMaxObserverOptions(QuantSpec(QuantDtype::kUInt8).symmetric(false))))),
                 int8_static_qconfig().weight};
  QConfigMapping mapping(int8_static_qconfig());
  mapping.set_module_name("conv", affine);
  prepare(*net, mapping);
  calibrate_on(*net, [&](const at::Tensor& x) { return net->forward(x); }, {2, 3, 8, 8}, 2);
  enable_quantizers(*net, "off", false);
  const ConvertReport report = convert(*net);
  ASSERT_NE(report.find_converted("fc"), nullptr) << report;
  const UnconvertedModule* conv = report.find_unconverted("conv");
  ASSERT_NE(conv, nullptr) << report;
  EXPECT_EQ(conv->mode, QuantMode::kFakeQuant);
  EXPECT_EQ(net->conv->mode(), QuantMode::kFakeQuant);
  const UnconvertedModule* off = report.find_unconverted("off");
  ASSERT_NE(off, nullptr);
  EXPECT_EQ(off->mode, QuantMode::kFloat);
  std::ostringstream text;
  text << report;
  EXPECT_NE(text.str().find("convert: 1 converted, 1 kept fake-quant"), std::string::npos)
      << text.str();
}

TEST(ConvertTest, AffineActivationsAreNotConvertedAndSaySo) {
  QuantLinear fc(8, 4);
  QConfig affine{fake_quantize_factory(FakeQuantizeOptions(observer_factory<MinMaxObserver>(
                     MinMaxObserverOptions(QuantSpec(QuantDtype::kUInt8).symmetric(false))))),
                 int8_static_qconfig().weight};
  fc->set_qconfig(affine);
  fc->set_mode(QuantMode::kObserve);
  fc(torch::randn({4, 8}));
  fc->set_mode(QuantMode::kFakeQuant);
  const ConvertResult result = fc->convert();
  EXPECT_FALSE(result.converted);
  EXPECT_NE(result.reason.find("no INT8 GEMM"), std::string::npos) << result.reason;
  EXPECT_EQ(fc->mode(), QuantMode::kFakeQuant);
}

TEST(ConvertTest, ConvertedModuleClonesWithItsIntegerState) {
  torch::manual_seed(3);
  QuantLinear fc(16, 8);
  fc->set_qconfig(int8_static_qconfig());
  fc->set_mode(QuantMode::kObserve);
  torch::NoGradGuard no_grad;
  fc(torch::randn({32, 16}));
  fc->set_mode(QuantMode::kFakeQuant);
  ASSERT_TRUE(fc->convert().converted);
  auto copy = std::dynamic_pointer_cast<QuantLinearImpl>(fc->clone());
  const at::Tensor x = torch::randn({5, 16});
  EXPECT_EQ(copy->mode(), QuantMode::kConverted);
  EXPECT_TRUE(torch::equal(copy->forward(x), fc(x)));
  std::vector<std::string> names;
  for (const auto& item : fc->named_buffers()) names.push_back(item.key());
  EXPECT_EQ(names, (std::vector<std::string>{"weight_int8", "weight_scale", "input_scale"}));
  EXPECT_EQ(fc->named_parameters().size(), 1u);  // bias only
}

TEST(ConvertTest, SecondConvertReportsAlreadyConvertedAndChangesNothing) {
  torch::manual_seed(41);
  RandomNet net(8, 16, 4);
  prepare(*net, QConfigMapping(int8_static_qconfig()));
  calibrate_on(*net, [&](const at::Tensor& x) { return net->forward(x); }, {2, 5, 8}, 2);
  const ConvertReport first = convert(*net);
  ASSERT_EQ(first.converted.size(), 3U) << first;
  EXPECT_TRUE(first.already_converted.empty()) << first;
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({2, 5, 8});
  const at::Tensor y = net->forward(x);

  const ConvertReport second = convert(*net);
  EXPECT_TRUE(second.converted.empty()) << second;
  ASSERT_EQ(second.already_converted.size(), 3U) << second;
  EXPECT_EQ(second.already_converted[0].name, "fc1");
  EXPECT_EQ(second.already_converted[0].scheme, "int8_static");
  std::ostringstream text;
  text << second;
  EXPECT_NE(text.str().find("convert: 0 converted, 3 already converted"), std::string::npos)
      << text.str();
  EXPECT_TRUE(torch::equal(net->forward(x), y));
}
