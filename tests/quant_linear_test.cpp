#include <gtest/gtest.h>

#include "tquant/nn/quant_linear.h"

#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "tquant/histogram_observer.h"

using namespace tquant;

namespace {

/// A QConfig whose observers are running min-max on both sides, so tests can predict qparams.
QConfig min_max_qconfig() {
  auto activation = fake_quantize_factory(FakeQuantizeOptions(observer_factory<MinMaxObserver>(
      MinMaxObserverOptions(int8_per_tensor_activation_spec()))));
  return QConfig{activation, int8_qat_qconfig().weight};
}

/// The message of the c10::Error thrown by f, or "" if none is thrown.
template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

std::vector<std::string> keys_of(const torch::OrderedDict<std::string, at::Tensor>& dict) {
  return dict.keys();
}

}  // namespace

TEST(QuantLinear, FloatModeIsBitEqualToTorchLinear) {
  for (bool with_bias : {true, false}) {
    torch::manual_seed(7);
    torch::nn::Linear reference(torch::nn::LinearOptions(17, 3).bias(with_bias));
    torch::manual_seed(7);
    QuantLinear fc(torch::nn::LinearOptions(17, 3).bias(with_bias));
    EXPECT_TRUE(torch::equal(fc->weight, reference->weight)) << "same initialization";
    if (with_bias) EXPECT_TRUE(torch::equal(fc->bias, reference->bias));
    EXPECT_EQ(fc->bias.defined(), with_bias);

    auto x = torch::randn({5, 17});
    EXPECT_TRUE(torch::equal(fc(x), reference(x))) << "bias=" << with_bias;
    auto x3 = torch::randn({2, 33, 17});
    EXPECT_TRUE(torch::equal(fc(x3), reference(x3)));
    auto x1 = torch::randn({17});
    EXPECT_TRUE(torch::equal(fc(x1), reference(x1))) << "1-D input as torch::nn::Linear";
  }
}

TEST(QuantLinear, FloatModeWithQConfigStillMatchesTorchLinear) {
  auto reference = torch::nn::Linear(9, 4);
  auto fc = QuantLinearImpl::from_float(reference);
  fc->set_qconfig(int8_static_qconfig());
  EXPECT_EQ(fc->mode(), QuantMode::kFloat);
  auto x = torch::randn({3, 9});
  EXPECT_TRUE(torch::equal(fc(x), reference(x)));
  EXPECT_FALSE(fc->input_quantizer->observer_ref().has_data()) << "float mode bypasses observers";
}

TEST(QuantLinear, ParameterAndBufferNamesEqualTorchLinears) {
  for (bool with_bias : {true, false}) {
    torch::nn::Linear reference(torch::nn::LinearOptions(5, 3).bias(with_bias));
    QuantLinear fc(torch::nn::LinearOptions(5, 3).bias(with_bias));
    EXPECT_EQ(keys_of(fc->named_parameters()), keys_of(reference->named_parameters()));
    EXPECT_EQ(keys_of(fc->named_buffers()), keys_of(reference->named_buffers()));
    EXPECT_TRUE(fc->named_children().is_empty()) << "no quantizer before set_qconfig";
  }
}

TEST(QuantLinear, LoadsTorchLinearParametersByName) {
  torch::nn::Linear reference(6, 4);
  QuantLinear fc(6, 4);
  {
    torch::NoGradGuard no_grad;
    auto params = fc->named_parameters();
    for (const auto& item : reference->named_parameters()) params[item.key()].copy_(item.value());
  }
  auto x = torch::randn({3, 6});
  EXPECT_TRUE(torch::equal(fc(x), reference(x)));
}

TEST(QuantLinear, LoadsASerializedTorchLinear) {
  torch::nn::Linear reference(6, 4);
  std::stringstream stream;
  torch::save(reference, stream);
  QuantLinear fc(6, 4);
  torch::load(fc, stream);
  auto x = torch::randn({3, 6});
  EXPECT_TRUE(torch::equal(fc(x), reference(x)));
}

TEST(QuantLinear, FromFloatCopiesParametersAndOptions) {
  torch::nn::Linear reference(torch::nn::LinearOptions(7, 2).bias(false));
  reference->eval();
  auto fc = QuantLinearImpl::from_float(reference);
  EXPECT_EQ(fc->options.in_features(), 7);
  EXPECT_FALSE(fc->options.bias());
  EXPECT_FALSE(fc->bias.defined());
  EXPECT_FALSE(fc->is_training());
  EXPECT_TRUE(torch::equal(fc->weight, reference->weight));
  EXPECT_FALSE(fc->weight.is_same(reference->weight)) << "a copy, not shared storage";
  EXPECT_TRUE(fc->weight.requires_grad());
  {
    torch::NoGradGuard no_grad;
    reference->weight.add_(1.0);
  }
  EXPECT_FALSE(torch::equal(fc->weight, reference->weight));
}

TEST(QuantLinear, SetQConfigRegistersQuantizerChildren) {
  QuantLinear fc(8, 4);
  fc->set_qconfig(int8_static_qconfig());
  auto children = fc->named_children();
  ASSERT_TRUE(children.contains("input_quantizer"));
  ASSERT_TRUE(children.contains("weight_quantizer"));
  EXPECT_EQ(children["input_quantizer"].get(), fc->input_quantizer.ptr().get());
  EXPECT_TRUE(fc->named_buffers().contains("weight_quantizer.scale"));
  EXPECT_TRUE(fc->named_buffers().contains("input_quantizer.observer.counts"));

  fc->set_qconfig(weight_only_int8_qconfig());
  EXPECT_TRUE(fc->input_quantizer.is_empty());
  EXPECT_FALSE(fc->named_children().contains("input_quantizer")) << "weight-only: no input QDQ";
  EXPECT_TRUE(fc->named_children().contains("weight_quantizer"));
}

TEST(QuantLinear, ObserveModeReturnsFloatOutputWhileObserversRecord) {
  torch::manual_seed(1);
  QuantLinear fc(8, 3);
  fc->set_qconfig(min_max_qconfig());
  fc->set_mode(QuantMode::kObserve);
  auto x1 = torch::randn({5, 8});
  auto x2 = torch::randn({4, 8}) * 3;
  auto expected1 = torch::nn::functional::linear(x1, fc->weight, fc->bias);
  auto expected2 = torch::nn::functional::linear(x2, fc->weight, fc->bias);
  EXPECT_TRUE(torch::equal(fc(x1), expected1));
  EXPECT_TRUE(torch::equal(fc(x2), expected2));

  auto& input_observer = *fc->input_quantizer->observer->as<MinMaxObserverImpl>();
  auto all = torch::cat({x1, x2});
  EXPECT_TRUE(torch::equal(input_observer.min_val, all.min()));
  EXPECT_TRUE(torch::equal(input_observer.max_val, all.max()));
  auto& weight_observer = *fc->weight_quantizer->observer->as<PerChannelMinMaxObserverImpl>();
  EXPECT_TRUE(torch::equal(weight_observer.min_val, std::get<0>(fc->weight.min(1))));
  EXPECT_TRUE(torch::equal(weight_observer.max_val, std::get<0>(fc->weight.max(1))));
  EXPECT_FALSE(fc->input_quantizer->fake_quant_enabled());
}

TEST(QuantLinear, FakeQuantModeEqualsManualQdqOfInputAndWeight) {
  torch::manual_seed(2);
  QuantLinear fc(33, 5);
  fc->set_qconfig(int8_static_qconfig());
  fc->set_mode(QuantMode::kObserve);
  fc(torch::randn({65, 33}));
  fc->set_mode(QuantMode::kFakeQuant);

  auto input_qp = fc->input_quantizer->qparams();
  auto weight_qp = fc->weight_quantizer->qparams();
  ASSERT_TRUE(input_qp.defined());
  ASSERT_TRUE(weight_qp.defined());
  EXPECT_EQ(weight_qp.scale.sizes(), torch::IntArrayRef({5})) << "per output channel";
  EXPECT_TRUE(torch::equal(input_qp.scale,
                           fc->input_quantizer->observer_ref().calculate_qparams().scale));

  auto x = torch::randn({17, 33}) * 1.5;
  auto expected = torch::nn::functional::linear(fake_quantize(x, input_qp),
                                                fake_quantize(fc->weight, weight_qp), fc->bias);
  EXPECT_TRUE(torch::equal(fc(x), expected));
  EXPECT_FALSE(torch::equal(fc(x), torch::nn::functional::linear(x, fc->weight, fc->bias)))
      << "QDQ changes the result";

  auto frozen = input_qp.scale.clone();
  fc(x * 100);
  EXPECT_TRUE(torch::equal(fc->input_quantizer->scale, frozen))
      << "calibrated qparams stay frozen in fake-quant mode";
}

TEST(QuantLinear, FakeQuantWithoutCalibrationObservesEveryStep) {
  QuantLinear fc(4, 2);
  fc->set_qconfig(min_max_qconfig());
  fc->set_mode(QuantMode::kFakeQuant);
  EXPECT_TRUE(fc->input_quantizer->observer_enabled());
  auto x = torch::randn({3, 4});
  auto y = fc(x);
  auto input_qp = calculate_qparams(x.min(), x.max(), int8_per_tensor_activation_spec());
  EXPECT_TRUE(torch::equal(fc->input_quantizer->scale, input_qp.scale));
  auto expected = torch::nn::functional::linear(
      fake_quantize(x, input_qp), fake_quantize(fc->weight, fc->weight_quantizer->qparams()),
      fc->bias);
  EXPECT_TRUE(torch::equal(y, expected));
}

TEST(QuantLinear, WeightOnlyInt4QuantizesWeightBlocksAndLeavesInputFloat) {
  torch::manual_seed(3);
  QuantLinear fc(64, 3);
  fc->set_qconfig(weight_only_int4_qconfig(32));
  fc->set_mode(QuantMode::kFakeQuant);
  auto x = torch::randn({5, 64});
  auto y = fc(x);
  auto weight_qp = fc->weight_quantizer->qparams();
  EXPECT_EQ(weight_qp.scale.sizes(), torch::IntArrayRef({3, 2}));
  auto expected =
      torch::nn::functional::linear(x, fake_quantize(fc->weight, weight_qp), fc->bias);
  EXPECT_TRUE(torch::equal(y, expected));
}

namespace {

/// Mean squared error of `fc` against `target` after `steps` of SGD; returns {first, last}.
std::pair<double, double> train_with_sgd(QuantLinear& fc, const at::Tensor& x,
                                         const at::Tensor& target, int steps) {
  torch::optim::SGD optimizer(fc->parameters(), torch::optim::SGDOptions(0.1));
  double first = 0.0;
  double last = 0.0;
  for (int step = 0; step < steps; ++step) {
    optimizer.zero_grad();
    auto loss = torch::mse_loss(fc(x), target);
    loss.backward();
    EXPECT_TRUE(fc->weight.grad().defined());
    optimizer.step();
    last = loss.item<double>();
    if (step == 0) first = last;
  }
  return {first, last};
}

}  // namespace

TEST(QuantLinear, QatLoopWithSgdLowersTheLossWithCalibratedRanges) {
  torch::manual_seed(4);
  QuantLinear fc(16, 4);
  // A teacher inside the calibrated weight range, as in fine-tuning a pretrained model.
  auto teacher_weight = 0.5 * fc->weight.detach() + 0.02 * torch::randn({4, 16});
  auto teacher_bias = 0.1 * torch::randn({4});
  auto x = torch::randn({128, 16});
  auto target = torch::nn::functional::linear(x, teacher_weight, teacher_bias);

  fc->set_qconfig(int8_qat_qconfig());
  fc->set_mode(QuantMode::kObserve);
  fc(x);
  fc->set_mode(QuantMode::kFakeQuant);
  auto [first, last] = train_with_sgd(fc, x, target, 60);
  EXPECT_LT(last, 0.25 * first) << "first " << first << ", last " << last;
  for (const auto& item : fc->named_parameters()) {
    EXPECT_TRUE(item.key() == "weight" || item.key() == "bias")
        << "quantizers add no trainable parameters, got " << item.key();
  }
}

TEST(QuantLinear, QatFromScratchKeepsObservingAndLowersTheLoss) {
  torch::manual_seed(6);
  auto teacher = torch::randn({4, 16});
  auto x = torch::randn({128, 16});
  auto target = x.matmul(teacher.t());
  QuantLinear fc(16, 4);
  fc->set_qconfig(int8_qat_qconfig());
  fc->set_mode(QuantMode::kFakeQuant);  // nothing observed yet: observers stay on
  auto [first, last] = train_with_sgd(fc, x, target, 60);
  EXPECT_LT(last, 0.25 * first) << "first " << first << ", last " << last;
  EXPECT_TRUE(fc->weight_quantizer->observer_enabled());
}

TEST(QuantLinear, CloneKeepsQuantizersModeAndQParams) {
  torch::manual_seed(5);
  QuantLinear fc(8, 3);
  fc->set_qconfig(int8_static_qconfig());
  fc->set_mode(QuantMode::kObserve);
  fc(torch::randn({17, 8}));
  fc->set_mode(QuantMode::kFakeQuant);

  auto copy = std::dynamic_pointer_cast<QuantLinearImpl>(fc->clone());
  ASSERT_TRUE(copy);
  EXPECT_EQ(copy->mode(), QuantMode::kFakeQuant);
  ASSERT_FALSE(copy->input_quantizer.is_empty());
  ASSERT_FALSE(copy->weight_quantizer.is_empty());
  EXPECT_EQ(copy->named_children()["input_quantizer"].get(), copy->input_quantizer.ptr().get());
  EXPECT_NE(copy->input_quantizer.ptr().get(), fc->input_quantizer.ptr().get());
  EXPECT_TRUE(torch::equal(copy->input_quantizer->scale, fc->input_quantizer->scale));
  EXPECT_TRUE(torch::equal(copy->weight_quantizer->scale, fc->weight_quantizer->scale));
  EXPECT_FALSE(copy->input_quantizer->observer_enabled());
  EXPECT_TRUE(copy->input_quantizer->observer_ref().has_data());

  auto x = torch::randn({3, 8});
  EXPECT_TRUE(torch::equal(copy->forward(x), fc(x)));
  {
    torch::NoGradGuard no_grad;
    fc->input_quantizer->scale.mul_(2);
    fc->weight.add_(1);
  }
  EXPECT_FALSE(torch::equal(copy->input_quantizer->scale, fc->input_quantizer->scale))
      << "deep copy";
  EXPECT_FALSE(torch::equal(copy->weight, fc->weight));
}

TEST(QuantLinear, WrongInFeaturesIsAClearError) {
  QuantLinear fc(8, 4);
  auto message = error_message([&] { fc(torch::randn({2, 5})); });
  EXPECT_NE(message.find("QuantLinear(in_features=8, out_features=4)"), std::string::npos)
      << message;
  EXPECT_NE(message.find("[..., 8]"), std::string::npos) << message;
  EXPECT_NE(message.find("[2, 5]"), std::string::npos) << message;
  EXPECT_THROW(fc(torch::randn({})), c10::Error) << "0-dim input";
}

TEST(QuantLinear, QuantizedModesWithoutQConfigAreAClearError) {
  QuantLinear fc(8, 4);
  auto message = error_message([&] { fc->set_mode(QuantMode::kObserve); });
  EXPECT_NE(message.find("set_qconfig"), std::string::npos) << message;
  EXPECT_EQ(fc->mode(), QuantMode::kFloat);
  EXPECT_THROW(fc->set_qconfig(QConfig{}), c10::ValueError) << "a QConfig with no factory";
}

TEST(QuantLinear, PrettyPrintShowsMode) {
  QuantLinear fc(8, 4);
  fc->set_qconfig(int8_qat_qconfig());
  fc->set_mode(QuantMode::kObserve);
  std::ostringstream stream;
  stream << *fc;
  EXPECT_NE(stream.str().find("tquant::QuantLinear(in_features=8, out_features=4, bias=true, "
                              "mode=observe)"),
            std::string::npos)
      << stream.str();
  EXPECT_NE(stream.str().find("weight_quantizer"), std::string::npos) << stream.str();
}

TEST(QuantLinear, SavedCalibrationReloadsIntoAFreshModule) {
  torch::manual_seed(8);
  QuantLinear fc(17, 3);
  fc->set_qconfig(int8_static_qconfig());
  fc->set_mode(QuantMode::kObserve);
  fc(torch::randn({33, 17}));
  fc->set_mode(QuantMode::kFakeQuant);
  std::stringstream stream;
  torch::save(fc, stream);

  QuantLinear restored(17, 3);
  restored->set_qconfig(int8_static_qconfig());
  torch::load(restored, stream);
  EXPECT_EQ(restored->mode(), QuantMode::kFloat) << "the mode is not serialized";
  restored->set_mode(QuantMode::kFakeQuant);  // the loaded observers freeze the same qparams
  EXPECT_TRUE(torch::equal(restored->input_quantizer->scale, fc->input_quantizer->scale));
  auto x = torch::randn({5, 17});
  EXPECT_TRUE(torch::equal(restored(x), fc(x)));
}

TEST(QuantLinear, FakeQuantFollowsTheModuleToTheGpu_CUDA) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(9);
  QuantLinear fc(33, 5);
  fc->to(torch::kCUDA);
  fc->set_qconfig(int8_static_qconfig());  // quantizers are built on the weight's device
  EXPECT_TRUE(fc->weight_quantizer->scale.is_cuda());
  fc->set_mode(QuantMode::kObserve);
  fc(torch::randn({65, 33}, torch::kCUDA));
  fc->set_mode(QuantMode::kFakeQuant);
  auto x = torch::randn({17, 33}, torch::kCUDA);
  auto expected = torch::nn::functional::linear(
      fake_quantize(x, fc->input_quantizer->qparams()),
      fake_quantize(fc->weight, fc->weight_quantizer->qparams()), fc->bias);
  EXPECT_TRUE(torch::equal(fc(x), expected));
}
