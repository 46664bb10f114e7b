// Spellings of tquant 0.1 that 0.2 renamed: they must still build, each with a deprecation
// warning ("use <new name>"), for one release. tests/package_test.sh checks the warnings.
// Built, not run.

#include <iostream>

#include <torch/torch.h>

#include "tquant/tquant.h"

struct NetImpl : torch::nn::Module {
  NetImpl() { fc = register_module("fc", tquant::QuantLinear(8, 4)); }
  at::Tensor forward(const at::Tensor& x) { return fc(x); }
  tquant::QuantLinear fc{nullptr};
};
TORCH_MODULE(Net);

int world(const tquant::DistributedGroup& group) { return group.size(); }
const tquant::GroupSensitivity* group_of(const tquant::SensitivityReport& report) {
  return report.find("fc");
}

int main() {
  Net net;
  tquant::prepare_qat(*net, tquant::QConfigMapping(tquant::int8_lsq_qat_qconfig()));
  const tquant::CalibrationReport report =
      tquant::calibrate(*net, [&] { net->forward(torch::randn({2, 8})); });
  if (report.find("fc.input_quantizer") == nullptr) return 1;
  std::cout << net->fc->input_quantizer->learnable() << "\n";
  tquant::freeze_observers(*net);
  tquant::set_quantizers_enabled(*net, "fc", true);
  net->fc->set_smoothing(torch::ones({8}));
  std::cout << net->fc->smoothing().sizes() << "\n";
  tquant::QConfig w4a8 = tquant::w4a8_lsq_qat_qconfig();

  tquant::HistogramObserver histogram(
      tquant::HistogramObserverOptions(tquant::int8_per_tensor_activation_spec()));
  histogram->set_method(tquant::CalibrationMethod::kPercentile, 99.9);
  histogram->set_method(tquant::CalibrationMethod::kEntropy);

  tquant::LaunchOptions launch = tquant::LaunchOptions().nproc(2);
  std::cout << launch.nproc() << "\n";
  return 0;
}
