// A ResNet basic block (conv3x3-bn-relu-conv3x3-bn, + identity, relu) at batch 8, 64 channels,
// 56x56, converted to INT8 (oneDNN's INT8 convolution through QuantConv2d) against LibTorch's
// FP32 (at::conv2d, oneDNN fp32 on CPU):
//   fp32             the block as trained: conv, batch norm, relu (NCHW input);
//   fp32 bn-folded   batch norm folded into the convs (tquant::fuse), as one serves FP32;
//   fp32 bn-folded cl the same with channels-last input (oneDNN's native layout);
//   int8 converted   fuse, calibrate, convert; conv1 carries the ReLU as oneDNN post-op
//                    (NCHW input, and "cl" with channels-last input, as inside a network whose
//                    convs all run on oneDNN).
// Prints the median and minimum of interleaved repetitions and each FP32 time / INT8 time.
//
//   tquant_conv2d_bench [--reps N] [--threads N] [--batch N]
//
// Not a test: run it by hand on a quiet machine (docs/backends.md, docs/benchmarks.md).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "tquant/fuse.h"
#include "tquant/nn/quant_conv2d.h"
#include "tquant/qconfig.h"
#include "tquant/quantize.h"

namespace {

constexpr int64_t kChannels = 64;
constexpr int64_t kSide = 56;

/// The basic block of ResNet-18/34 (stride 1, identity shortcut).
struct BasicBlockImpl : torch::nn::Cloneable<BasicBlockImpl> {
  BasicBlockImpl() { reset(); }
  void reset() override {
    const auto conv3x3 = torch::nn::Conv2dOptions(kChannels, kChannels, 3).padding(1).bias(false);
    conv1 = register_module("conv1", tquant::QuantConv2d(conv3x3));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(kChannels));
    conv2 = register_module("conv2", tquant::QuantConv2d(conv3x3));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(kChannels));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = bn_folded ? conv1(x) : bn1(conv1(x));
    if (!conv1->fused_relu()) y = torch::relu(y);
    y = bn_folded ? conv2(y) : bn2(conv2(y));
    return torch::relu(y + x);
  }
  /// After tquant::fuse the batch norms are exact identities; skip their pass.
  bool bn_folded = false;
  tquant::QuantConv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
};
TORCH_MODULE(BasicBlock);

int int_flag(int argc, char** argv, int& i) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "%s needs a value\n", argv[i]);
    std::exit(2);
  }
  return std::atoi(argv[++i]);
}

/// Random but trained-looking batch-norm statistics, so folding matters.
void randomize_batch_norm(torch::nn::BatchNorm2d& bn) {
  torch::NoGradGuard no_grad;
  bn->weight.uniform_(0.5, 1.5);
  bn->bias.uniform_(-0.2, 0.2);
  bn->running_mean.uniform_(-0.3, 0.3);
  bn->running_var.uniform_(0.5, 2.0);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 15, threads = 2, batch = 8;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--reps") {
      reps = int_flag(argc, argv, i);
    } else if (flag == "--threads") {
      threads = int_flag(argc, argv, i);
    } else if (flag == "--batch") {
      batch = int_flag(argc, argv, i);
    } else {
      std::fprintf(stderr, "usage: %s [--reps N] [--threads N] [--batch N]\n", argv[0]);
      return 2;
    }
  }
  at::set_num_threads(threads);
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;

  BasicBlock fp32;
  randomize_batch_norm(fp32->bn1);
  randomize_batch_norm(fp32->bn2);
  fp32->eval();
  auto folded = std::dynamic_pointer_cast<BasicBlockImpl>(fp32->clone());
  tquant::fuse(*folded, {{"conv1", "bn1"}, {"conv2", "bn2"}});
  folded->bn_folded = true;
  auto int8 = std::dynamic_pointer_cast<BasicBlockImpl>(folded->clone());
  int8->conv1->set_fused_relu(true);
  tquant::prepare(*int8, tquant::QConfigMapping(tquant::int8_static_qconfig()));
  tquant::calibrate(*int8, [&] {
    for (int i = 0; i < 4; ++i) int8->forward(torch::randn({batch, kChannels, kSide, kSide}));
  });
  const tquant::ConvertReport report = tquant::convert(*int8);
  std::printf("%s", report.to_string().c_str());

  const at::Tensor x = torch::randn({batch, kChannels, kSide, kSide});
  const at::Tensor x_cl = x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor reference = folded->forward(x);
  const double error = (int8->forward(x) - reference).abs().max().item<double>() /
                       reference.abs().max().item<double>();
  std::printf("int8 vs fp32 bn-folded: max |error| / max |fp32| = %.4f\n", error);

  const std::vector<std::string> names = {"fp32", "fp32 bn-folded", "fp32 bn-folded cl",
                                          "int8 converted cl", "int8 converted"};
  const std::vector<std::function<at::Tensor()>> runs = {
      [&] { return fp32->forward(x); }, [&] { return folded->forward(x); },
      [&] { return folded->forward(x_cl); }, [&] { return int8->forward(x_cl); },
      [&] { return int8->forward(x); }};
  std::vector<std::vector<double>> ms(runs.size());
  for (int rep = -2; rep < reps; ++rep) {  // two warm-up rounds
    for (size_t j = 0; j < runs.size(); ++j) {
      const auto start = std::chrono::steady_clock::now();
      runs[j]();
      const std::chrono::duration<double, std::milli> took =
          std::chrono::steady_clock::now() - start;
      if (rep >= 0) ms[j].push_back(took.count());
    }
  }
  for (auto& v : ms) std::sort(v.begin(), v.end());
  const double int8_median = ms.back()[ms.back().size() / 2];
  std::printf("basic block, batch %d, %lldx%lldx%lld, %d threads, %d interleaved reps\n", batch,
              static_cast<long long>(kChannels), static_cast<long long>(kSide),
              static_cast<long long>(kSide), threads, reps);
  std::printf("%-20s %10s %10s %14s\n", "variant", "median ms", "min ms", "vs int8 (med)");
  for (size_t j = 0; j < runs.size(); ++j) {
    const double median = ms[j][ms[j].size() / 2];
    std::printf("%-20s %10.2f %10.2f %13.2fx\n", names[j].c_str(), median, ms[j].front(),
                median / int8_median);
  }
  return 0;
}
