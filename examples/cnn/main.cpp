// tquant CNN example: train a small CNN on real handwritten digits (scikit-learn's load_digits,
// exported by scripts/setup_cnn_assets.sh), then quantize it three ways and compare accuracy
// and latency:
//   float       the trained model (LibTorch FP32);
//   PTQ         fuse Conv2d + BatchNorm2d + ReLU, prepare, calibrate on training images:
//               fake-quant (simulated INT8), then convert (QuantConv2d on oneDNN INT8);
//   QAT         fuse, prepare_qat, fine-tune a few epochs through fake quantization, convert.
//
//   build/examples/cnn/tquant_cnn_demo [--data PATH] [--epochs N] [--threads N]
//
// Deterministic (fixed seeds); under a minute on 2 cores. docs/cnn.md explains each step.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "tquant/tquant.h"

#include "digits.h"

namespace {

using tquant_cnn::DigitSplit;

constexpr int64_t kTestCount = 500;
constexpr int64_t kBatch = 32;

struct Options {
  std::string data;
  int epochs = 12;
  int qat_epochs = 3;
  int threads = 2;
};

Options parse(int argc, char** argv) {
  Options options;
  const char* data_dir = std::getenv("TQUANT_DATA_DIR");
  options.data = data_dir != nullptr ? std::string(data_dir) + "/digits.safetensors"
                                     : std::string(TQUANT_CNN_DEFAULT_DATA);
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 < argc && flag == "--data") {
      options.data = argv[++i];
    } else if (i + 1 < argc && flag == "--epochs") {
      options.epochs = std::atoi(argv[++i]);
    } else if (i + 1 < argc && flag == "--threads") {
      options.threads = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--data PATH] [--epochs N] [--threads N]\n", argv[0]);
      std::exit(2);
    }
  }
  return options;
}

/// conv-bn-relu x3 (the second with stride 2: 8x8 -> 4x4), then a linear classifier.
torch::nn::Sequential make_cnn() {
  namespace nn = torch::nn;
  const auto conv = [](int64_t in, int64_t out, int64_t stride) {
    return nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1).stride(stride).bias(false));
  };
  return nn::Sequential(conv(1, 16, 1), nn::BatchNorm2d(16), nn::ReLU(),      // 0 1 2
                        conv(16, 32, 2), nn::BatchNorm2d(32), nn::ReLU(),     // 3 4 5
                        conv(32, 32, 1), nn::BatchNorm2d(32), nn::ReLU(),     // 6 7 8
                        nn::Flatten(), nn::Linear(32 * 4 * 4, 10));           // 9 10
}

const std::vector<std::vector<std::string>> kFuseGroups = {
    {"0", "1", "2"}, {"3", "4", "5"}, {"6", "7", "8"}};

void train(torch::nn::Sequential& model, const DigitSplit& data, int epochs, double lr) {
  model->train();
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(lr));
  const int64_t count = data.images.size(0);
  for (int epoch = 0; epoch < epochs; ++epoch) {
    const at::Tensor order = torch::randperm(count);
    double loss_sum = 0;
    int64_t steps = 0;
    for (int64_t start = 0; start < count; start += kBatch) {
      const at::Tensor index = order.slice(0, start, std::min(start + kBatch, count));
      optimizer.zero_grad();
      const at::Tensor loss = torch::nn::functional::cross_entropy(
          model->forward(data.images.index_select(0, index)), data.labels.index_select(0, index));
      loss.backward();
      optimizer.step();
      loss_sum += loss.item<double>();
      ++steps;
    }
    if (epoch == 0 || epoch + 1 == epochs) {
      std::printf("  epoch %2d/%d  mean training loss %.4f\n", epoch + 1, epochs,
                  loss_sum / static_cast<double>(steps));
    }
  }
  model->eval();
}

double accuracy(torch::nn::Sequential& model, const DigitSplit& data) {
  torch::NoGradGuard no_grad;
  const at::Tensor predicted = model->forward(data.images).argmax(1);
  return 100.0 * predicted.eq(data.labels).to(at::kDouble).mean().item<double>();
}

/// Median milliseconds of `reps` calls after two warm-up calls.
double median_ms(const std::function<void()>& run, int reps) {
  run();
  run();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                           start)
                     .count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Row {
  std::string variant;
  double accuracy = 0;
  double ms_test_set = 0;
  double ms_one = 0;
};

Row measure(const std::string& variant, torch::nn::Sequential& model, const DigitSplit& test) {
  torch::NoGradGuard no_grad;
  const at::Tensor one = test.images.slice(0, 0, 1);
  return {variant, accuracy(model, test),
          median_ms([&] { model->forward(test.images); }, 20),
          median_ms([&] { model->forward(one); }, 100)};
}

/// fuse reports each Conv2d + BatchNorm2d + ReLU group; after prepare the conv is a
/// QuantConv2d, which then takes the ReLU as oneDNN post-op when converted. (The ReLU module
/// stays in the Sequential; ReLU of a ReLU output changes nothing.)
void fuse_relus(torch::nn::Sequential& model, const tquant::FuseReport& fused) {
  const auto modules = model->named_modules();
  for (const auto& group : fused.groups) {
    if (group.relu) modules[group.names[0]]->as<tquant::QuantConv2dImpl>()->set_fused_relu(true);
  }
}

torch::nn::Sequential copy_of(const torch::nn::Sequential& model) {
  return torch::nn::Sequential(
      std::dynamic_pointer_cast<torch::nn::SequentialImpl>(model->clone()));
}

int run(const Options& options) {
  at::set_num_threads(options.threads);
  const tquant_cnn::Digits digits = tquant_cnn::load_digits(options.data, kTestCount);
  std::printf("digits: %lld training and %lld test images of 8x8 (%s)\n",
              static_cast<long long>(digits.train.images.size(0)),
              static_cast<long long>(digits.test.images.size(0)), options.data.c_str());

  torch::manual_seed(0);
  auto model = make_cnn();
  std::printf("1. training the float CNN (%d epochs)\n", options.epochs);
  train(model, digits.train, options.epochs, 3e-3);
  std::vector<Row> rows = {measure("float (FP32)", model, digits.test)};

  std::printf("2. PTQ: fuse, prepare, calibrate on 8 training batches\n");
  auto ptq = copy_of(model);
  ptq->eval();
  const tquant::FuseReport fused = tquant::fuse(*ptq, kFuseGroups);
  tquant::prepare(*ptq, tquant::QConfigMapping(tquant::int8_static_qconfig()));
  fuse_relus(ptq, fused);
  {
    torch::NoGradGuard no_grad;
    tquant::calibrate(*ptq, [&] {
      for (int64_t b = 0; b < 8; ++b) ptq->forward(digits.train.images.slice(0, b * 64, b * 64 + 64));
    });
  }
  rows.push_back(measure("PTQ fake-quant", ptq, digits.test));
  const tquant::ConvertReport ptq_report = tquant::convert(*ptq);
  std::printf("%s", ptq_report.to_string().c_str());
  rows.push_back(measure("PTQ converted INT8", ptq, digits.test));

  std::printf("3. QAT: fuse, prepare_qat, fine-tune %d epochs, convert\n", options.qat_epochs);
  auto qat = copy_of(model);
  qat->eval();
  const tquant::FuseReport qat_fused = tquant::fuse(*qat, kFuseGroups);
  tquant::prepare_qat(*qat, tquant::QConfigMapping(tquant::int8_qat_qconfig()));
  fuse_relus(qat, qat_fused);
  train(qat, digits.train, options.qat_epochs, 3e-4);
  tquant::enable_observers(*qat, false);
  rows.push_back(measure("QAT fake-quant", qat, digits.test));
  const tquant::ConvertReport qat_report = tquant::convert(*qat);
  std::printf("convert (QAT): %zu converted, %zu not\n", qat_report.converted.size(),
              qat_report.unconverted.size());
  rows.push_back(measure("QAT converted INT8", qat, digits.test));

  std::printf("\n%d intra-op threads; latency = median of 20 (test set) / 100 (one image) calls\n",
              options.threads);
  std::printf("%-20s %10s %18s %14s\n", "variant", "test acc", "ms / 500 images", "ms / image");
  for (const Row& row : rows) {
    std::printf("%-20s %9.1f%% %18.3f %14.3f\n", row.variant.c_str(), row.accuracy,
                row.ms_test_set, row.ms_one);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  try {
    return run(options);
  } catch (const c10::Error& error) {
    std::fprintf(stderr, "%s\n", error.what_without_backtrace());
    return 1;
  }
}
