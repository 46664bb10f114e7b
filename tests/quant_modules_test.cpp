#include <gtest/gtest.h>
#include "test_util.h"

#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tquant/nn/quant_attention.h"
#include "tquant/nn/quant_conv2d.h"
#include "tquant/nn/quant_embedding.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/nn/quant_matmul.h"
#include "tquant/nn/quant_stub.h"

using namespace tquant;

namespace F = torch::nn::functional;

namespace {

/// Running min-max observers on both sides, so tests can predict qparams.
QConfig min_max_qconfig() {
  auto activation = fake_quantize_factory(FakeQuantizeOptions(observer_factory<MinMaxObserver>(
      MinMaxObserverOptions(int8_per_tensor_activation_spec()))));
  return QConfig{activation, int8_qat_qconfig().weight};
}

/// A weight factory whose per-channel spec runs along axis 1 (not what the modules accept).
QConfig axis1_weight_qconfig() {
  auto weight = fake_quantize_factory(FakeQuantizeOptions(
      observer_factory<PerChannelMinMaxObserver>(
          MinMaxObserverOptions(int8_per_channel_weight_spec().axis(1)))));
  return QConfig{nullptr, weight};
}

using tquant::test::error_message;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::vector<std::string> keys_of(const torch::OrderedDict<std::string, at::Tensor>& dict) {
  return dict.keys();
}

/// Runs `steps` of SGD on `params` minimizing loss(); returns {first loss, last loss}.
template <typename Loss>
std::pair<double, double> sgd(std::vector<at::Tensor> params, double lr, int steps, Loss loss) {
  torch::optim::SGD optimizer(params, torch::optim::SGDOptions(lr));
  double first = 0.0;
  double last = 0.0;
  for (int step = 0; step < steps; ++step) {
    optimizer.zero_grad();
    at::Tensor value = loss();
    value.backward();
    for (const auto& p : params) EXPECT_TRUE(p.grad().defined());
    optimizer.step();
    last = value.item<double>();
    if (step == 0) first = last;
  }
  return {first, last};
}

}  // namespace

// ---------------------------------------------------------------------------------- QuantConv2d

TEST(QuantConv2d, FloatModeIsBitEqualToTorchConv2d) {
  using torch::nn::Conv2dOptions;
  std::vector<Conv2dOptions> cases = {
      Conv2dOptions(3, 5, 3),
      Conv2dOptions(3, 5, {3, 1}).stride({2, 1}).padding(torch::ExpandingArray<2>({1, 2})).bias(false),
      Conv2dOptions(6, 9, 3).groups(3).dilation(2).padding(2),
      Conv2dOptions(3, 4, 3).padding(torch::kSame),
      Conv2dOptions(3, 4, {1, 3}).padding(torch::kValid).stride(2),
      Conv2dOptions(3, 4, 3).padding(1).padding_mode(torch::kReflect),
      Conv2dOptions(3, 4, 3).padding(torch::ExpandingArray<2>({1, 2})).padding_mode(torch::kReplicate),
      Conv2dOptions(3, 4, 3).padding(1).padding_mode(torch::kCircular),
      Conv2dOptions(3, 4, 3).padding(torch::kSame).padding_mode(torch::kReflect),
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& options = cases[i];
    torch::manual_seed(11);
    torch::nn::Conv2d reference(options);
    torch::manual_seed(11);
    QuantConv2d conv(options);
    ASSERT_TRUE(torch::equal(conv->weight, reference->weight)) << "case " << i;
    EXPECT_EQ(conv->bias.defined(), reference->bias.defined()) << "case " << i;
    if (conv->bias.defined()) EXPECT_TRUE(torch::equal(conv->bias, reference->bias));
    const int64_t channels = options.in_channels();
    auto x = torch::randn({2, channels, 9, 11});
    EXPECT_TRUE(torch::equal(conv(x), reference(x))) << "case " << i;
    auto unbatched = torch::randn({channels, 7, 8});
    EXPECT_TRUE(torch::equal(conv(unbatched), reference(unbatched))) << "case " << i;
  }
}

TEST(QuantConv2d, ParameterAndBufferNamesEqualTorchConv2ds) {
  for (bool with_bias : {true, false}) {
    auto options = torch::nn::Conv2dOptions(4, 6, 3).bias(with_bias);
    torch::nn::Conv2d reference(options);
    QuantConv2d conv(options);
    EXPECT_EQ(keys_of(conv->named_parameters()), keys_of(reference->named_parameters()));
    EXPECT_EQ(keys_of(conv->named_buffers()), keys_of(reference->named_buffers()));
    EXPECT_TRUE(conv->named_children().is_empty());
  }
}

TEST(QuantConv2d, LoadsASerializedTorchConv2dAndFromFloatCopies) {
  torch::nn::Conv2d reference(torch::nn::Conv2dOptions(3, 4, 3).stride(2).padding(1));
  std::stringstream stream;
  torch::save(reference, stream);
  QuantConv2d conv(torch::nn::Conv2dOptions(3, 4, 3).stride(2).padding(1));
  torch::load(conv, stream);
  auto x = torch::randn({1, 3, 17, 17});
  EXPECT_TRUE(torch::equal(conv(x), reference(x)));

  reference->eval();
  auto copy = QuantConv2dImpl::from_float(reference);
  EXPECT_FALSE(copy->is_training());
  EXPECT_EQ(*copy->options.stride(), *reference->options.stride());
  EXPECT_TRUE(torch::equal(copy(x), reference(x)));
  EXPECT_FALSE(copy->weight.is_same(reference->weight));
}

TEST(QuantConv2d, ObserveModeReturnsFloatOutputWhileObserversRecord) {
  torch::manual_seed(12);
  QuantConv2d conv(torch::nn::Conv2dOptions(3, 5, 3).padding(1));
  conv->set_qconfig(min_max_qconfig());
  conv->set_mode(QuantMode::kObserve);
  auto x = torch::randn({2, 3, 8, 8}) * 2;
  auto expected = F::conv2d(x, conv->weight, F::Conv2dFuncOptions().bias(conv->bias).padding(1));
  EXPECT_TRUE(torch::equal(conv(x), expected));
  auto& input_observer = *conv->input_quantizer->observer->as<MinMaxObserverImpl>();
  EXPECT_TRUE(torch::equal(input_observer.max_val, x.max()));
  auto& weight_observer = *conv->weight_quantizer->observer->as<PerChannelMinMaxObserverImpl>();
  EXPECT_TRUE(torch::equal(weight_observer.max_val, std::get<0>(conv->weight.flatten(1).max(1))))
      << "one range per output channel";
}

TEST(QuantConv2d, FakeQuantModeEqualsManualQdqOfInputAndWeight) {
  torch::manual_seed(13);
  QuantConv2d conv(torch::nn::Conv2dOptions(6, 9, 3).groups(3).stride(2).padding(1));
  conv->set_qconfig(int8_static_qconfig());
  conv->set_mode(QuantMode::kObserve);
  conv(torch::randn({4, 6, 17, 17}));
  conv->set_mode(QuantMode::kFakeQuant);
  auto input_qp = conv->input_quantizer->qparams();
  auto weight_qp = conv->weight_quantizer->qparams();
  ASSERT_TRUE(input_qp.defined());
  EXPECT_EQ(weight_qp.scale.sizes(), torch::IntArrayRef({9})) << "per output channel";

  auto x = torch::randn({2, 6, 13, 13});
  auto expected = F::conv2d(fake_quantize(x, input_qp), fake_quantize(conv->weight, weight_qp),
                            F::Conv2dFuncOptions().bias(conv->bias).stride(2).padding(1).groups(3));
  EXPECT_TRUE(torch::equal(conv(x), expected));
  EXPECT_FALSE(torch::equal(conv(x), F::conv2d(x, conv->weight, F::Conv2dFuncOptions()
                                                                    .bias(conv->bias)
                                                                    .stride(2)
                                                                    .padding(1)
                                                                    .groups(3))));
  auto frozen = input_qp.scale.clone();
  conv(x * 100);
  EXPECT_TRUE(torch::equal(conv->input_quantizer->scale, frozen)) << "frozen after calibration";
}

TEST(QuantConv2d, FakeQuantWithReflectPaddingPadsTheQdqInput) {
  torch::manual_seed(14);
  QuantConv2d conv(torch::nn::Conv2dOptions(3, 4, 3).padding(1).padding_mode(torch::kReflect));
  conv->set_qconfig(min_max_qconfig());
  conv->set_mode(QuantMode::kObserve);
  conv(torch::randn({2, 3, 9, 9}));
  conv->set_mode(QuantMode::kFakeQuant);
  auto x = torch::randn({2, 3, 9, 9});
  auto padded = F::pad(fake_quantize(x, conv->input_quantizer->qparams()),
                       F::PadFuncOptions({1, 1, 1, 1}).mode(torch::kReflect));
  auto expected =
      F::conv2d(padded, fake_quantize(conv->weight, conv->weight_quantizer->qparams()),
                F::Conv2dFuncOptions().bias(conv->bias));
  EXPECT_TRUE(torch::equal(conv(x), expected));
}

TEST(QuantConv2d, QatLoopWithSgdLowersTheLoss) {
  torch::manual_seed(15);
  QuantConv2d conv(torch::nn::Conv2dOptions(3, 4, 3).padding(1));
  auto teacher = 0.5 * conv->weight.detach() + 0.02 * torch::randn_like(conv->weight);
  auto x = torch::randn({8, 3, 9, 9});
  auto target = F::conv2d(x, teacher, F::Conv2dFuncOptions().padding(1));
  conv->set_qconfig(int8_qat_qconfig());
  conv->set_mode(QuantMode::kObserve);
  conv(x);
  conv->set_mode(QuantMode::kFakeQuant);
  auto [first, last] = sgd(conv->parameters(), 0.5, 60,
                           [&] { return torch::mse_loss(conv(x), target); });
  EXPECT_LT(last, 0.25 * first) << "first " << first << ", last " << last;
}

TEST(QuantConv2d, CloneKeepsQuantizersModeAndQParams) {
  torch::manual_seed(16);
  QuantConv2d conv(torch::nn::Conv2dOptions(3, 4, 3));
  conv->set_qconfig(int8_static_qconfig());
  conv->set_mode(QuantMode::kObserve);
  conv(torch::randn({2, 3, 9, 9}));
  conv->set_mode(QuantMode::kFakeQuant);
  auto copy = std::dynamic_pointer_cast<QuantConv2dImpl>(conv->clone());
  ASSERT_TRUE(copy);
  EXPECT_EQ(copy->mode(), QuantMode::kFakeQuant);
  ASSERT_FALSE(copy->input_quantizer.is_empty());
  ASSERT_FALSE(copy->weight_quantizer.is_empty());
  EXPECT_EQ(copy->named_children()["weight_quantizer"].get(), copy->weight_quantizer.ptr().get());
  EXPECT_NE(copy->weight_quantizer.ptr().get(), conv->weight_quantizer.ptr().get());
  EXPECT_TRUE(torch::equal(copy->weight_quantizer->scale, conv->weight_quantizer->scale));
  auto x = torch::randn({1, 3, 9, 9});
  EXPECT_TRUE(torch::equal(copy->forward(x), conv(x)));
}

TEST(QuantConv2d, WrongChannelsAndBadConfigsAreClearErrors) {
  QuantConv2d conv(torch::nn::Conv2dOptions(3, 4, 3));
  auto message = error_message([&] { conv(torch::randn({2, 5, 9, 9})); });
  EXPECT_TRUE(contains(message, "QuantConv2d(in_channels=3, out_channels=4, kernel_size=[3, 3])"))
      << message;
  EXPECT_TRUE(contains(message, "[N, 3, H, W]")) << message;
  EXPECT_TRUE(contains(message, "[2, 5, 9, 9]")) << message;
  EXPECT_THROW(conv(torch::randn({9, 9})), c10::Error) << "2-D input";

  message = error_message([&] { conv->set_qconfig(axis1_weight_qconfig()); });
  EXPECT_TRUE(contains(message, "axis 0")) << message;
  EXPECT_TRUE(contains(message, "got axis 1")) << message;
  EXPECT_FALSE(conv->qconfig().has_value()) << "a rejected QConfig changes nothing";
  EXPECT_TRUE(conv->named_children().is_empty());

  message = error_message([&] { QuantConv2d(torch::nn::Conv2dOptions(3, 4, 3).groups(2)); });
  EXPECT_TRUE(contains(message, "divisible by groups")) << message;
  message = error_message([&] { conv->set_mode(QuantMode::kFakeQuant); });
  EXPECT_TRUE(contains(message, "set_qconfig")) << message;
}

// ---------------------------------------------------------------------------------- QuantMatMul

TEST(QuantMatMul, FloatModeIsBitEqualToMatmul) {
  torch::manual_seed(21);
  QuantMatMul matmul;
  EXPECT_TRUE(matmul->named_parameters().is_empty());
  auto q = torch::randn({2, 3, 17, 8});
  auto k = torch::randn({2, 3, 17, 8});
  EXPECT_TRUE(torch::equal(matmul(q, k.transpose(-2, -1)), at::matmul(q, k.transpose(-2, -1))));
  auto v = torch::randn({8});
  EXPECT_TRUE(torch::equal(matmul(q, v), at::matmul(q, v))) << "1-D right operand";
  matmul->set_qconfig(int8_static_qconfig());
  EXPECT_TRUE(torch::equal(matmul(q, v), at::matmul(q, v))) << "float mode with quantizers";
}

TEST(QuantMatMul, SetQConfigRegistersTwoActivationQuantizers) {
  QuantMatMul matmul;
  matmul->set_qconfig(int8_static_qconfig());
  auto children = matmul->named_children();
  ASSERT_TRUE(children.contains("input_quantizer"));
  ASSERT_TRUE(children.contains("other_quantizer"));
  EXPECT_NE(matmul->input_quantizer.ptr().get(), matmul->other_quantizer.ptr().get());
  EXPECT_EQ(matmul->other_quantizer->observer_ref().quant_spec().granularity(),
            Granularity::kPerTensor)
      << "built from the activation factory";
  EXPECT_TRUE(matmul->named_parameters().is_empty()) << "quantizers add no parameters";

  matmul->set_qconfig(weight_only_int8_qconfig());
  EXPECT_TRUE(matmul->named_children().is_empty()) << "weight-only: products stay float";
  matmul->set_mode(QuantMode::kFakeQuant);
  auto a = torch::randn({3, 5});
  auto b = torch::randn({5, 2});
  EXPECT_TRUE(torch::equal(matmul(a, b), at::matmul(a, b)));
}

TEST(QuantMatMul, ObserveThenFakeQuantEqualsManualQdq) {
  torch::manual_seed(22);
  QuantMatMul matmul;
  matmul->set_qconfig(min_max_qconfig());
  matmul->set_mode(QuantMode::kObserve);
  auto probs = torch::softmax(torch::randn({2, 4, 33, 33}), -1);
  auto v = torch::randn({2, 4, 33, 16}) * 3;
  EXPECT_TRUE(torch::equal(matmul(probs, v), at::matmul(probs, v)));
  auto& a_observer = *matmul->input_quantizer->observer->as<MinMaxObserverImpl>();
  auto& b_observer = *matmul->other_quantizer->observer->as<MinMaxObserverImpl>();
  EXPECT_TRUE(torch::equal(a_observer.max_val, probs.max()));
  EXPECT_TRUE(torch::equal(b_observer.min_val, v.min()));

  matmul->set_mode(QuantMode::kFakeQuant);
  auto a_qp = matmul->input_quantizer->qparams();
  auto b_qp = matmul->other_quantizer->qparams();
  auto probs2 = torch::softmax(torch::randn({2, 4, 33, 33}), -1);
  auto v2 = torch::randn({2, 4, 33, 16});
  auto expected = at::matmul(fake_quantize(probs2, a_qp), fake_quantize(v2, b_qp));
  EXPECT_TRUE(torch::equal(matmul(probs2, v2), expected));
  EXPECT_FALSE(torch::equal(expected, at::matmul(probs2, v2)));
}

TEST(QuantMatMul, GradientsFlowToBothOperands) {
  torch::manual_seed(23);
  QuantMatMul matmul;
  matmul->set_qconfig(int8_qat_qconfig());
  matmul->set_mode(QuantMode::kFakeQuant);  // not calibrated: observes every step
  auto a = (0.5 * torch::randn({17, 8})).requires_grad_();
  auto b = (0.5 * torch::randn({8, 3})).requires_grad_();
  auto target = torch::randn({17, 3});
  auto [first, last] =
      sgd({a, b}, 1.0, 100, [&] { return torch::mse_loss(matmul(a, b), target); });
  EXPECT_LT(last, 0.5 * first) << "first " << first << ", last " << last;
}

TEST(QuantMatMul, CloneKeepsQuantizers) {
  QuantMatMul matmul;
  matmul->set_qconfig(int8_static_qconfig());
  matmul->set_mode(QuantMode::kObserve);
  auto a = torch::randn({5, 7});
  auto b = torch::randn({7, 3});
  matmul(a, b);
  matmul->set_mode(QuantMode::kFakeQuant);
  auto copy = std::dynamic_pointer_cast<QuantMatMulImpl>(matmul->clone());
  ASSERT_TRUE(copy);
  ASSERT_FALSE(copy->other_quantizer.is_empty());
  EXPECT_EQ(copy->named_children()["other_quantizer"].get(), copy->other_quantizer.ptr().get());
  EXPECT_NE(copy->other_quantizer.ptr().get(), matmul->other_quantizer.ptr().get());
  EXPECT_TRUE(torch::equal(copy->other_quantizer->scale, matmul->other_quantizer->scale));
  EXPECT_TRUE(torch::equal(copy->forward(a, b), matmul(a, b)));
}

TEST(QuantMatMul, WrongInnerDimensionsAreAClearError) {
  QuantMatMul matmul;
  auto message = error_message([&] { matmul(torch::randn({2, 3, 4}), torch::randn({2, 5, 6})); });
  EXPECT_TRUE(contains(message, "QuantMatMul")) << message;
  EXPECT_TRUE(contains(message, "[2, 3, 4] (k = 4)")) << message;
  EXPECT_TRUE(contains(message, "[2, 5, 6] (k = 5)")) << message;
  EXPECT_THROW(matmul(torch::randn({}), torch::randn({3})), c10::Error) << "0-dim operand";
}

// ------------------------------------------------------------------------------- QuantEmbedding

TEST(QuantEmbedding, FloatModeIsBitEqualToTorchEmbedding) {
  using torch::nn::EmbeddingOptions;
  std::vector<EmbeddingOptions> cases = {
      EmbeddingOptions(17, 5),
      EmbeddingOptions(17, 5).padding_idx(3),
      EmbeddingOptions(17, 5).padding_idx(-1),
      EmbeddingOptions(17, 5).scale_grad_by_freq(true),
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    torch::manual_seed(31);
    torch::nn::Embedding reference(cases[i]);
    torch::manual_seed(31);
    QuantEmbedding embedding(cases[i]);
    ASSERT_TRUE(torch::equal(embedding->weight, reference->weight)) << "case " << i;
    EXPECT_EQ(embedding->options.padding_idx(), reference->options.padding_idx());
    auto indices = torch::randint(0, 17, {3, 33});
    EXPECT_TRUE(torch::equal(embedding(indices), reference(indices))) << "case " << i;
    EXPECT_TRUE(torch::equal(embedding(indices.to(torch::kInt)), reference(indices)));
  }
  // max_norm renormalizes the looked-up rows of the stored table in place, in both.
  torch::manual_seed(32);
  torch::nn::Embedding reference(EmbeddingOptions(9, 4).max_norm(1.0));
  torch::manual_seed(32);
  QuantEmbedding embedding(EmbeddingOptions(9, 4).max_norm(1.0));
  auto indices = torch::tensor({0, 2, 2, 5}, torch::kLong);
  EXPECT_TRUE(torch::equal(embedding(indices), reference(indices)));
  EXPECT_TRUE(torch::equal(embedding->weight, reference->weight));
}

TEST(QuantEmbedding, ParameterNamesAndSerializedStateEqualTorchEmbeddings) {
  torch::nn::Embedding reference(torch::nn::EmbeddingOptions(11, 6).padding_idx(0));
  QuantEmbedding embedding(torch::nn::EmbeddingOptions(11, 6).padding_idx(0));
  EXPECT_EQ(keys_of(embedding->named_parameters()), keys_of(reference->named_parameters()));
  EXPECT_EQ(keys_of(embedding->named_buffers()), keys_of(reference->named_buffers()));
  std::stringstream stream;
  torch::save(reference, stream);
  torch::load(embedding, stream);
  auto indices = torch::tensor({{0, 1, 10}, {4, 4, 0}}, torch::kLong);
  EXPECT_TRUE(torch::equal(embedding(indices), reference(indices)));
}

TEST(QuantEmbedding, FromFloatCopiesAPretrainedTableWithoutSharingIt) {
  auto table = torch::randn({7, 3});
  auto reference = torch::nn::Embedding::from_pretrained(
      table, torch::nn::EmbeddingFromPretrainedOptions().freeze(false));
  auto embedding = QuantEmbeddingImpl::from_float(reference);
  EXPECT_TRUE(torch::equal(embedding->weight, reference->weight));
  EXPECT_FALSE(embedding->weight.is_same(reference->weight));
  {
    torch::NoGradGuard no_grad;
    embedding->weight.add_(1);
  }
  EXPECT_TRUE(torch::equal(reference->weight, table)) << "the torch module keeps its table";
}

TEST(QuantEmbedding, WeightOnlyQuantizerGivesOneScalePerRow) {
  torch::manual_seed(33);
  QuantEmbedding embedding(17, 5);
  embedding->set_qconfig(int8_static_qconfig());
  auto children = embedding->named_children();
  EXPECT_FALSE(children.contains("input_quantizer")) << "indices are not quantized";
  ASSERT_TRUE(children.contains("weight_quantizer"));
  EXPECT_EQ(children.size(), 1u);

  embedding->set_mode(QuantMode::kObserve);
  auto indices = torch::randint(0, 17, {4, 9});
  EXPECT_TRUE(torch::equal(embedding(indices), F::embedding(indices, embedding->weight)));
  auto& observer = *embedding->weight_quantizer->observer->as<PerChannelMinMaxObserverImpl>();
  EXPECT_TRUE(torch::equal(observer.max_val, std::get<0>(embedding->weight.max(1))));

  embedding->set_mode(QuantMode::kFakeQuant);
  auto qp = embedding->weight_quantizer->qparams();
  EXPECT_EQ(qp.scale.sizes(), torch::IntArrayRef({17})) << "one scale per embedding row";
  auto expected = F::embedding(indices, fake_quantize(embedding->weight, qp));
  EXPECT_TRUE(torch::equal(embedding(indices), expected));
  EXPECT_FALSE(torch::equal(expected, F::embedding(indices, embedding->weight)));
}

TEST(QuantEmbedding, FakeQuantKeepsThePaddingRowZeroAndItsGradientZero) {
  torch::manual_seed(34);
  QuantEmbedding embedding(torch::nn::EmbeddingOptions(9, 4).padding_idx(2));
  embedding->set_qconfig(weight_only_int8_qconfig());
  embedding->set_mode(QuantMode::kFakeQuant);
  auto indices = torch::tensor({2, 0, 2, 5}, torch::kLong);
  auto y = embedding(indices);
  EXPECT_TRUE(torch::equal(y[0], torch::zeros({4})));
  y.sum().backward();
  EXPECT_TRUE(torch::equal(embedding->weight.grad()[2], torch::zeros({4})))
      << "padding_idx gets no gradient, as in torch::nn::Embedding";
  EXPECT_TRUE(torch::equal(embedding->weight.grad()[5], torch::ones({4})));
}

TEST(QuantEmbedding, QatLoopWithSgdLowersTheLoss) {
  torch::manual_seed(35);
  QuantEmbedding embedding(13, 6);
  auto target_table = torch::randn({13, 6});
  auto indices = torch::randint(0, 13, {64});
  auto target = target_table.index_select(0, indices);
  embedding->set_qconfig(int8_qat_qconfig());
  embedding->set_mode(QuantMode::kFakeQuant);
  auto [first, last] = sgd(embedding->parameters(), 5.0, 60,
                           [&] { return torch::mse_loss(embedding(indices), target); });
  EXPECT_LT(last, 0.25 * first) << "first " << first << ", last " << last;
}

TEST(QuantEmbedding, CloneKeepsQuantizer) {
  QuantEmbedding embedding(torch::nn::EmbeddingOptions(9, 4).padding_idx(1));
  embedding->set_qconfig(weight_only_int8_qconfig());
  embedding->set_mode(QuantMode::kObserve);
  auto indices = torch::tensor({1, 3, 8}, torch::kLong);
  embedding(indices);
  embedding->set_mode(QuantMode::kFakeQuant);
  auto copy = std::dynamic_pointer_cast<QuantEmbeddingImpl>(embedding->clone());
  ASSERT_TRUE(copy);
  ASSERT_FALSE(copy->weight_quantizer.is_empty());
  EXPECT_NE(copy->weight_quantizer.ptr().get(), embedding->weight_quantizer.ptr().get());
  EXPECT_TRUE(torch::equal(copy->weight_quantizer->scale, embedding->weight_quantizer->scale));
  EXPECT_TRUE(torch::equal(copy->weight, embedding->weight));
  EXPECT_TRUE(torch::equal(copy->forward(indices), embedding(indices)));
}

TEST(QuantEmbedding, BadIndicesAndConfigsAreClearErrors) {
  QuantEmbedding embedding(10, 4);
  auto message = error_message([&] { embedding(torch::tensor({0, 10}, torch::kLong)); });
  EXPECT_TRUE(contains(message, "QuantEmbedding(num_embeddings=10, embedding_dim=4)")) << message;
  EXPECT_TRUE(contains(message, "[0, 10)")) << message;
  EXPECT_TRUE(contains(message, "[0, 10]")) << message;
  EXPECT_THROW(embedding(torch::tensor({-1}, torch::kLong)), c10::IndexError);
  message = error_message([&] { embedding(torch::zeros({3})); });
  EXPECT_TRUE(contains(message, "Long or Int")) << message;
  message = error_message([&] { embedding->set_qconfig(axis1_weight_qconfig()); });
  EXPECT_TRUE(contains(message, "embedding row")) << message;
  EXPECT_FALSE(embedding->qconfig().has_value()) << "a rejected QConfig changes nothing";
  EXPECT_TRUE(embedding->named_children().is_empty());
  message = error_message([&] { QuantEmbedding(torch::nn::EmbeddingOptions(10, 4).padding_idx(10)); });
  EXPECT_TRUE(contains(message, "padding_idx")) << message;

  QuantEmbedding sparse(torch::nn::EmbeddingOptions(10, 4).sparse(true));
  sparse->set_qconfig(weight_only_int8_qconfig());
  EXPECT_THROW(sparse->set_mode(QuantMode::kFakeQuant), c10::NotImplementedError);
  EXPECT_EQ(sparse->mode(), QuantMode::kFloat);
}

// ------------------------------------------------------------------------ QuantStub, DeQuantStub

TEST(QuantStub, ModesAreIdentityObserveAndQdq) {
  torch::manual_seed(41);
  QuantStub stub;
  auto x = torch::randn({5, 17}) * 2;
  EXPECT_TRUE(stub(x).is_same(x)) << "float mode returns its input";
  stub->set_qconfig(min_max_qconfig());
  EXPECT_TRUE(stub->named_children().contains("input_quantizer"));
  EXPECT_FALSE(stub->named_children().contains("weight_quantizer"));
  stub->set_mode(QuantMode::kObserve);
  EXPECT_TRUE(torch::equal(stub(x), x));
  EXPECT_TRUE(torch::equal(stub->input_quantizer->observer->as<MinMaxObserverImpl>()->max_val,
                           x.max()));
  stub->set_mode(QuantMode::kFakeQuant);
  auto qp = stub->input_quantizer->qparams();
  auto x2 = torch::randn({3, 17});
  EXPECT_TRUE(torch::equal(stub(x2), fake_quantize(x2, qp)));
  EXPECT_FALSE(torch::equal(stub(x2), x2));
}

TEST(QuantStub, GradientsFlowThroughTheQdq) {
  torch::manual_seed(42);
  QuantStub stub;
  stub->set_qconfig(int8_qat_qconfig());
  stub->set_mode(QuantMode::kFakeQuant);
  auto x = torch::randn({33}).requires_grad_();
  auto target = torch::randn({33}) * 0.5;
  auto [first, last] = sgd({x}, 5.0, 30, [&] { return torch::mse_loss(stub(x), target); });
  EXPECT_LT(last, 0.25 * first) << "first " << first << ", last " << last;
}

TEST(QuantStub, CloneKeepsQuantizer) {
  QuantStub stub;
  stub->set_qconfig(int8_static_qconfig());
  stub->set_mode(QuantMode::kObserve);
  stub(torch::randn({65}));
  stub->set_mode(QuantMode::kFakeQuant);
  auto copy = std::dynamic_pointer_cast<QuantStubImpl>(stub->clone());
  ASSERT_TRUE(copy);
  ASSERT_FALSE(copy->input_quantizer.is_empty());
  EXPECT_NE(copy->input_quantizer.ptr().get(), stub->input_quantizer.ptr().get());
  auto x = torch::randn({9});
  EXPECT_TRUE(torch::equal(copy->forward(x), stub(x)));
}

TEST(DeQuantStub, IsIdentityInEveryMode) {
  DeQuantStub stub;
  auto x = torch::randn({3, 4});
  EXPECT_TRUE(stub(x).is_same(x));
  EXPECT_THROW(stub->set_mode(QuantMode::kObserve), c10::ValueError) << "needs a QConfig first";
  stub->set_qconfig(int8_static_qconfig());
  for (auto mode : {QuantMode::kObserve, QuantMode::kFakeQuant}) {
    stub->set_mode(mode);
    EXPECT_TRUE(stub(x).is_same(x));
  }
  EXPECT_TRUE(stub->named_children().is_empty());
  EXPECT_TRUE(std::dynamic_pointer_cast<DeQuantStubImpl>(stub->clone()));
}

// ----------------------------------------------------------------------------- all the modules

TEST(QuantModules, AreQuantizableWithTheirTypeNames) {
  QuantConv2d conv(3, 4, 3);
  QuantMatMul matmul;
  QuantEmbedding embedding(5, 2);
  QuantStub quant;
  DeQuantStub dequant;
  std::vector<std::pair<torch::nn::Module*, std::string>> modules = {
      {conv.get(), "QuantConv2d"},     {matmul.get(), "QuantMatMul"},
      {embedding.get(), "QuantEmbedding"}, {quant.get(), "QuantStub"},
      {dequant.get(), "DeQuantStub"}};
  for (auto& [module, name] : modules) {
    Quantizable* quantizable = as_quantizable(*module);
    ASSERT_NE(quantizable, nullptr) << name;
    EXPECT_EQ(quantizable->quant_type_name(), name);
    quantizable->set_qconfig(int8_static_qconfig());
    quantizable->set_mode(QuantMode::kObserve);
    EXPECT_EQ(quantizable->mode(), QuantMode::kObserve);
    std::ostringstream stream;
    stream << *module;
    EXPECT_TRUE(contains(stream.str(), "mode=observe")) << stream.str();
  }
}

// ------------------------------------------- the shared mode rules (QuantizableBase), per module

TEST(QuantizableBase, EveryModuleChecksModesByTheSameRulesAndNamesItself) {
  const std::vector<std::pair<std::shared_ptr<torch::nn::Module>, std::string>> modules = {
      {QuantLinear(3, 2).ptr(), "QuantLinear(in_features=3, out_features=2)"},
      {QuantConv2d(3, 4, 3).ptr(),
       "QuantConv2d(in_channels=3, out_channels=4, kernel_size=[3, 3])"},
      {QuantMatMul().ptr(), "QuantMatMul"},
      {QuantAttention().ptr(), "QuantAttention"},
      {QuantEmbedding(10, 4).ptr(), "QuantEmbedding(num_embeddings=10, embedding_dim=4)"},
      {QuantStub().ptr(), "QuantStub"}};
  for (const auto& [module, name] : modules) {
    Quantizable* quantizable = as_quantizable(*module);
    ASSERT_NE(quantizable, nullptr) << name;
    EXPECT_EQ(error_message([&] { quantizable->set_mode(QuantMode::kFakeQuant); }),
              name + ": set_mode(fake_quant) needs quantizers; call set_qconfig first");
    EXPECT_TRUE(contains(error_message([&] { quantizable->set_mode(QuantMode::kConverted); }),
                         name + ": set_mode(converted) is not possible"))
        << name;
    EXPECT_EQ(quantizable->mode(), QuantMode::kFloat) << name;
    EXPECT_FALSE(quantizable->qconfig().has_value()) << name;

    quantizable->set_qconfig(int8_static_qconfig());
    quantizable->set_mode(QuantMode::kObserve);
    // clone() copies the QConfig and the mode and builds the quantizers again.
    auto copy = module->clone();
    Quantizable* copied = as_quantizable(*copy);
    ASSERT_NE(copied, nullptr) << name;
    EXPECT_EQ(copied->mode(), QuantMode::kObserve) << name;
    EXPECT_TRUE(copied->qconfig().has_value()) << name;
    EXPECT_EQ(copy->named_children().keys(), module->named_children().keys()) << name;
  }
}

TEST(QuantizableBase, ModuleChecksRunBeforeAnythingChanges) {
  QuantEmbedding sparse(torch::nn::EmbeddingOptions(10, 4).sparse(true));
  sparse->set_qconfig(int8_static_qconfig());
  const std::string message = error_message([&] { sparse->set_mode(QuantMode::kFakeQuant); });
  EXPECT_TRUE(contains(message, "QuantEmbedding(num_embeddings=10, embedding_dim=4): sparse = "
                                "true is not supported in fake_quant mode"))
      << message;
  EXPECT_EQ(sparse->mode(), QuantMode::kFloat);

  QuantConv2d conv(3, 4, 3);
  EXPECT_THROW(conv->set_qconfig(axis1_weight_qconfig()), c10::ValueError);
  EXPECT_FALSE(conv->qconfig().has_value());
  EXPECT_TRUE(conv->named_children().is_empty());
}

TEST(QuantizableBase, AConvertedModuleCannotChangeModeAgain) {
  QuantLinear fc(3, 2);
  fc->set_qconfig(int8_static_qconfig());
  fc->set_mode(QuantMode::kObserve);
  fc(torch::randn({5, 3}));
  ASSERT_TRUE(fc->convert().converted);
  const std::string message = error_message([&] { fc->set_mode(QuantMode::kFloat); });
  EXPECT_TRUE(contains(message, "QuantLinear(in_features=3, out_features=2): is converted"))
      << message;
  EXPECT_EQ(fc->mode(), QuantMode::kConverted);
}
