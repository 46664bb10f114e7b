// SmoothQuant (tquant/smooth_quant.h): factors against NVIDIA ModelOpt, exactness in float,
// lower W8A8 error on outlier channels, and the factors surviving convert, save / load, clone.

#include "tquant/smooth_quant.h"

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tquant/gemm.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/qconfig.h"
#include "tquant/qconfig_mapping.h"
#include "tquant/quantize.h"
#include "tquant/safetensors.h"
#include "tquant/serialize.h"
#include "cuda_test_util.h"
#include "test_util.h"

namespace {

using tquant::QuantLinear;
using tquant::QuantMode;
using tquant::SmoothQuantOptions;

// ModelOpt computes 1 / s in float32 (two pow and a division: about 3 ulp); tquant computes s in
// float64 and rounds once; the test inverts ModelOpt's value in float64. 8 float32 ulp (2^-20
// relative) covers that with margin; a wrong formula or guard is off by far more.
constexpr double kGoldenRelTol = 1.0 / (1 << 20);
// Float equivalence of x W^T with (x / s)(W s)^T: one extra float32 rounding on each operand,
// summed over K products: a few ulp of max |y|.
constexpr double kFloatRelTol = 1e-5;

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "smooth_quant_test_" + name + ".safetensors";
}

at::Tensor max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max();
}

// Activations with a few outlier input channels (as BERT's channels 308 and 381), odd sizes.
at::Tensor outlier_input(int64_t rows, int64_t k, uint64_t seed) {
  torch::manual_seed(seed);
  at::Tensor x = torch::randn({rows, k});
  for (int64_t channel : {int64_t{2}, int64_t{9}, k - 3}) x.select(1, channel).mul_(50.0);
  return x;
}

QuantLinear linear_from(const at::Tensor& weight, const at::Tensor& bias) {
  QuantLinear fc(weight.size(1), weight.size(0));
  fc->weight.set_data(weight.clone());
  fc->bias.set_data(bias.clone());
  return fc;
}

TEST(SmoothQuantFactors, MatchModelOptOnTheGoldenLinear) {
  const auto file =
      tquant::read_safetensors(std::string(TQUANT_GOLDEN_DIR) + "/smoothquant.safetensors");
  const auto& t = file.tensors;
  std::vector<at::Tensor> batches = {t.at("batch.0"), t.at("batch.1"), t.at("batch.2")};
  for (const char* alpha_text : {"0.5", "0.8"}) {
    const double alpha = std::stod(alpha_text);
    torch::nn::Sequential net(linear_from(t.at("weight"), t.at("bias")));
    tquant::prepare(*net, tquant::QConfigMapping(tquant::int8_static_qconfig()));
    torch::NoGradGuard no_grad;
    const auto report = tquant::smooth_quant(
        *net, [&] { for (const auto& x : batches) net->forward(x); },
        SmoothQuantOptions().alpha(alpha));
    ASSERT_EQ(report.layers.size(), 1u) << report;
    const auto& layer = report.layers[0];
    // max |x| per channel is a plain reduction: exactly ModelOpt's.
    EXPECT_TRUE(layer.act_amax.equal(t.at("act_amax"))) << alpha_text;
    const at::Tensor expected = 1.0 / t.at(std::string("pre_quant_scale.") + alpha_text)
                                          .to(at::kDouble);
    const double rel =
        ((layer.factor.to(at::kDouble) - expected).abs() / expected).max().item<double>();
    std::printf("[ golden   ] alpha %s: max relative difference to ModelOpt %.3g\n", alpha_text,
                rel);
    EXPECT_LE(rel, kGoldenRelTol) << alpha_text;
    // The fixture hits both ends of the clamp (channel 7 tiny activations, column 11 tiny
    // weights), so the guard is compared too.
    EXPECT_TRUE(layer.factor.eq(1e4f).any().item<bool>() ||
                layer.factor.eq(1e-4f).any().item<bool>());
    // The module holds the same factors.
    auto* fc = net[0]->as<tquant::QuantLinearImpl>();
    EXPECT_TRUE(fc->get_smooth_factor().equal(layer.factor));
  }
}

TEST(SmoothQuantFactors, ZeroChannelsGiveFiniteFactors) {
  const at::Tensor a = torch::tensor({0.0f, 4.0f, 0.0f, 9.0f, 1e-12f});
  const at::Tensor w = torch::tensor({1.0f, 0.0f, 0.0f, 4.0f, 1.0f});
  const at::Tensor s = tquant::smooth_quant_factors(a, w, 0.5);
  // No activation: 1 (also with a zero weight column, where 0 / 0 would arise); a zero weight
  // column: the clamp's upper end; an activation below 2^-31: 1.
  EXPECT_TRUE(s.equal(torch::tensor({1.0f, 1e4f, 1.0f, 1.5f, 1.0f}))) << s;
  const at::Tensor s1 = tquant::smooth_quant_factors(a, w, 1.0);  // s = max |x|
  EXPECT_FLOAT_EQ(s1[1].item<float>(), 4.0f);
  const at::Tensor s0 = tquant::smooth_quant_factors(a, w, 0.0);  // s = 1 / max |W|
  EXPECT_FLOAT_EQ(s0[3].item<float>(), 0.25f);
  EXPECT_TRUE(at::isfinite(s0).all().item<bool>());
}

TEST(SmoothQuantFactors, RejectsNonFiniteStatisticsAndBadAlpha) {
  const at::Tensor w = torch::ones({3});
  const std::string nan_error = tquant::test::error_message([&] {
    tquant::smooth_quant_factors(torch::tensor({1.0f, NAN, 2.0f}), w, 0.5);
  });
  EXPECT_NE(nan_error.find("max |x|"), std::string::npos) << nan_error;
  EXPECT_NE(nan_error.find("channel 1"), std::string::npos) << nan_error;
  const std::string inf_error = tquant::test::error_message([&] {
    tquant::smooth_quant_factors(torch::ones({3}), torch::tensor({1.0f, 1.0f, INFINITY}), 0.5);
  });
  EXPECT_NE(inf_error.find("channel 2"), std::string::npos) << inf_error;
  const std::string alpha_error = tquant::test::error_message(
      [&] { tquant::smooth_quant_factors(torch::ones({3}), w, 1.5); });
  EXPECT_NE(alpha_error.find("alpha in [0, 1], got 1.5"), std::string::npos) << alpha_error;
}

TEST(SmoothQuantGemm, MultiplierInTheQuantizePassEqualsMultiplyingFirst) {
  // The fused multiplier computes x[m, k] * mult[k] in float32 before the scale, exactly what
  // multiplying x first does: bit-identical on every path and in the reference twins.
  torch::manual_seed(61);
  const at::Tensor x = outlier_input(33, 65, 62).reshape({3, 11, 65});
  const at::Tensor mult = torch::rand({65}) * 4 + 0.01;
  const at::Tensor bias = torch::randn({17});
  for (auto path : tquant::int8_gemm_exact_paths()) {
    const tquant::Int8Weight w = tquant::prepare_int8_weight(torch::randn({17, 65}), path);
    const at::Tensor xm = x * mult;
    EXPECT_TRUE(tquant::int8_linear_static(x, 0.37, w, bias, mult)
                    .equal(tquant::int8_linear_static(xm, 0.37, w, bias)));
    EXPECT_TRUE(tquant::int8_linear_dynamic(x, w, bias, mult)
                    .equal(tquant::int8_linear_dynamic(xm, w, bias)));
    EXPECT_TRUE(tquant::int8_linear_static_ref(x, 0.37, w, bias, mult)
                    .equal(tquant::int8_linear_static_ref(xm, 0.37, w, bias)));
    EXPECT_TRUE(tquant::int8_linear_dynamic_ref(x, w, bias, mult)
                    .equal(tquant::int8_linear_dynamic_ref(xm, w, bias)));
  }
  const tquant::Int8Weight w = tquant::prepare_int8_weight(torch::randn({17, 65}));
  const std::string error = tquant::test::error_message(
      [&] { tquant::int8_linear_static(x, 0.37, w, bias, torch::ones({64})); });
  EXPECT_NE(error.find("input_multiplier of float32 [65]"), std::string::npos) << error;
}

TEST(SmoothQuant, SmoothedFloatProductEqualsTheUnsmoothedOne) {
  torch::manual_seed(3);
  QuantLinear fc(33, 17);
  fc->set_qconfig(tquant::int8_static_qconfig());
  const at::Tensor x = outlier_input(65, 33, 4);
  torch::NoGradGuard no_grad;
  const at::Tensor reference = torch::nn::functional::linear(x, fc->weight, fc->bias);
  fc->set_smooth_factor(torch::rand({33}) * 20 + 0.05);
  fc->set_mode(QuantMode::kObserve);  // quantizers pass x / s and W * s through unchanged
  const at::Tensor smoothed = fc(x);
  const double tol = kFloatRelTol * reference.abs().max().item<double>();
  EXPECT_LE(max_abs_diff(smoothed, reference).item<double>(), tol);
  EXPECT_FALSE(smoothed.equal(reference));  // it did go through x / s and W * s
  fc->set_mode(QuantMode::kFloat);  // float mode ignores the factors
  EXPECT_TRUE(fc(x).equal(reference));
}

// W8A8 fake-quant error of a 65 -> 17 Linear on inputs with three outlier channels (x 50).
double w8a8_error(bool smooth, double alpha) {
  torch::manual_seed(11);
  torch::nn::Sequential net(QuantLinear(65, 17));
  const at::Tensor calib = outlier_input(257, 65, 12);
  const at::Tensor test = outlier_input(129, 65, 13);
  torch::NoGradGuard no_grad;
  const at::Tensor reference = net->forward(test);
  tquant::prepare(*net, tquant::QConfigMapping(tquant::int8_static_qconfig()));
  auto loop = [&] { net->forward(calib); };
  if (smooth) tquant::smooth_quant(*net, loop, SmoothQuantOptions().alpha(alpha));
  tquant::calibrate(*net, loop);
  return (net->forward(test) - reference).square().mean().item<double>();
}

TEST(SmoothQuant, LowersW8A8ErrorOnOutlierChannels) {
  const double plain = w8a8_error(false, 0.0);
  const double smoothed = w8a8_error(true, 0.5);
  std::printf("[ w8a8     ] MSE vs float: plain %.4g, SmoothQuant alpha 0.5 %.4g (%.1fx lower)\n",
              plain, smoothed, plain / smoothed);
  // The outliers set the per-tensor activation scale 50x too coarse for the other channels;
  // dividing them by s_j ~ sqrt(50) gives much of that back.
  EXPECT_LT(smoothed * 4, plain);
}

TEST(SmoothQuant, AlphaSearchKeepsTheLowestMetricPerLayer) {
  torch::manual_seed(5);
  torch::nn::Sequential net(QuantLinear(33, 17), QuantLinear(17, 3));
  tquant::prepare(*net, tquant::QConfigMapping(tquant::int8_static_qconfig()));
  const at::Tensor calib = outlier_input(100, 33, 6);
  std::vector<std::string> seen;
  int64_t rows = 0;
  auto metric = [&](const tquant::SmoothQuantTrial& trial) {
    seen.push_back(trial.name + "@" + std::to_string(trial.alpha));
    rows = trial.input.size(0);
    EXPECT_EQ(trial.reference.sizes(), trial.output.sizes());
    EXPECT_FALSE(trial.output.equal(trial.reference));  // fake-quantized
    // Layer "0" prefers alpha 0.7, layer "1" alpha 0.3.
    return std::abs(trial.alpha - (trial.name == "0" ? 0.7 : 0.3));
  };
  torch::NoGradGuard no_grad;
  torch::manual_seed(8);
  const at::Tensor expected_draw = torch::rand({4});
  torch::manual_seed(8);
  const auto report = tquant::smooth_quant(
      *net, [&] { net->forward(calib.narrow(0, 0, 60)); net->forward(calib.narrow(0, 60, 40)); },
      SmoothQuantOptions().alphas({0.3, 0.5, 0.7}).metric(metric).search_rows(77));
  EXPECT_TRUE(torch::rand({4}).equal(expected_draw));  // the search drew no random numbers
  ASSERT_EQ(report.layers.size(), 2u);
  EXPECT_EQ(seen.size(), 6u);
  EXPECT_EQ(rows, 77);  // the first 77 of the 100 rows each layer saw
  EXPECT_DOUBLE_EQ(report.layers[0].alpha, 0.7);
  EXPECT_DOUBLE_EQ(report.layers[1].alpha, 0.3);
  EXPECT_EQ(report.layers[0].losses.size(), 3u);
  // Smoothed layers wait in observe mode for calibrate.
  EXPECT_EQ(net[0]->as<QuantLinear>()->mode(), QuantMode::kObserve);

  // The default metric (MSE against float) gives finite losses; on_progress sees each layer.
  std::vector<std::pair<int64_t, int64_t>> progress;
  const auto mse = tquant::smooth_quant(
      *net, [&] { net->forward(calib); },
      SmoothQuantOptions().alphas({0.0, 0.5, 0.9}).on_progress([&](int64_t done, int64_t total) {
        progress.emplace_back(done, total);
      }));
  EXPECT_EQ(progress, (std::vector<std::pair<int64_t, int64_t>>{{1, 2}, {2, 2}}));
  for (const auto& layer : mse.layers) {
    for (const auto& [alpha, loss] : layer.losses) EXPECT_TRUE(std::isfinite(loss)) << alpha;
  }
}

// A post-LayerNorm block as in BERT: the LayerNorm output feeds the Linear and the residual.
struct PostLnBlockImpl : torch::nn::Module {
  PostLnBlockImpl() {
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({33})));
    fc = register_module("fc", QuantLinear(33, 33));
    head = register_module("head", torch::nn::Sequential(torch::nn::Linear(33, 17)));
  }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor h = norm(x);
    return head->forward(h + fc(h));
  }
  torch::nn::LayerNorm norm{nullptr};
  QuantLinear fc{nullptr};
  torch::nn::Sequential head{nullptr};
};
TORCH_MODULE(PostLnBlock);

// Prepared, smoothed and calibrated block (int8_static unless another QConfig is given).
PostLnBlock smoothed_block(const at::Tensor& calib,
                           const tquant::QConfig& qconfig = tquant::int8_static_qconfig()) {
  torch::manual_seed(21);
  PostLnBlock block;
  {
    torch::NoGradGuard no_grad;  // LayerNorm outputs with outlier channels
    block->norm->weight.copy_(torch::ones({33}) + outlier_input(1, 33, 22).reshape({33}) * 0.2);
  }
  tquant::prepare(*block, tquant::QConfigMapping(qconfig));
  torch::NoGradGuard no_grad;
  auto loop = [&] { block->forward(calib); };
  tquant::smooth_quant(*block, loop);
  tquant::calibrate(*block, loop);
  return block;
}

TEST(SmoothQuant, ConvertedRunsTheSmoothedCodesLikeFakeQuant) {
  const at::Tensor calib = outlier_input(97, 33, 31);
  const at::Tensor x = outlier_input(17, 33, 32);
  const std::vector<std::pair<std::string, tquant::QConfig>> configs = {
      {"int8_static", tquant::int8_static_qconfig()},
      {"int8_dynamic", tquant::int8_dynamic_qconfig()},
      {"w4a8", tquant::w4a8_qconfig()},
      {"w4a8:block=11", tquant::w4a8_qconfig(11)}};
  for (const auto& [scheme, qconfig] : configs) {
    PostLnBlock block = smoothed_block(calib, qconfig);
    torch::NoGradGuard no_grad;
    const at::Tensor gamma = block->norm->weight.clone();
    const at::Tensor fake = block->forward(x);
    tquant::convert(*block);
    ASSERT_EQ(block->fc->converted_scheme(), scheme);
    EXPECT_TRUE(block->norm->weight.equal(gamma));  // the LayerNorm is not touched
    const at::Tensor converted = block->forward(x);
    // Same integer codes; only the float32 rounding of the GEMM epilogue differs.
    EXPECT_LE(max_abs_diff(converted, fake).item<double>(),
              1e-4 * fake.abs().max().item<double>())
        << scheme;
  }
}

TEST(SmoothQuant, ConvertedFileLoadsIntoAFreshFloatModelBitIdentically) {
  const at::Tensor calib = outlier_input(97, 33, 41);
  const at::Tensor x = outlier_input(19, 33, 42);
  PostLnBlock block = smoothed_block(calib);
  torch::NoGradGuard no_grad;
  const std::string calibrated_path = temp_path("calibrated");
  tquant::save_state(*block, calibrated_path);
  const at::Tensor fake = block->forward(x);
  tquant::convert(*block);
  const at::Tensor converted = block->forward(x);
  const std::string converted_path = temp_path("converted");
  tquant::save_state(*block, converted_path);

  PostLnBlock fresh;  // float: no quantizers, no smoothing, plain Linear in "head"
  EXPECT_FALSE(fresh->fc->get_smooth_factor().defined());
  tquant::load_state(*fresh, converted_path);
  EXPECT_TRUE(fresh->fc->get_smooth_factor().equal(block->fc->get_smooth_factor()));
  EXPECT_TRUE(fresh->forward(x).equal(converted));

  PostLnBlock fresh_calibrated;
  tquant::load_state(*fresh_calibrated, calibrated_path);
  EXPECT_EQ(fresh_calibrated->fc->mode(), QuantMode::kFakeQuant);
  EXPECT_TRUE(fresh_calibrated->forward(x).equal(fake));

  // A model converted without smoothing cannot take the smoothed file (its codes hold W, not
  // W * s): refused, model unchanged.
  torch::manual_seed(43);
  PostLnBlock other;
  tquant::prepare(*other, tquant::QConfigMapping(tquant::int8_static_qconfig()));
  tquant::calibrate(*other, [&] { other->forward(calib); });
  tquant::convert(*other);
  const std::string refused =
      tquant::test::error_message([&] { tquant::load_state(*other, converted_path); });
  EXPECT_NE(refused.find("cannot set SmoothQuant factors of a converted module"),
            std::string::npos)
      << refused;
  EXPECT_FALSE(other->fc->get_smooth_factor().defined());
  std::remove(calibrated_path.c_str());
  std::remove(converted_path.c_str());
}

TEST(SmoothQuant, FactorsLiveInOneBufferThatCloneCarries) {
  torch::manual_seed(51);
  QuantLinear plain(17, 5);
  for (const auto& item : plain->named_buffers()) ADD_FAILURE() << item.key();  // Linear's state

  const at::Tensor calib = outlier_input(40, 33, 52);
  const at::Tensor x = outlier_input(9, 33, 53);
  PostLnBlock block = smoothed_block(calib);
  const auto buffers = block->fc->named_buffers(/*recurse=*/false);
  ASSERT_TRUE(buffers.contains("smooth_factor"));
  EXPECT_TRUE(buffers["smooth_factor"].equal(block->fc->smooth_factor));
  torch::NoGradGuard no_grad;
  for (int round = 0; round < 2; ++round) {  // fake-quant, then converted
    auto copy = std::dynamic_pointer_cast<tquant::QuantLinearImpl>(block->fc->clone());
    ASSERT_TRUE(copy->get_smooth_factor().equal(block->fc->get_smooth_factor()));
    EXPECT_NE(copy->get_smooth_factor().data_ptr(), block->fc->get_smooth_factor().data_ptr());
    const at::Tensor h = block->norm(x);
    EXPECT_TRUE(copy->forward(h).equal(block->fc(h))) << "round " << round;
    tquant::convert(*block);
  }
}

TEST(SmoothQuant, ConvertedOnGpuMatchesCpu_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  // N = 20: the fused cuBLASLt kernels; N = 17: their ATen twin. x * (1 / s) runs before them.
  const at::Tensor calib = outlier_input(97, 65, 71);
  const at::Tensor x = outlier_input(23, 65, 72);
  for (int64_t n : {int64_t{20}, int64_t{17}}) {
    for (const auto& qconfig : {tquant::int8_static_qconfig(), tquant::int8_dynamic_qconfig()}) {
      torch::manual_seed(73);
      torch::nn::Sequential net(QuantLinear(65, n));
      tquant::prepare(*net, tquant::QConfigMapping(qconfig));
      torch::NoGradGuard no_grad;
      auto loop = [&] { net->forward(calib); };
      tquant::smooth_quant(*net, loop);
      tquant::calibrate(*net, loop);
      tquant::convert(*net);
      auto gpu = std::dynamic_pointer_cast<tquant::QuantLinearImpl>(net[0]->clone());
      gpu->to(at::Device(at::kCUDA, 0));
      ASSERT_TRUE(gpu->get_smooth_factor().is_cuda());
      const at::Tensor y_cpu = net->forward(x);
      const at::Tensor y_gpu = gpu->forward(x.to(at::kCUDA)).cpu();
      EXPECT_LE(max_abs_diff(y_gpu, y_cpu).item<double>(), 1e-4 * y_cpu.abs().max().item<double>())
          << "N = " << n;
    }
  }
}

TEST(SmoothQuant, ErrorsNameWhatIsWrong) {
  torch::nn::Sequential unprepared(QuantLinear(4, 2));
  const std::string none = tquant::test::error_message(
      [&] { tquant::smooth_quant(*unprepared, [] {}); });
  EXPECT_NE(none.find("call tquant::prepare first"), std::string::npos) << none;

  torch::nn::Sequential net(QuantLinear(4, 2));
  tquant::prepare(*net, tquant::QConfigMapping(tquant::int8_static_qconfig()));
  torch::NoGradGuard no_grad;
  at::Tensor bad = torch::ones({3, 4});
  bad[1][2] = NAN;
  const std::string nan = tquant::test::error_message(
      [&] { tquant::smooth_quant(*net, [&] { net->forward(bad); }); });
  EXPECT_EQ(nan.rfind("0: SmoothQuant statistics of its input: expected finite values", 0), 0u)
      << nan;
  EXPECT_NE(nan.find("expected finite values"), std::string::npos) << nan;
  EXPECT_EQ(net[0]->as<QuantLinear>()->mode(), QuantMode::kObserve);  // restored

  const auto ignored = tquant::smooth_quant(
      *net, [&] { net->forward(bad); },
      SmoothQuantOptions().non_finite(tquant::NonFinitePolicy::kIgnore));
  ASSERT_EQ(ignored.layers.size(), 1u);
  EXPECT_TRUE(at::isfinite(ignored.layers[0].factor).all().item<bool>());

  auto* fc = net[0]->as<QuantLinear>();
  const std::string shape = tquant::test::error_message([&] { fc->set_smooth_factor(torch::ones({5})); });
  EXPECT_NE(shape.find("of shape [4]"), std::string::npos) << shape;
  const std::string negative =
      tquant::test::error_message([&] { fc->set_smooth_factor(-torch::ones({4})); });
  EXPECT_NE(negative.find("finite SmoothQuant factors > 0"), std::string::npos) << negative;
  const std::string remove = tquant::test::error_message([&] { fc->set_smooth_factor({}); });
  EXPECT_NE(remove.find("factors of ones"), std::string::npos) << remove;
}

}  // namespace
