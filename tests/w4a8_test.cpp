#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tquant/functional.h"
#include "tquant/int4_pack.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/observer.h"
#include "tquant/qconfig.h"
#include "tquant/quantize.h"
#include "tquant/safetensors.h"
#include "tquant/serialize.h"

#include "test_util.h"

using namespace tquant;

namespace {

/// Max |a - b| in units of one int8 step of b's range (max |b| / 127).
double error_in_output_steps(const at::Tensor& a, const at::Tensor& b) {
  const double step = b.abs().max().item<double>() / 127.0;
  return (a - b).abs().max().item<double>() / step;
}

/// A QuantLinear calibrated with `qconfig` on a few batches of [tokens, in] data and switched to
/// fake-quant (the simulation of what convert gives).
QuantLinear calibrated_linear(int64_t in, int64_t out, const QConfig& qconfig, int64_t seed) {
  torch::manual_seed(seed);
  QuantLinear fc(in, out);
  fc->set_qconfig(qconfig);
  fc->set_mode(QuantMode::kObserve);
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 3; ++i) fc(torch::randn({6, in}));
  fc->set_mode(QuantMode::kFakeQuant);
  return fc;
}

/// Two layers called through member fields, as user models do.
struct TwoLayerImpl : torch::nn::Module {
  TwoLayerImpl(int64_t in, int64_t hidden, int64_t out)
      : fc1(register_module("fc1", QuantLinear(in, hidden))),
        fc2(register_module("fc2", QuantLinear(hidden, out))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::gelu(fc1(x))); }
  QuantLinear fc1, fc2;
};
TORCH_MODULE(TwoLayer);

/// A TwoLayer built from `seed`, prepared with `qconfig`, calibrated and converted.
TwoLayer converted_model(int64_t in, int64_t hidden, int64_t out, const QConfig& qconfig,
                         int64_t seed) {
  torch::manual_seed(seed);
  TwoLayer model(in, hidden, out);
  prepare(*model, QConfigMapping(qconfig));
  torch::NoGradGuard no_grad;
  calibrate(*model, [&] {
    for (int i = 0; i < 3; ++i) model(torch::randn({2, 5, in}));
  });
  const ConvertReport report = convert(*model);
  EXPECT_EQ(report.converted.size(), 2u) << report;
  return model;
}

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "/" + name; }

int64_t file_size(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  return static_cast<int64_t>(in.tellg());
}

}  // namespace

// ---- packed layout ------------------------------------------------------------------------

TEST(Int4Pack, LayoutIsLowNibbleEvenColumnTwosComplement) {
  // Int4Pair: byte = (lo & 0xF) | ((hi & 0xF) << 4); -7 -> 0x9, 3 -> 0x3, odd tail -> 0x0.
  const at::Tensor codes = torch::tensor({-7, 3, 5, -8, 7}, at::kChar).reshape({1, 5});
  const at::Tensor packed = pack_int4(codes);
  ASSERT_EQ(packed.scalar_type(), at::kByte);
  ASSERT_EQ(packed.sizes(), at::IntArrayRef({1, 3}));
  const auto* bytes = packed.const_data_ptr<uint8_t>();
  EXPECT_EQ(bytes[0], (0x9 | (0x3 << 4)));
  EXPECT_EQ(bytes[1], (0x5 | (0x8 << 4)));
  EXPECT_EQ(bytes[2], 0x7);  // padding nibble 0
}

TEST(Int4Pack, RoundTripOnOddSizesEqualsTheReferenceTwins) {
  torch::manual_seed(1);
  const std::vector<std::vector<int64_t>> shapes = {{1, 1}, {3, 17}, {5, 33}, {2, 3, 65},
                                                    {7, 2}, {1, 128}};
  for (const auto& shape : shapes) {
    const at::Tensor codes = torch::randint(-8, 8, shape, at::kChar);
    const at::Tensor packed = pack_int4(codes);
    EXPECT_EQ(packed.size(-1), (shape.back() + 1) / 2);
    EXPECT_TRUE(torch::equal(packed, pack_int4_ref(codes))) << codes.sizes();
    EXPECT_TRUE(torch::equal(unpack_int4(packed, shape.back()), codes)) << codes.sizes();
    EXPECT_TRUE(torch::equal(unpack_int4_ref(packed, shape.back()), codes)) << codes.sizes();
  }
}

TEST(Int4Pack, BadCodesAndShapesAreClearErrors) {
  const std::string range = test::error_message(
      [] { pack_int4(torch::tensor({1, 9, -2}, at::kChar).reshape({1, 3})); });
  EXPECT_NE(range.find("expected int4 codes in [-8, 7], got codes in [-2, 9]"), std::string::npos)
      << range;
  const std::string dtype = test::error_message([] { pack_int4(torch::zeros({2, 4})); });
  EXPECT_NE(dtype.find("expected int8 codes, got Float"), std::string::npos) << dtype;
  const std::string cols = test::error_message(
      [] { unpack_int4(torch::zeros({2, 3}, at::kByte), 7); });
  EXPECT_NE(cols.find("expected packed codes of shape [..., 4]"), std::string::npos) << cols;
}

// ---- presets --------------------------------------------------------------------------------

TEST(W4A8QConfig, PresetsGiveInt4PerChannelOrPerBlockWeightsAndInt8Activations) {
  const QuantSpec channel = int4_per_channel_weight_spec();
  EXPECT_EQ(channel.dtype(), QuantDtype::kInt4);
  EXPECT_TRUE(channel.symmetric());
  EXPECT_TRUE(channel.narrow_range());
  EXPECT_EQ(channel.granularity(), Granularity::kPerChannel);
  EXPECT_EQ(channel.axis(), 0);
  EXPECT_EQ(quant_min(channel), -7);
  EXPECT_EQ(quant_max(channel), 7);

  for (const QConfig& qconfig : {w4a8_qconfig(), w4a8_qat_qconfig()}) {
    const FakeQuantize weight = qconfig.weight();
    EXPECT_EQ(to_string(weight->observer_ref().quant_spec()), to_string(channel));
    const FakeQuantize activation = qconfig.activation();
    EXPECT_EQ(to_string(activation->observer_ref().quant_spec()),
              to_string(int8_per_tensor_activation_spec()));
  }
  const QuantSpec block = w4a8_qconfig(32).weight()->observer_ref().quant_spec();
  EXPECT_EQ(to_string(block), to_string(int4_per_block_weight_spec(32)));
  EXPECT_EQ(to_string(w4a8_qat_qconfig(16).weight()->observer_ref().quant_spec()),
            to_string(int4_per_block_weight_spec(16)));
  // The QAT preset watches activations as int8_qat_qconfig does, the PTQ one as int8_static.
  EXPECT_EQ(w4a8_qat_qconfig().activation()->observer_ref().describe(),
            int8_qat_qconfig().activation()->observer_ref().describe());
  EXPECT_EQ(w4a8_qconfig().activation()->observer_ref().describe(),
            int8_static_qconfig().activation()->observer_ref().describe());
}

TEST(W4A8QConfig, BadConfigsAreClearErrors) {
  const std::string negative = test::error_message([] { w4a8_qconfig(-1); });
  EXPECT_NE(negative.find("w4a8_qconfig: expected block_size >= 0"), std::string::npos)
      << negative;
  const std::string qat = test::error_message([] { w4a8_qat_qconfig(-4); });
  EXPECT_NE(qat.find("w4a8_qat_qconfig: expected block_size >= 0"), std::string::npos) << qat;

  // A block size that does not divide in_features.
  QuantLinear fc(10, 4);
  fc->set_qconfig(w4a8_qconfig(4));
  fc->set_mode(QuantMode::kObserve);
  EXPECT_THROW(fc(torch::randn({2, 10})), c10::Error);
  const std::string scheme =
      test::error_message([] { QuantLinear(10, 4)->make_converted("w4a8:block=4"); });
  EXPECT_NE(scheme.find("block size 4 does not divide the 10 columns"), std::string::npos)
      << scheme;
  const std::string unknown =
      test::error_message([] { QuantLinear(8, 4)->make_converted("w4a16"); });
  EXPECT_NE(unknown.find("unknown converted scheme 'w4a16'"), std::string::npos) << unknown;
}

TEST(W4A8QConfig, DynamicActivationsWithInt4WeightsStayFakeQuantAndSaySo) {
  QConfig qconfig = int8_dynamic_qconfig();
  qconfig.weight = w4a8_qconfig().weight;
  QuantLinear fc(16, 8);
  fc->set_qconfig(qconfig);
  fc->set_mode(QuantMode::kFakeQuant);
  fc(torch::randn({3, 16}));
  const ConvertResult result = fc->convert();
  EXPECT_FALSE(result.converted);
  EXPECT_NE(result.reason.find("no INT8 GEMM"), std::string::npos) << result.reason;
  EXPECT_EQ(fc->mode(), QuantMode::kFakeQuant);
}

// ---- convert --------------------------------------------------------------------------------

TEST(W4A8Convert, OutputEqualsTheFakeQuantSimulationPerChannelAndPerBlock) {
  struct Case {
    int64_t in, out, block;
    std::vector<int64_t> input_shape;
  };
  // Odd sizes, batch 1, 3-D input; block 0 = one scale per output channel.
  const std::vector<Case> cases = {{17, 5, 0, {3, 7, 17}}, {33, 65, 0, {1, 33}},
                                   {1, 3, 0, {2, 1, 1}},    {34, 13, 17, {2, 5, 34}},
                                   {96, 33, 32, {1, 96}},   {9, 7, 3, {4, 9}}};
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    QuantLinear fc = calibrated_linear(c.in, c.out, w4a8_qconfig(c.block), 10 + i);
    torch::NoGradGuard no_grad;
    const at::Tensor x = torch::randn(c.input_shape);
    const at::Tensor simulated = fc(x);
    const at::Tensor codes = quantize(fc->weight, fc->weight_quantizer->qparams()).to(at::kChar);

    const ConvertResult result = fc->convert();
    ASSERT_TRUE(result.converted) << result.reason;
    const std::string scheme = c.block == 0 ? "w4a8" : "w4a8:block=" + std::to_string(c.block);
    EXPECT_EQ(result.scheme, scheme);
    EXPECT_EQ(fc->converted_scheme(), scheme);
    // Stored packed, two codes per byte; the codes are the simulation's, all in [-7, 7].
    EXPECT_FALSE(fc->weight_int8.defined());
    ASSERT_EQ(fc->weight_int4.scalar_type(), at::kByte);
    EXPECT_EQ(fc->weight_int4.sizes(), at::IntArrayRef({c.out, (c.in + 1) / 2}));
    const at::Tensor stored = unpack_int4(fc->weight_int4, c.in);
    EXPECT_TRUE(torch::equal(stored, codes)) << "case " << i;
    EXPECT_GE(stored.min().item<int>(), -7);
    EXPECT_LE(stored.max().item<int>(), 7);
    EXPECT_EQ(fc->weight_scale.sizes(),
              c.block == 0 ? at::IntArrayRef({c.out}) : at::IntArrayRef({c.out, c.in / c.block}));

    const at::Tensor converted = fc(x);
    ASSERT_EQ(converted.sizes(), simulated.sizes());
    // Same integer codes as the simulation: only float32 rounding of the GEMM epilogue (and, per
    // block, of the sum of the blocks) differs, far below one output step.
    const double steps = error_in_output_steps(converted, simulated);
    EXPECT_LE(steps, 1.0) << "case " << i;
    EXPECT_LE(steps, 0.01) << "case " << i << ": more than float rounding apart";
  }
}

// One int4 scale for the whole weight (a QConfig built from the public pieces, as the BERT
// demo's W4A8 scenario builds it for the FFN up-projections): converts to "w4a8" with the scale
// repeated per output channel, matches the simulation, and survives save / load bit-exactly.
TEST(W4A8Convert, PerTensorInt4WeightConvertsSavesAndLoads) {
  const auto spec = QuantSpec(QuantDtype::kInt4).symmetric(true).narrow_range(true).granularity(
      Granularity::kPerTensor);
  QConfig qconfig = w4a8_qconfig();
  qconfig.weight = fake_quantize_factory(
      FakeQuantizeOptions(observer_factory<MinMaxObserver>(MinMaxObserverOptions(spec))));
  QuantLinear fc = calibrated_linear(21, 9, qconfig, 5);
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({2, 3, 21});
  const at::Tensor simulated = fc(x);
  const double scale = fc->weight_quantizer->qparams().scale.item<double>();
  EXPECT_NEAR(scale, fc->weight.abs().max().item<double>() / 7.0, 1e-7);
  const at::Tensor codes = quantize(fc->weight, fc->weight_quantizer->qparams()).to(at::kChar);

  const ConvertResult result = fc->convert();
  ASSERT_TRUE(result.converted) << result.reason;
  EXPECT_EQ(result.scheme, "w4a8");
  EXPECT_TRUE(torch::equal(unpack_int4(fc->weight_int4, 21), codes));
  ASSERT_EQ(fc->weight_scale.numel(), 9);
  EXPECT_TRUE(torch::allclose(fc->weight_scale, torch::full({9}, scale), 0.0, 0.0));
  const at::Tensor converted = fc(x);
  EXPECT_LE(error_in_output_steps(converted, simulated), 0.01);

  const std::string path = temp_path("w4a8_per_tensor.safetensors");
  save_state(*fc, path);
  QuantLinear fresh(21, 9);
  load_state(*fresh, path);
  EXPECT_EQ(fresh->converted_scheme(), "w4a8");
  EXPECT_TRUE(torch::equal(fresh(x), converted));
  std::remove(path.c_str());
}

TEST(W4A8Convert, QatPresetConvertsToTheSameSchemes) {
  for (int64_t block : {0, 8}) {
    QuantLinear fc = calibrated_linear(24, 12, w4a8_qat_qconfig(block), 40 + block);
    torch::NoGradGuard no_grad;
    const at::Tensor x = torch::randn({5, 24});
    const at::Tensor simulated = fc(x);
    ASSERT_TRUE(fc->convert().converted);
    EXPECT_EQ(fc->converted_scheme(), block == 0 ? "w4a8" : "w4a8:block=8");
    EXPECT_LE(error_in_output_steps(fc(x), simulated), 0.01);
  }
}

TEST(W4A8Convert, ConvertPassReportsTheSchemeAndHowItRuns) {
  TwoLayer model = converted_model(16, 24, 4, w4a8_qconfig(8), 3);
  EXPECT_EQ(model->fc1->converted_scheme(), "w4a8:block=8");
  EXPECT_EQ(model->fc2->converted_scheme(), "w4a8:block=8");
  // Converting again lists both as already converted, with the backend each runs on.
  const ConvertReport again = convert(*model);
  ASSERT_EQ(again.already_converted.size(), 2u) << again;
  EXPECT_EQ(again.already_converted[0].scheme, "w4a8:block=8");
  EXPECT_NE(again.already_converted[0].backend.find("per block of 8 inputs"), std::string::npos)
      << again.already_converted[0].backend;

  TwoLayer per_channel = converted_model(16, 24, 4, w4a8_qconfig(), 4);
  const ConvertReport report = convert(*per_channel);
  ASSERT_EQ(report.already_converted.size(), 2u) << report;
  EXPECT_EQ(report.already_converted[1].scheme, "w4a8");
  EXPECT_NE(report.already_converted[1].backend.find("on the int4 codes"), std::string::npos)
      << report.already_converted[1].backend;
  EXPECT_EQ(report.already_converted[1].backend.find("per block"), std::string::npos);
}

TEST(W4A8Convert, NonFiniteInputRowsGiveNaNRowsAndLeaveTheOthersAlone) {
  for (int64_t block : {0, 16}) {
    QuantLinear fc = calibrated_linear(32, 9, w4a8_qconfig(block), 50 + block);
    ASSERT_TRUE(fc->convert().converted);
    torch::NoGradGuard no_grad;
    const at::Tensor x = torch::randn({2, 4, 32});
    const at::Tensor clean = fc(x);
    at::Tensor bad = x.clone();
    bad[0][1][5] = std::numeric_limits<float>::quiet_NaN();
    bad[1][2][31] = std::numeric_limits<float>::infinity();
    const at::Tensor y = fc(bad);
    EXPECT_TRUE(torch::isnan(y[0][1]).all().item<bool>()) << "block " << block;
    EXPECT_TRUE(torch::isnan(y[1][2]).all().item<bool>()) << "block " << block;
    const at::Tensor keep = torch::ones({2, 4}, at::kBool);
    keep[0][1] = false;
    keep[1][2] = false;
    EXPECT_TRUE(torch::equal(y.index({keep}), clean.index({keep}))) << "block " << block;
  }
}

TEST(W4A8Convert, MakeConvertedBuildsThePackedLayoutAndClonesKeepIt) {
  QuantLinear fc(7, 5);
  fc->make_converted("w4a8");
  EXPECT_EQ(fc->converted_scheme(), "w4a8");
  EXPECT_EQ(fc->weight_int4.sizes(), at::IntArrayRef({5, 4}));
  EXPECT_EQ(fc->weight_scale.sizes(), at::IntArrayRef({5}));
  EXPECT_EQ(fc->input_scale.dim(), 0);
  const auto buffers = fc->named_buffers();
  EXPECT_EQ(buffers.find("weight_int8"), nullptr);

  QuantLinear blocked(8, 3);
  blocked->make_converted("w4a8:block=4");
  EXPECT_EQ(blocked->weight_scale.sizes(), at::IntArrayRef({3, 2}));

  QuantLinear original = calibrated_linear(12, 6, w4a8_qconfig(4), 60);
  ASSERT_TRUE(original->convert().converted);
  auto copy = std::dynamic_pointer_cast<QuantLinearImpl>(original->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_EQ(copy->converted_scheme(), "w4a8:block=4");
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({3, 12});
  EXPECT_TRUE(torch::equal(copy->forward(x), original(x)));
}

// ---- serialization -------------------------------------------------------------------------

TEST(W4A8Serialize, SavedModelLoadsIntoAFreshFloatModelBitExactly) {
  for (int64_t block : {0, 6}) {
    TwoLayer model = converted_model(18, 30, 7, w4a8_qconfig(block), 70 + block);
    const std::string path = temp_path("w4a8_" + std::to_string(block) + ".safetensors");
    save_state(*model, path);
    const SafetensorsFile file = read_safetensors(path);
    ASSERT_EQ(file.tensors.count("fc1.weight_int4"), 1u);
    EXPECT_EQ(file.tensors.count("fc1.weight_int8"), 0u);
    EXPECT_EQ(file.tensors.at("fc1.weight_int4").scalar_type(), at::kByte);
    EXPECT_EQ(file.tensors.at("fc1.weight_int4").sizes(), at::IntArrayRef({30, 9}));

    TwoLayer fresh(18, 30, 7);  // float, other random weights
    load_state(*fresh, path);
    EXPECT_EQ(fresh->fc1->converted_scheme(), model->fc1->converted_scheme());
    torch::NoGradGuard no_grad;
    const at::Tensor x = torch::randn({3, 4, 18});
    EXPECT_TRUE(torch::equal(fresh(x), model(x))) << "block " << block;
    std::remove(path.c_str());
  }
}

TEST(W4A8Serialize, FileIsAboutHalfTheInt8FileOfTheSameModel) {
  // BERT-base-like FFN of MiniLM's width: 384 -> 1536 -> 384.
  const std::string int8_path = temp_path("ffn_int8.safetensors");
  const std::string w4a8_path = temp_path("ffn_w4a8.safetensors");
  save_state(*converted_model(384, 1536, 384, int8_static_qconfig(), 5), int8_path);
  save_state(*converted_model(384, 1536, 384, w4a8_qconfig(), 5), w4a8_path);
  const double ratio =
      static_cast<double>(file_size(w4a8_path)) / static_cast<double>(file_size(int8_path));
  // Codes halve (2 * 384 * 1536 bytes -> half); scales, biases and the header stay.
  EXPECT_GT(ratio, 0.45);
  EXPECT_LT(ratio, 0.55);
  std::remove(int8_path.c_str());
  std::remove(w4a8_path.c_str());
}
