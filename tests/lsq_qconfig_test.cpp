#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tquant/fake_quantize.h"
#include "tquant/nn/quant_conv2d.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/nn/quant_matmul.h"
#include "tquant/qconfig.h"
#include "tquant/quantize.h"
#include "tquant/serialize.h"
#include "test_util.h"

// Learned scales (LSQ) through a QConfig: FakeQuantizeOptions::learnable and the
// int8_learnable_qat_qconfig / w4a8_learnable_qat_qconfig presets, end to end through the passes.

using namespace tquant;

namespace {

constexpr int64_t kIn = 17;
constexpr int64_t kOut = 5;
constexpr int64_t kInt8Max = 127;

struct NetImpl : torch::nn::Module {
  NetImpl() { fc = register_module("fc", QuantLinear(kIn, kOut)); }
  at::Tensor forward(const at::Tensor& x) { return fc(x); }
  QuantLinear fc{nullptr};
};
TORCH_MODULE(Net);

/// Every parameter and buffer by name (what save_state writes).
std::map<std::string, at::Tensor> tensors_of(const torch::nn::Module& model) {
  std::map<std::string, at::Tensor> result;
  for (const auto& item : model.named_parameters()) result[item.key()] = item.value();
  for (const auto& item : model.named_buffers()) result[item.key()] = item.value();
  return result;
}

bool is_parameter(const torch::nn::Module& model, const at::Tensor& tensor) {
  for (const auto& p : model.parameters()) {
    if (p.unsafeGetTensorImpl() == tensor.unsafeGetTensorImpl()) return true;
  }
  return false;
}

/// A net prepared with `qconfig` and calibrated on `batches`.
Net calibrated_net(const QConfig& qconfig, const at::Tensor& data) {
  Net net;
  prepare_qat(*net, QConfigMapping(qconfig));
  calibrate(*net, [&] {
    torch::NoGradGuard no_grad;
    net->forward(data);
  });
  return net;
}

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "/" + name; }

}  // namespace

TEST(LsqQConfig, ScalesAreParametersUnderTheFixedPresetsNamesAndShapes) {
  torch::manual_seed(1);
  const at::Tensor data = torch::randn({9, kIn});
  Net lsq = calibrated_net(int8_learnable_qat_qconfig(), data);
  Net fixed = calibrated_net(int8_qat_qconfig(), data);
  const auto lsq_tensors = tensors_of(*lsq);
  const auto fixed_tensors = tensors_of(*fixed);
  std::set<std::string> lsq_names;
  std::set<std::string> fixed_names;
  for (const auto& [name, t] : lsq_tensors) lsq_names.insert(name);
  for (const auto& [name, t] : fixed_tensors) fixed_names.insert(name);
  EXPECT_EQ(lsq_names, fixed_names);
  for (const auto& [name, t] : lsq_tensors) {
    const auto& other = fixed_tensors.at(name);
    EXPECT_EQ(t.sizes(), other.sizes()) << name;
    EXPECT_EQ(t.scalar_type(), other.scalar_type()) << name;
  }
  EXPECT_TRUE(is_parameter(*lsq, lsq->fc->input_quantizer->scale));
  EXPECT_TRUE(is_parameter(*lsq, lsq->fc->weight_quantizer->scale));
  EXPECT_FALSE(is_parameter(*lsq, lsq->fc->weight_quantizer->zero_point));
  EXPECT_FALSE(is_parameter(*fixed, fixed->fc->input_quantizer->scale));
  EXPECT_EQ(lsq->parameters().size(), fixed->parameters().size() + 2);
}

TEST(LsqQConfig, CalibrationInitializesScalesFromMinMaxAndFreezesTheObservers) {
  torch::manual_seed(2);
  const at::Tensor data = torch::randn({33, kIn}) * 3;
  Net net = calibrated_net(int8_learnable_qat_qconfig(), data);
  auto& fc = net->fc;
  EXPECT_FALSE(fc->input_quantizer->observer_enabled());
  EXPECT_FALSE(fc->weight_quantizer->observer_enabled());
  const float amax = data.abs().max().item<float>();
  EXPECT_FLOAT_EQ(fc->input_quantizer->scale.item<float>(), amax / kInt8Max);
  const at::Tensor channel_amax = std::get<0>(fc->weight.detach().abs().max(1));
  EXPECT_TRUE(torch::allclose(fc->weight_quantizer->scale.detach(), channel_amax / kInt8Max,
                              1e-6, 0));
}

TEST(LsqQConfig, ScaleGradientsEqualLibTorchLearnableFakeQuantOps) {
  torch::manual_seed(3);
  const QConfig qconfig = int8_learnable_qat_qconfig();
  // Per tensor (the activation quantizer).
  {
    FakeQuantize fq = qconfig.activation();
    const at::Tensor x = torch::randn({7, 33}) * 2;
    fq(x);  // observer on: initializes the scale
    fq->enable_observer(false);
    const at::Tensor upstream = torch::randn({7, 33});
    const at::Tensor xg = x.clone().requires_grad_(true);
    const at::Tensor y = fq(xg);
    (y * upstream).sum().backward();

    const at::Tensor x_ref = x.clone().requires_grad_(true);
    const at::Tensor s_ref = fq->scale.detach().reshape({1}).clone().requires_grad_(true);
    const at::Tensor y_ref = torch::_fake_quantize_learnable_per_tensor_affine(
        x_ref, s_ref, torch::zeros({1}), -kInt8Max, kInt8Max,
        1.0 / std::sqrt(static_cast<double>(x.numel()) * kInt8Max));
    (y_ref * upstream).sum().backward();
    EXPECT_TRUE(torch::equal(y, y_ref));
    EXPECT_TRUE(torch::equal(xg.grad(), x_ref.grad()));
    EXPECT_TRUE(torch::equal(fq->scale.grad().reshape({1}), s_ref.grad()));
    EXPECT_NE(s_ref.grad().item<float>(), 0.0f);
  }
  // Per channel (the weight quantizer, axis 0).
  {
    FakeQuantize fq = qconfig.weight();
    const at::Tensor w = torch::randn({kOut, kIn});
    fq(w);
    fq->enable_observer(false);
    const at::Tensor upstream = torch::randn({kOut, kIn});
    const at::Tensor wg = w.clone().requires_grad_(true);
    const at::Tensor y = fq(wg);
    (y * upstream).sum().backward();

    const at::Tensor w_ref = w.clone().requires_grad_(true);
    const at::Tensor s_ref = fq->scale.detach().clone().requires_grad_(true);
    const at::Tensor y_ref = torch::_fake_quantize_learnable_per_channel_affine(
        w_ref, s_ref, torch::zeros({kOut}), 0, -kInt8Max, kInt8Max,
        1.0 / std::sqrt(static_cast<double>(w.numel()) * kInt8Max));
    (y_ref * upstream).sum().backward();
    EXPECT_TRUE(torch::equal(y, y_ref));
    EXPECT_TRUE(torch::equal(wg.grad(), w_ref.grad()));
    EXPECT_TRUE(torch::equal(fq->scale.grad(), s_ref.grad()));
    EXPECT_GT(s_ref.grad().abs().sum().item<float>(), 0.0f);
  }
}

TEST(LsqQConfig, TrainingOnlyTheScalesRepairsACoarseCalibration) {
  torch::manual_seed(4);
  const at::Tensor x = torch::randn({256, kIn});
  // One outlier in the calibration data: the min-max input scale is about 28x too coarse (120 / max|x| = 120 / 4.2).
  at::Tensor calibration = x.clone();
  calibration[0][0] = 120.0;
  Net net = calibrated_net(int8_learnable_qat_qconfig(), calibration);
  const at::Tensor target = torch::nn::functional::linear(x, net->fc->weight.detach(),
                                                          net->fc->bias.detach());
  const at::Tensor initial_scale = net->fc->input_quantizer->scale.detach().clone();
  torch::optim::AdamW optimizer(std::vector<at::Tensor>{net->fc->input_quantizer->scale},
                                torch::optim::AdamWOptions(1e-2).weight_decay(0));
  const auto loss_now = [&] { return torch::mse_loss(net->forward(x), target); };
  const double initial = loss_now().item<double>();
  for (int step = 0; step < 300; ++step) {
    optimizer.zero_grad();
    loss_now().backward();
    optimizer.step();
  }
  const double final_loss = loss_now().item<double>();
  // Reference: the same weights calibrated on the clean data (min-max, no outlier).
  Net clean;
  {
    torch::NoGradGuard no_grad;
    clean->fc->weight.copy_(net->fc->weight);
    clean->fc->bias.copy_(net->fc->bias);
  }
  prepare_qat(*clean, QConfigMapping(int8_learnable_qat_qconfig()));
  calibrate(*clean, [&] {
    torch::NoGradGuard no_grad;
    clean->forward(x);
  });
  const double clean_loss = torch::mse_loss(clean->forward(x), target).item<double>();
  // The learned scale reaches what a clean calibration gives (LSQ minimizes this loss itself).
  EXPECT_LE(final_loss, clean_loss) << "initial " << initial << ", final " << final_loss
                                    << ", clean calibration " << clean_loss;
  EXPECT_LT(net->fc->input_quantizer->scale.item<float>(), 0.25f * initial_scale.item<float>());
}

TEST(LsqQConfig, AdamWOverParametersTrainsScalesAndConvertUsesThem) {
  torch::manual_seed(5);
  const at::Tensor x = torch::randn({128, kIn});
  const at::Tensor teacher = torch::randn({kOut, kIn}) * 0.5;
  const at::Tensor target = x.matmul(teacher.t());
  Net net = calibrated_net(int8_learnable_qat_qconfig(), x);
  auto& fc = net->fc;
  const at::Tensor input_scale0 = fc->input_quantizer->scale.detach().clone();
  const at::Tensor weight_scale0 = fc->weight_quantizer->scale.detach().clone();
  // As docs/qat.md: the scales in their own group, with a small step and no weight decay.
  std::vector<at::Tensor> scales;
  std::vector<at::Tensor> others;
  for (const auto& p : net->named_parameters()) {
    const bool is_scale = p.key().find("_quantizer.") != std::string::npos;
    (is_scale ? scales : others).push_back(p.value());
  }
  ASSERT_EQ(scales.size(), 2u);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(others);
  groups.emplace_back(scales, std::make_unique<torch::optim::AdamWOptions>(
                                  torch::optim::AdamWOptions(1e-4).weight_decay(0)));
  torch::optim::AdamW optimizer(groups, torch::optim::AdamWOptions(1e-2));
  const auto loss_now = [&] { return torch::mse_loss(net->forward(x), target); };
  const double initial = loss_now().item<double>();
  for (int step = 0; step < 100; ++step) {
    optimizer.zero_grad();
    loss_now().backward();
    ASSERT_TRUE(fc->input_quantizer->scale.grad().defined());
    optimizer.step();
  }
  const double final_loss = loss_now().item<double>();
  EXPECT_LT(final_loss, 0.2 * initial) << "initial " << initial << ", final " << final_loss;
  EXPECT_FALSE(torch::equal(fc->input_quantizer->scale.detach(), input_scale0));
  EXPECT_FALSE(torch::equal(fc->weight_quantizer->scale.detach(), weight_scale0));

  // Mode switches and update_qparams keep the learned values (the observers are off).
  const at::Tensor learned_input = fc->input_quantizer->scale.detach().clone();
  const at::Tensor learned_weight = fc->weight_quantizer->scale.detach().clone();
  fc->set_mode(QuantMode::kFakeQuant);
  EXPECT_TRUE(torch::equal(fc->input_quantizer->update_qparams().scale, learned_input));
  EXPECT_TRUE(torch::equal(fc->weight_quantizer->scale.detach(), learned_weight));

  torch::NoGradGuard no_grad;
  const at::Tensor probe = torch::randn({13, kIn});
  const at::Tensor simulated = net->forward(probe);
  const ConvertReport report = convert(*net);
  ASSERT_EQ(report.converted.size(), 1u) << report;
  EXPECT_EQ(fc->converted_scheme(), "int8_static");
  EXPECT_TRUE(torch::equal(fc->weight_scale, learned_weight));
  EXPECT_TRUE(torch::equal(fc->input_scale.reshape({}), learned_input.reshape({})));
  const at::Tensor converted = net->forward(probe);
  const double step = simulated.abs().max().item<double>() / kInt8Max;
  EXPECT_LE((converted - simulated).abs().max().item<double>(), step);
}

TEST(LsqQConfig, SaveLoadRoundTripIsBitExactAndKeepsScalesLearnable) {
  torch::manual_seed(6);
  const at::Tensor x = torch::randn({31, kIn});
  Net saved = calibrated_net(int8_learnable_qat_qconfig(), x);
  torch::optim::AdamW optimizer(saved->parameters(), torch::optim::AdamWOptions(1e-2));
  for (int step = 0; step < 5; ++step) {
    optimizer.zero_grad();
    saved->forward(x).pow(2).mean().backward();
    optimizer.step();
  }
  const auto path = temp_path("lsq_trained.safetensors");
  save_state(*saved, path);
  Net loaded;  // fresh float model: the quantizers come from the file's recipes
  load_state(*loaded, path);
  ASSERT_TRUE(loaded->fc->input_quantizer->is_learnable());
  EXPECT_TRUE(is_parameter(*loaded, loaded->fc->input_quantizer->scale));
  EXPECT_TRUE(is_parameter(*loaded, loaded->fc->weight_quantizer->scale));
  const auto a = tensors_of(*saved);
  const auto b = tensors_of(*loaded);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_EQ(b.count(name), 1u) << name;
    EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  }
  torch::NoGradGuard no_grad;
  const at::Tensor probe = torch::randn({3, kIn});
  EXPECT_TRUE(torch::equal(saved->forward(probe), loaded->forward(probe)));
  convert(*saved);
  convert(*loaded);
  EXPECT_TRUE(torch::equal(saved->forward(probe), loaded->forward(probe)));
}

TEST(LsqQConfig, QuantMatMulAndQuantConv2dConvertWithTheLearnedScales) {
  torch::manual_seed(7);
  QuantMatMul mm;
  mm->set_qconfig(int8_learnable_qat_qconfig());
  QuantConv2d conv(torch::nn::Conv2dOptions(3, 4, 3));
  conv->set_qconfig(int8_learnable_qat_qconfig());
  const at::Tensor a = torch::randn({2, 5, 7});
  const at::Tensor b = torch::randn({2, 7, 3});
  const at::Tensor image = torch::randn({2, 3, 9, 9});
  torch::NoGradGuard no_grad;
  mm->set_mode(QuantMode::kObserve);
  conv->set_mode(QuantMode::kObserve);
  mm(a, b);
  conv(image);
  mm->set_mode(QuantMode::kFakeQuant);
  conv->set_mode(QuantMode::kFakeQuant);
  // Stand-ins for trained scales: 0.7x and 0.9x the calibrated ones.
  mm->input_quantizer->scale.mul_(0.7);
  mm->other_quantizer->scale.mul_(0.9);
  conv->input_quantizer->scale.mul_(0.7);
  conv->weight_quantizer->scale.mul_(0.9);
  const at::Tensor mm_scales[2] = {mm->input_quantizer->scale.clone(),
                                   mm->other_quantizer->scale.clone()};
  const at::Tensor conv_input = conv->input_quantizer->scale.clone();
  const at::Tensor conv_weight = conv->weight_quantizer->scale.clone();
  ASSERT_TRUE(mm->convert().converted);
  ASSERT_TRUE(conv->convert().converted);
  EXPECT_TRUE(torch::equal(mm->input_scale.reshape({}), mm_scales[0].reshape({})));
  EXPECT_TRUE(torch::equal(mm->other_scale.reshape({}), mm_scales[1].reshape({})));
  EXPECT_TRUE(torch::equal(conv->input_scale.reshape({}), conv_input.reshape({})));
  EXPECT_TRUE(torch::equal(conv->weight_scale.reshape({-1}), conv_weight.reshape({-1})));
}

TEST(LsqQConfig, W4A8PresetLearnsInt4ChannelScalesAndConvertsWithThem) {
  torch::manual_seed(8);
  const at::Tensor x = torch::randn({16, kIn});
  Net net = calibrated_net(w4a8_learnable_qat_qconfig(), x);
  auto& fc = net->fc;
  const at::Tensor channel_amax = std::get<0>(fc->weight.detach().abs().max(1));
  EXPECT_TRUE(torch::allclose(fc->weight_quantizer->scale.detach(), channel_amax / 7, 1e-6, 0));
  EXPECT_TRUE(is_parameter(*net, fc->weight_quantizer->scale));
  torch::NoGradGuard no_grad;
  fc->weight_quantizer->scale.mul_(0.8);  // a stand-in for a trained scale
  const at::Tensor learned = fc->weight_quantizer->scale.clone();
  const at::Tensor simulated = net->forward(x);
  const ConvertReport report = convert(*net);
  ASSERT_EQ(report.converted.size(), 1u) << report;
  EXPECT_EQ(fc->converted_scheme(), "w4a8");
  EXPECT_TRUE(torch::equal(fc->weight_scale, learned));
  const at::Tensor converted = net->forward(x);
  EXPECT_LE((converted - simulated).abs().max().item<double>(),
            simulated.abs().max().item<double>() / kInt8Max);
}

TEST(LsqQConfig, NonPositiveScalesAreClampedAndNonFiniteOnesAreErrorsNamingTheQuantizer) {
  torch::manual_seed(9);
  const at::Tensor x = torch::randn({8, kIn});
  Net net = calibrated_net(int8_learnable_qat_qconfig(), x);
  auto& quantizer = net->fc->input_quantizer;
  {
    torch::NoGradGuard no_grad;
    quantizer->scale.fill_(-0.5);
  }
  EXPECT_EQ(quantizer->qparams().scale.item<float>(), static_cast<float>(kDefaultScaleEps));
  net->forward(x);
  EXPECT_EQ(quantizer->scale.item<float>(), static_cast<float>(kDefaultScaleEps))
      << "forward clamps the parameter itself to eps";

  {
    torch::NoGradGuard no_grad;
    quantizer->scale.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  const std::string forward_error = test::error_message([&] { net->forward(x); });
  EXPECT_NE(forward_error.find("fc.input_quantizer"), std::string::npos) << forward_error;
  EXPECT_NE(forward_error.find("finite learned scale"), std::string::npos) << forward_error;
  EXPECT_THROW(quantizer->qparams(), c10::ValueError);
  const std::string convert_error = test::error_message([&] { convert(*net); });
  EXPECT_NE(convert_error.find("fc.input_quantizer"), std::string::npos) << convert_error;
  EXPECT_NE(convert_error.find("finite learned scale"), std::string::npos) << convert_error;
  EXPECT_EQ(net->fc->mode(), QuantMode::kFakeQuant) << "a failed convert changes nothing";
}

TEST(LsqQConfig, NonFiniteInputsComeOutNaN) {
  FakeQuantize fq = int8_learnable_qat_qconfig().activation();
  fq(torch::linspace(-2, 2, 9));
  fq->enable_observer(false);
  const float inf = std::numeric_limits<float>::infinity();
  const at::Tensor y = fq(torch::tensor({1.0f, std::numeric_limits<float>::quiet_NaN(), inf,
                                         -inf, 0.5f}));
  EXPECT_TRUE(std::isfinite(y[0].item<float>()));
  for (int i = 1; i < 4; ++i) EXPECT_TRUE(std::isnan(y[i].item<float>())) << i;
  EXPECT_TRUE(std::isfinite(y[4].item<float>()));
}

TEST(LsqQConfig, ObserverOnReinitializesTheScaleAndCloneKeepsTheLearnedOne) {
  FakeQuantize fq = int8_learnable_qat_qconfig().activation();
  fq(torch::linspace(-2, 2, 9));
  fq->enable_observer(false);
  {
    torch::NoGradGuard no_grad;
    fq->scale.fill_(0.5);
  }
  EXPECT_EQ(fq->update_qparams().scale.item<float>(), 0.5f) << "observer off: learned kept";
  const auto copy = std::dynamic_pointer_cast<FakeQuantizeImpl>(fq->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_TRUE(copy->is_learnable());
  EXPECT_EQ(copy->scale.item<float>(), 0.5f);
  EXPECT_TRUE(copy->scale.requires_grad());
  EXPECT_EQ(copy->parameters().size(), 1u);
  fq->enable_observer(true);
  EXPECT_FLOAT_EQ(fq->update_qparams().scale.item<float>(), 2.0f / kInt8Max);
  EXPECT_FLOAT_EQ(fq->scale.item<float>(), 2.0f / kInt8Max);
}

TEST(LsqQConfig, UnsupportedLearnableOptionsAreClearErrors) {
  const auto per_tensor = observer_factory<MinMaxObserver>(
      MinMaxObserverOptions(int8_per_tensor_activation_spec()));
  const auto lsq = [&](ObserverFactory observer) {
    return FakeQuantizeOptions(std::move(observer)).learnable(LearnableScaleOptions());
  };
  EXPECT_THROW(FakeQuantize(lsq(per_tensor).dynamic(true)), c10::ValueError);
  EXPECT_THROW(FakeQuantize(lsq(per_tensor).gradient(GradientMode::kSte)), c10::ValueError);
  EXPECT_THROW(
      FakeQuantize(FakeQuantizeOptions(per_tensor).learnable(
          LearnableScaleOptions().learn_zero_point(true))),
      c10::ValueError);
  EXPECT_THROW(FakeQuantize(lsq(observer_factory<MinMaxObserver>(
                   MinMaxObserverOptions(int4_per_block_weight_spec(4))))),
               c10::NotImplementedError);
  EXPECT_THROW(FakeQuantize(lsq(observer_factory<MinMaxObserver>(
                   MinMaxObserverOptions(QuantSpec(QuantDtype::kFp8E4M3))))),
               c10::NotImplementedError);
}

TEST(LsqQConfig, LearnedAffineZeroPointIsAFloatParameterReadAsRoundedInt) {
  FakeQuantize fq(FakeQuantizeOptions(observer_factory<MinMaxObserver>(MinMaxObserverOptions(
                                          QuantSpec(QuantDtype::kUInt8).symmetric(false))))
                      .learnable(LearnableScaleOptions().learn_zero_point(true)));
  const at::Tensor x = torch::linspace(-1, 3, 17);
  fq(x);
  fq->enable_observer(false);
  EXPECT_EQ(fq->zero_point.scalar_type(), at::kFloat);
  EXPECT_EQ(fq->parameters().size(), 2u);
  {
    torch::NoGradGuard no_grad;
    fq->zero_point.fill_(63.6);
  }
  const QParams qp = fq->qparams();
  EXPECT_EQ(qp.zero_point.scalar_type(), at::kInt);
  EXPECT_EQ(qp.zero_point.item<int>(), 64);
  const at::Tensor xg = x.clone().requires_grad_(true);
  fq(xg).sum().backward();
  EXPECT_TRUE(fq->zero_point.grad().defined());
}
