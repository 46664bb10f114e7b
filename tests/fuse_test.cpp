#include <gtest/gtest.h>
#include "test_util.h"

#include "tquant/fuse.h"

#include <sstream>
#include <string>

#include <torch/torch.h>

#include "tquant/nn/quant_conv2d.h"
#include "tquant/quantize.h"

using namespace tquant;
namespace nn = torch::nn;

using tquant::test::error_message;

namespace {

// Folding reorders float32 products (w * s instead of (conv(x) - mean) * s): a few ulps of
// the outputs, whose magnitude here is O(10).
constexpr double kFoldRtol = 1e-5;
constexpr double kFoldAtol = 1e-5;

/// Non-trivial eval statistics and affine parameters, so folding has something to do.
void randomize(nn::BatchNorm2dImpl& bn) {
  torch::NoGradGuard no_grad;
  const int64_t c = bn.options.num_features();
  bn.running_mean.copy_(torch::randn({c}));
  bn.running_var.copy_(torch::rand({c}) * 2 + 0.1);
  if (bn.weight.defined()) bn.weight.copy_(torch::randn({c}));
  if (bn.bias.defined()) bn.bias.copy_(torch::randn({c}));
}

/// Conv, BatchNorm and ReLU held in member fields: the parent calls them directly.
struct MemberNetImpl : nn::Module {
  MemberNetImpl() {
    conv = register_module("conv", QuantConv2d(nn::Conv2dOptions(3, 17, 3).padding(1).bias(false)));
    bn = register_module("bn", nn::BatchNorm2d(17));
    relu = register_module("relu", nn::ReLU());
    head = register_module("head", nn::Conv2d(nn::Conv2dOptions(17, 5, 1)));
    head_bn = register_module("head_bn", nn::BatchNorm2d(nn::BatchNorm2dOptions(5).affine(false)));
  }
  at::Tensor forward(const at::Tensor& x) { return head_bn(head(relu(bn(conv(x))))); }
  QuantConv2d conv{nullptr};
  nn::BatchNorm2d bn{nullptr};
  nn::ReLU relu{nullptr};
  nn::Conv2d head{nullptr};
  nn::BatchNorm2d head_bn{nullptr};
};
TORCH_MODULE(MemberNet);

nn::Sequential make_features() {
  nn::Sequential features(
      nn::Conv2d(nn::Conv2dOptions(3, 9, 3).padding(1).bias(false)), nn::BatchNorm2d(9),
      nn::ReLU(), nn::Conv2d(nn::Conv2dOptions(9, 33, 3).stride(2).groups(3)),
      nn::BatchNorm2d(33));
  for (size_t i : {1, 4}) randomize(*features[i]->as<nn::BatchNorm2d>());
  features->eval();
  return features;
}

}  // namespace

TEST(Fuse, SequentialGroupsMatchEvalOutputAndBecomeIdentity) {
  torch::manual_seed(0);
  nn::Sequential features = make_features();
  const nn::Module* conv0 = features->ptr(0).get();
  const at::Tensor x = torch::randn({2, 3, 13, 11});
  const at::Tensor expected = features->forward(x);

  const FuseReport report = fuse(*features, {{"0", "1", "2"}, {"3", "4"}});
  ASSERT_EQ(report.groups.size(), 2U);
  EXPECT_TRUE(report.groups[0].bias_added);
  EXPECT_FALSE(report.groups[1].bias_added);
  EXPECT_TRUE(report.groups[0].relu);
  EXPECT_EQ(report.groups[0].conv_type, "torch::nn::Conv2d");
  EXPECT_EQ(report.find_group("2"), &report.groups[0]);  // by any member: conv, bn or relu
  EXPECT_EQ(report.find_group("3"), &report.groups[1]);
  EXPECT_EQ(report.find_group("5"), nullptr);
  for (const auto& group : report.groups) {
    EXPECT_EQ(group.batch_norm, BatchNormRemoval::kReplacedByIdentity);
  }
  // Same conv object; the BatchNorm entries are Identity in the list and in the registry.
  EXPECT_EQ(features->ptr(0).get(), conv0);
  for (size_t i : {1, 4}) {
    EXPECT_NE(std::dynamic_pointer_cast<nn::IdentityImpl>(features->ptr(i)), nullptr);
    EXPECT_NE(std::dynamic_pointer_cast<nn::IdentityImpl>(
                  features->named_children()[std::to_string(i)]),
              nullptr);
  }
  EXPECT_TRUE(features[0]->as<nn::Conv2d>()->options.bias());
  EXPECT_TRUE(features->named_parameters().contains("0.bias"));

  const at::Tensor actual = features->forward(x);
  EXPECT_TRUE(torch::allclose(actual, expected, kFoldRtol, kFoldAtol))
      << (actual - expected).abs().max().item<double>();

  std::ostringstream printed;
  printed << report;
  EXPECT_NE(printed.str().find("2 group(s) fused (2 batch norm replaced by Identity"),
            std::string::npos)
      << printed.str();
}

TEST(Fuse, MemberFieldsFoldInPlaceWithExactIdentity) {
  torch::manual_seed(1);
  MemberNet net;
  randomize(*net->bn);
  randomize(*net->head_bn);
  net->eval();
  const at::Tensor x = torch::randn({3, 3, 7, 9});
  const at::Tensor expected = net->forward(x);
  QuantConv2dImpl* conv_before = net->conv.get();

  const FuseReport report = fuse(*net, {{"conv", "bn", "relu"}, {"head", "head_bn"}});
  ASSERT_EQ(report.groups.size(), 2U);
  EXPECT_EQ(report.groups[0].conv_type, "QuantConv2d");
  EXPECT_TRUE(report.groups[0].bias_added);
  for (const auto& group : report.groups) {
    EXPECT_EQ(group.batch_norm, BatchNormRemoval::kIdentityInPlace);
  }
  EXPECT_EQ(net->conv.get(), conv_before);
  EXPECT_TRUE(net->conv->options.bias());
  EXPECT_TRUE(net->named_parameters().contains("conv.bias"));
  EXPECT_FALSE(net->bn->weight.requires_grad());

  const at::Tensor actual = net->forward(x);
  EXPECT_TRUE(torch::allclose(actual, expected, kFoldRtol, kFoldAtol))
      << (actual - expected).abs().max().item<double>();
  // The in-place BatchNorm is an exact identity, not merely close to one.
  const at::Tensor y = torch::randn({2, 17, 5, 5}) * 1e3;
  EXPECT_TRUE(torch::equal(net->bn(y), y));

  // The added bias survives clone() (options.bias() is true, so reset() registers it).
  const at::Tensor z = torch::randn({2, 3, 6, 6});
  auto conv_copy = std::dynamic_pointer_cast<QuantConv2dImpl>(net->conv->clone());
  ASSERT_NE(conv_copy, nullptr);
  ASSERT_TRUE(conv_copy->bias.defined());
  EXPECT_TRUE(torch::equal(conv_copy->forward(z), net->conv(z)));
  auto head_copy = std::dynamic_pointer_cast<nn::Conv2dImpl>(net->head->clone());
  ASSERT_NE(head_copy, nullptr);
  EXPECT_TRUE(torch::equal(head_copy->forward(y), net->head(y)));
}

TEST(Fuse, FusedQuantConvCanBePreparedAndCalibrated) {
  torch::manual_seed(2);
  MemberNet net;
  randomize(*net->bn);
  net->eval();
  fuse(*net, {{"conv", "bn"}});
  prepare(*net, QConfigMapping(int8_static_qconfig()));
  const at::Tensor x = torch::randn({4, 3, 8, 8});
  torch::NoGradGuard no_grad;
  const CalibrationReport report = calibrate(*net, [&] { net->forward(x); });
  const QuantizerReport* weight = report.find_quantizer("conv.weight_quantizer");
  ASSERT_NE(weight, nullptr);
  EXPECT_TRUE(weight->calibrated);
  // The weight range is the folded weight's.
  const double folded_amax = net->conv->weight.abs().amax({1, 2, 3}).max().item<double>();
  EXPECT_NEAR(weight->amax_max, folded_amax, 1e-6 * folded_amax);
}

TEST(Fuse, SequentialEntryReferencedElsewhereBecomesIdentityInPlace) {
  torch::manual_seed(3);
  nn::Sequential features = make_features();
  nn::BatchNorm2d kept(std::dynamic_pointer_cast<nn::BatchNorm2dImpl>(features->ptr(1)));  // 2nd owner
  const at::Tensor x = torch::randn({1, 3, 5, 5});
  const at::Tensor expected = features->forward(x);
  const FuseReport report = fuse(*features, {{"0", "1"}});
  EXPECT_EQ(report.groups[0].batch_norm, BatchNormRemoval::kIdentityInPlace);
  EXPECT_EQ(features->ptr(1).get(), kept.get());
  EXPECT_TRUE(torch::allclose(features->forward(x), expected, kFoldRtol, kFoldAtol));
}

TEST(Fuse, ErrorsNameTheModuleAndLeaveTheModelUnchanged) {
  torch::manual_seed(4);
  nn::Sequential features = make_features();
  const at::Tensor weight = features[0]->as<nn::Conv2d>()->weight.clone();

  EXPECT_NE(error_message([&] { fuse(*features, {{"0", "9"}}); })
                .find("expected a module named '9' in the model"),
            std::string::npos);
  EXPECT_NE(error_message([&] { fuse(*features, {{"1", "0"}}); })
                .find("expected '1' (first) to be a tquant::QuantConv2d or torch::nn::Conv2d, "
                      "got torch::nn::BatchNorm2d"),
            std::string::npos);
  EXPECT_NE(error_message([&] { fuse(*features, {{"0", "4"}}); })
                .find("expected '4' to have num_features = 9 (out_channels of '0'), got 33"),
            std::string::npos);
  EXPECT_NE(error_message([&] { fuse(*features, {{"0", "2"}}); })
                .find("expected '2' (second) to be a torch::nn::BatchNorm2d, got torch::nn::ReLU"),
            std::string::npos);
  EXPECT_NE(error_message([&] { fuse(*features, {{"0", "1", "3"}}); })
                .find("expected '3' (third) to be a torch::nn::ReLU, got torch::nn::Conv2d"),
            std::string::npos);
  EXPECT_NE(error_message([&] { fuse(*features, {{"0"}}); })
                .find("expected 2 or 3 names (conv, batch norm[, relu]), got 1"),
            std::string::npos);
  EXPECT_NE(error_message([&] { fuse(*features, {{"0", "1"}, {"0", "1"}}); })
                .find("expected each module in one group only"),
            std::string::npos);

  // Not consecutive in the Sequential: conv 3 runs after batch norm 1.
  nn::Sequential shuffled(nn::Conv2d(nn::Conv2dOptions(4, 4, 1)), nn::ReLU(),
                          nn::BatchNorm2d(4));
  shuffled->eval();
  EXPECT_NE(error_message([&] { fuse(*shuffled, {{"0", "2"}}); })
                .find("expected '2' to follow '0' directly in their Sequential, got positions 0 "
                      "and 2"),
            std::string::npos);

  // Training mode: the running statistics are not what the BatchNorm computes.
  features->train();
  EXPECT_NE(error_message([&] { fuse(*features, {{"0", "1"}}); })
                .find("expected '1' in eval mode"),
            std::string::npos);
  features->eval();

  // A later bad group stops the whole call before the first group is folded.
  EXPECT_NE(error_message([&] { fuse(*features, {{"0", "1"}, {"3", "9"}}); }), "");
  EXPECT_TRUE(torch::equal(features[0]->as<nn::Conv2d>()->weight, weight));
  EXPECT_NE(std::dynamic_pointer_cast<nn::BatchNorm2dImpl>(features->ptr(1)), nullptr);
}

TEST(Fuse, RejectsPreparedConvAndBatchNormWithoutRunningStats) {
  MemberNet net;
  net->eval();
  prepare(*net, QConfigMapping(int8_static_qconfig()));
  EXPECT_NE(error_message([&] { fuse(*net, {{"conv", "bn"}}); })
                .find("expected 'conv' to be a QuantConv2d without a QConfig (fuse before "
                      "prepare"),
            std::string::npos);

  nn::Sequential plain(nn::Conv2d(nn::Conv2dOptions(2, 3, 1)),
                       nn::BatchNorm2d(nn::BatchNorm2dOptions(3).track_running_stats(false)));
  plain->eval();
  EXPECT_NE(error_message([&] { fuse(*plain, {{"0", "1"}}); })
                .find("expected '1' to track running statistics"),
            std::string::npos);
}
