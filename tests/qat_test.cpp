#include <gtest/gtest.h>

#include <cstdio>
#include <tuple>
#include <utility>

#include <torch/torch.h>

#include "tquant/fake_quantize.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/observer.h"
#include "tquant/qconfig.h"
#include "tquant/quantize.h"

// End-to-end QAT experiment (DESIGN.md, Testing: "QAT lowers the loss of a fake-quantized
// model"): train an MLP in float, quantize it to int4 by PTQ, fine-tune it through the
// fake-quant modules, and compare held-out losses.

using namespace tquant;

namespace {

constexpr int64_t kInputs = 8;
constexpr int64_t kHidden = 32;
constexpr int64_t kTrainSize = 512;
constexpr int64_t kTestSize = 257;

struct MlpImpl : torch::nn::Module {
  MlpImpl() {
    fc1 = register_module("fc1", QuantLinear(kInputs, kHidden));
    fc2 = register_module("fc2", QuantLinear(kHidden, kHidden));
    fc3 = register_module("fc3", QuantLinear(kHidden, 1));
  }
  at::Tensor forward(const at::Tensor& x) {
    return fc3(torch::relu(fc2(torch::relu(fc1(x)))));
  }
  QuantLinear fc1{nullptr};
  QuantLinear fc2{nullptr};
  QuantLinear fc3{nullptr};
};
TORCH_MODULE(Mlp);

/// y = sin(x a) + 0.5 cos(x b): smooth, non-linear, noise-free regression.
struct Task {
  at::Tensor a;
  at::Tensor b;
  Task() : a(torch::randn({kInputs, 1}) * 0.5), b(torch::randn({kInputs, 1}) * 0.5) {}
  std::pair<at::Tensor, at::Tensor> sample(int64_t n) const {
    at::Tensor x = torch::randn({n, kInputs});
    return {x, torch::sin(x.matmul(a)) + 0.5 * torch::cos(x.matmul(b))};
  }
};

/// Per-tensor symmetric int4 for activations and weights, from the existing factories:
/// scale = amax / 7.5 over [-8, 7] (MinMaxObserver, full range). Coarse enough that PTQ hurts.
QConfig int4_per_tensor_qconfig() {
  const auto factory = fake_quantize_factory(FakeQuantizeOptions(
      observer_factory<MinMaxObserver>(MinMaxObserverOptions(
          QuantSpec().dtype(QuantDtype::kInt4)))));
  return QConfig{factory, factory};
}

void train(Mlp& net, const at::Tensor& x, const at::Tensor& y, int64_t steps, double lr) {
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(lr));
  net->train();
  for (int64_t step = 0; step < steps; ++step) {
    optimizer.zero_grad();
    torch::mse_loss(net->forward(x), y).backward();
    optimizer.step();
  }
  net->eval();
}

double held_out_loss(Mlp& net, const at::Tensor& x, const at::Tensor& y) {
  torch::NoGradGuard no_grad;
  return torch::mse_loss(net->forward(x), y).item<double>();
}

}  // namespace

TEST(Qat, FineTuningThroughFakeQuantBeatsInt4Ptq) {
  // Tiny GEMMs: one thread avoids oversubscribing a loaded machine, and fixes the summation
  // order.
  torch::set_num_threads(1);
  torch::manual_seed(0);
  const Task task;
  at::Tensor x_train, y_train, x_test, y_test;
  std::tie(x_train, y_train) = task.sample(kTrainSize);
  std::tie(x_test, y_test) = task.sample(kTestSize);

  Mlp net;
  train(net, x_train, y_train, /*steps=*/600, /*lr=*/1e-2);
  const double loss_float = held_out_loss(net, x_test, y_test);

  // PTQ: calibrate on the training inputs, ranges frozen.
  prepare(*net, QConfigMapping(int4_per_tensor_qconfig()));
  {
    torch::NoGradGuard no_grad;
    calibrate(*net, [&] { net->forward(x_train); });
  }
  const double loss_ptq = held_out_loss(net, x_test, y_test);
  const at::Tensor input_scale = net->fc2->input_quantizer->scale.clone();

  // QAT: the calibrated model stays in fake-quant mode; train through the straight-through
  // gradients with the ranges frozen (NVIDIA's recipe: calibrate, then fine-tune).
  train(net, x_train, y_train, /*steps=*/400, /*lr=*/3e-3);
  const double loss_qat = held_out_loss(net, x_test, y_test);

  std::printf("[ QAT      ] held-out MSE: float %.5f, int4 PTQ %.5f, int4 QAT %.5f\n",
              loss_float, loss_ptq, loss_qat);
  EXPECT_EQ(net->fc1->mode(), QuantMode::kFakeQuant);
  EXPECT_TRUE(torch::equal(net->fc2->input_quantizer->scale, input_scale));  // still frozen
  EXPECT_GT(loss_ptq, 2.0 * loss_float);  // int4 PTQ visibly hurts
  EXPECT_LT(loss_qat, 0.8 * loss_ptq);    // and QAT wins a clear part of it back
}
