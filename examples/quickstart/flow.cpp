// The whole tquant flow on a small classifier: train in float, then PTQ (prepare, calibrate,
// convert to INT8), QAT (prepare_qat, train through fake quantization, convert), and a save /
// load round trip of the converted model. Called from main.cpp.

#include "flow.h"

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include <torch/torch.h>

#include "tquant/tquant.h"

namespace {

constexpr int64_t kIn = 32;
constexpr int64_t kHidden = 128;
constexpr int64_t kClasses = 4;
constexpr int64_t kBatch = 64;

/// The user's model: tquant modules in member fields (parents call them directly).
struct ClassifierImpl : torch::nn::Module {
  ClassifierImpl()
      : fc1(register_module("fc1", tquant::QuantLinear(kIn, kHidden))),
        fc2(register_module("fc2", tquant::QuantLinear(kHidden, kHidden))),
        head(register_module("head", tquant::QuantLinear(kHidden, kClasses))) {}
  at::Tensor forward(const at::Tensor& x) {
    return head(torch::relu(fc2(torch::relu(fc1(x)))));
  }
  tquant::QuantLinear fc1, fc2, head;
};
TORCH_MODULE(Classifier);

/// A fixed random "teacher" labels the data: the task is learnable but not trivial.
struct Task {
  at::Tensor teacher = torch::randn({kIn, kClasses});
  std::pair<at::Tensor, at::Tensor> batch(int64_t rows = kBatch) const {
    at::Tensor x = torch::randn({rows, kIn});
    at::Tensor y = (torch::tanh(x) * x).matmul(teacher).argmax(1);
    return {x, y};
  }
};

void train(Classifier& model, const Task& task, int steps, double lr) {
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(lr));
  model->train();
  for (int step = 0; step < steps; ++step) {
    auto [x, y] = task.batch();
    optimizer.zero_grad();
    torch::nn::functional::cross_entropy(model(x), y).backward();
    optimizer.step();
  }
  model->eval();
}

// Test samples whose predicted class differs between two runs of a model (simulated and
// converted): INT8 sums are exact, so only float rounding may flip a near-tie.
int64_t prediction_changes(const at::Tensor& logits_a, const at::Tensor& logits_b) {
  return logits_a.argmax(1).ne(logits_b.argmax(1)).sum().item<int64_t>();
}

at::Tensor logits(Classifier& model, const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  return model(x);
}

double accuracy(Classifier& model, const std::pair<at::Tensor, at::Tensor>& test) {
  torch::NoGradGuard no_grad;
  return model(test.first).argmax(1).eq(test.second).to(at::kFloat).mean().item<double>() * 100;
}

}  // namespace

bool run_full_flow() {
  torch::AutoGradMode enable_grad(true);  // training below, whatever the caller's mode
  torch::manual_seed(0);
  const Task task;
  const auto test = task.batch(4096);
  const std::string dir = std::filesystem::temp_directory_path().string();
  const std::string float_file = dir + "/tquant_quickstart_float.safetensors";
  const std::string int8_file = dir + "/tquant_quickstart_int8.safetensors";

  std::printf("\n== The full flow on a 3-layer classifier (%lld -> %lld -> %lld -> %lld) ==\n",
              static_cast<long long>(kIn), static_cast<long long>(kHidden),
              static_cast<long long>(kHidden), static_cast<long long>(kClasses));
  Classifier model;
  train(model, task, 400, 3e-3);
  tquant::save_state(*model, float_file);
  const double float_accuracy = accuracy(model, test);
  std::printf("float accuracy: %.2f %%\n\n", float_accuracy);

  // PTQ: observers in, calibrate on a few batches, simulate, convert to INT8.
  std::cout << tquant::prepare(*model, tquant::QConfigMapping(tquant::int8_static_qconfig()))
            << '\n';
  {
    torch::NoGradGuard no_grad;
    std::cout << tquant::calibrate(*model, [&](tquant::CalibrationProgress& progress) {
      for (int i = 0; i < 16; ++i) {
        model(task.batch().first);
        progress.step();
      }
    }) << '\n';
  }
  const double ptq_simulated = accuracy(model, test);
  const at::Tensor ptq_simulated_logits = logits(model, test.first);
  std::cout << tquant::convert(*model) << '\n';
  const double ptq_int8 = accuracy(model, test);
  const int64_t ptq_changes = prediction_changes(ptq_simulated_logits, logits(model, test.first));

  // QAT: the float model again, fake quantization in the training loop, then convert.
  Classifier qat;
  tquant::load_state(*qat, float_file);
  tquant::prepare_qat(*qat, tquant::QConfigMapping(tquant::int8_qat_qconfig()));
  train(qat, task, 100, 3e-4);
  const double qat_simulated = accuracy(qat, test);
  const at::Tensor qat_simulated_logits = logits(qat, test.first);
  tquant::convert(*qat);
  const double qat_int8 = accuracy(qat, test);
  const int64_t qat_changes = prediction_changes(qat_simulated_logits, logits(qat, test.first));

  std::printf("%-26s %8s\n", "model", "accuracy");
  std::printf("%-26s %7.2f%%\n", "float", float_accuracy);
  std::printf("%-26s %7.2f%%\n", "PTQ fake-quant (simulated)", ptq_simulated);
  std::printf("%-26s %7.2f%%\n", "PTQ INT8 (converted)", ptq_int8);
  std::printf("%-26s %7.2f%%\n", "QAT fake-quant (simulated)", qat_simulated);
  std::printf("%-26s %7.2f%%\n", "QAT INT8 (converted)", qat_int8);
  const int64_t allowed = test.first.size(0) / 1000;  // 0.1 %: near-ties flipped by rounding
  const bool converted_ok = ptq_changes <= allowed && qat_changes <= allowed;
  std::printf("converted equals simulation: %s (predictions changed: PTQ %lld, QAT %lld of %lld;"
              " allowed %lld)\n",
              converted_ok ? "yes" : "NO", static_cast<long long>(ptq_changes),
              static_cast<long long>(qat_changes), static_cast<long long>(test.first.size(0)),
              static_cast<long long>(allowed));

  // Save the INT8 model; a fresh float model of the same structure loads it and runs INT8.
  tquant::save_state(*model, int8_file);
  Classifier served;
  tquant::load_state(*served, int8_file);
  torch::NoGradGuard no_grad;
  const bool same = torch::equal(served(test.first), model(test.first));
  std::printf("\nsaved INT8 model: %.1f KiB (float: %.1f KiB); reloaded outputs bit-identical: %s\n",
              std::filesystem::file_size(int8_file) / 1024.0,
              std::filesystem::file_size(float_file) / 1024.0, same ? "yes" : "NO");
  return converted_ok && same;
}
