// tquant quickstart: calibrate a small model with observers, compare the calibrators on one
// activation, measure the fake-quantization round trip of several formats, then run the whole
// flow (prepare, calibrate, convert to INT8, QAT, save and load) on a small classifier.
//
//   build/examples/quickstart/tquant_quickstart
//
// Everything is deterministic (fixed seed), so two runs print the same tables.

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tquant/tquant.h"

#include "flow.h"

namespace {

constexpr int64_t kInFeatures = 64;
constexpr int64_t kHidden = 256;
constexpr int64_t kOutFeatures = 10;
constexpr int64_t kBatch = 32;
constexpr int kCalibrationBatches = 16;

// Mostly N(0, 1) with one value in 200 made 8x larger: real activations have such tails, and
// they are what separates the calibrators (max keeps them, the others clip them).
at::Tensor make_batch() {
  auto x = torch::randn({kBatch, kInFeatures});
  auto outlier = torch::rand({kBatch, kInFeatures}) < 0.005;
  return torch::where(outlier, x * 8, x);
}

// The scale broadcast to x's shape, so that an error can be expressed in steps of its own scale.
at::Tensor scale_like(const tquant::QParams& qp, const at::Tensor& x) {
  const auto& spec = qp.spec;
  switch (spec.granularity()) {
    case tquant::Granularity::kPerTensor:
      return qp.scale.expand_as(x);
    case tquant::Granularity::kPerChannel: {
      std::vector<int64_t> shape(x.dim(), 1);
      shape[tquant::canonical_axis(spec.axis(), x.dim(), "x")] = -1;
      return qp.scale.reshape(shape).expand_as(x);
    }
    case tquant::Granularity::kPerBlock:
      return qp.scale.repeat_interleave(spec.block_size(),
                                        tquant::canonical_axis(spec.axis(), x.dim(), "x"));
  }
  return {};
}

struct RoundTrip {
  double mean_abs_error;
  double max_error_in_steps;  // max |x - fq(x)| / scale; <= 0.5 when nothing is clipped
  double sqnr_db;             // 10 log10(sum x^2 / sum (x - fq(x))^2)
};

RoundTrip round_trip(const at::Tensor& x, const tquant::QParams& qp) {
  auto error = (tquant::fake_quantize(x, qp) - x).abs();
  const double signal = x.pow(2).sum().item<double>();
  const double noise = error.pow(2).sum().item<double>();
  return {error.mean().item<double>(), (error / scale_like(qp, x)).max().item<double>(),
          10.0 * std::log10(signal / std::max(noise, 1e-30))};
}

void print_rule(int width) { std::printf("%s\n", std::string(width, '-').c_str()); }

}  // namespace

int main() {
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;

  // 1. A small float model. Trained layers have output channels of very different magnitude;
  //    imitate that so that per-channel weight scales matter.
  torch::nn::Linear fc1(kInFeatures, kHidden);
  torch::nn::Linear fc2(kHidden, kOutFeatures);
  fc1->weight.mul_(torch::logspace(-1.0, 0.5, kHidden).unsqueeze(1));
  torch::nn::Sequential model(fc1, torch::nn::ReLU(), fc2);

  // 2. Observers. Activations: one histogram per Linear input (one pass of data serves every
  //    calibrator). fc2's input follows a ReLU, so it gets an affine uint8 spec. Weights: one
  //    range per output channel, symmetric int8 (the usual weight format).
  tquant::HistogramObserver fc1_input;
  tquant::HistogramObserver fc2_input(tquant::HistogramObserverOptions(
      tquant::QuantSpec(tquant::QuantDtype::kUInt8).symmetric(false)));
  tquant::PerChannelMinMaxObserver fc1_weight, fc2_weight;
  fc1_weight->observe(fc1->weight);
  fc2_weight->observe(fc2->weight);

  // 3. Calibration: run batches through the model, letting the observers watch the inputs of
  //    the two Linear layers.
  for (int i = 0; i < kCalibrationBatches; ++i) {
    auto x = fc1_input->observe(make_batch());
    auto h = fc2_input->observe(torch::relu(fc1(x)));
    (void)fc2(h);
  }
  std::vector<at::Tensor> fresh;  // fc2 inputs for data the observers never saw
  for (int i = 0; i < 8; ++i) fresh.push_back(torch::relu(fc1(make_batch())));
  auto held_out = torch::cat(fresh);
  std::printf("model: %s\n", c10::str(*model).c_str());

  // 4. The range each calibrator picks for fc2's input, from the same histogram.
  struct Choice {
    const char* name;
    tquant::CalibrationMethod method;
    double percentile;
  };
  const std::vector<Choice> choices = {
      {"max", tquant::CalibrationMethod::kMax, 99.99},
      {"percentile 99.9", tquant::CalibrationMethod::kPercentile, 99.9},
      {"percentile 99.99", tquant::CalibrationMethod::kPercentile, 99.99},
      {"percentile 99.999", tquant::CalibrationMethod::kPercentile, 99.999},
      {"entropy", tquant::CalibrationMethod::kEntropy, 99.99},
      {"mse", tquant::CalibrationMethod::kMse, 99.99},
  };
  std::printf("\nfc2 input (after ReLU), uint8 affine, %d batches observed, largest value %.4f\n",
              kCalibrationBatches, fc2_input->abs_max().item<double>());
  std::printf("%-18s %10s %10s %12s %10s\n", "calibrator", "amax", "scale", "clipped %",
              "SQNR dB");
  print_rule(64);
  for (const auto& choice : choices) {
    // Switching the method keeps the histogram: nothing is observed again.
    fc2_input->set_calibration_method(choice.method, choice.percentile);
    const double amax = fc2_input->compute_amax(choice.method).item<double>();
    auto qp = fc2_input->calculate_qparams();
    const double clipped = (held_out > amax).to(torch::kFloat).mean().item<double>() * 100.0;
    std::printf("%-18s %10.4f %10.6f %12.4f %10.2f\n", choice.name, amax,
                qp.scale.item<double>(), clipped, round_trip(held_out, qp).sqnr_db);
  }
  std::printf("(clipped %% and SQNR measured on 8 held-out batches; which calibrator wins depends on\n"
              " the data: see docs/calibrators.md)\n");

  // 5. Fake-quantization round trip, format by format.
  using tquant::Granularity;
  using tquant::QuantDtype;
  using tquant::QuantSpec;
  auto weight_qparams = [&](const QuantSpec& spec) {
    tquant::MinMaxObserver observer{tquant::MinMaxObserverOptions(spec)};
    observer->observe(fc1->weight);
    return observer->calculate_qparams();
  };
  fc2_input->set_calibration_method(tquant::CalibrationMethod::kEntropy);
  struct Row {
    std::string tensor, format;
    at::Tensor x;
    tquant::QParams qp;
  };
  const std::vector<Row> rows = {
      {"fc1.weight", "int8 per-tensor", fc1->weight, weight_qparams(QuantSpec())},
      {"fc1.weight", "int8 per-channel", fc1->weight, fc1_weight->calculate_qparams()},
      {"fc1.weight", "int4 per-block 32", fc1->weight,
       weight_qparams(QuantSpec(QuantDtype::kInt4)
                          .granularity(Granularity::kPerBlock)
                          .axis(1)
                          .block_size(32))},
      {"fc1.weight", "fp8 e4m3 per-tensor", fc1->weight,
       weight_qparams(QuantSpec(QuantDtype::kFp8E4M3))},
      {"fc2.weight", "int8 per-channel", fc2->weight, fc2_weight->calculate_qparams()},
      {"fc2 input", "uint8 entropy", held_out, fc2_input->calculate_qparams()},
  };
  std::printf("\n%-11s %-20s %14s %16s %10s\n", "tensor", "format", "mean |err|",
              "max |err|/scale", "SQNR dB");
  print_rule(75);
  for (const auto& row : rows) {
    const auto r = round_trip(row.x, row.qp);
    std::printf("%-11s %-20s %14.3e %16.3f %10.2f\n", row.tensor.c_str(), row.format.c_str(),
                r.mean_abs_error, r.max_error_in_steps, r.sqnr_db);
  }
  std::printf(
      "(integer formats stay within half a step unless a value is clipped; fp8 steps grow with\n"
      " magnitude, so its error is relative and can exceed one scale near the top of the range)\n");

  // 6. The codes themselves: quantize gives int8 storage, dequantize maps back.
  auto qp = fc1_weight->calculate_qparams();
  auto codes = tquant::quantize(fc1->weight, qp);
  auto restored = tquant::dequantize(codes, qp);
  std::printf("\nquantize(fc1.weight): %s codes in [%d, %d]; dequantize matches fake_quantize: %s\n",
              c10::toString(codes.scalar_type()), codes.min().item<int>(),
              codes.max().item<int>(),
              restored.equal(tquant::fake_quantize(fc1->weight, qp)) ? "yes" : "no");

  // 7. The passes on a model: PTQ and QAT, convert to INT8, save and reload (flow.cpp).
  return run_full_flow() ? 0 : 1;
}
