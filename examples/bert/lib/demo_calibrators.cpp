#include "demo_calibrators.h"

#include "tquant/quantize.h"

namespace bert {

std::vector<RangeChoice> demo_calibrators() {
  return {
      {"max", tquant::CalibrationMethod::kMax, 99.99},
      {"percentile 99.9", tquant::CalibrationMethod::kPercentile, 99.9},
      {"percentile 99.99", tquant::CalibrationMethod::kPercentile, 99.99},
      {"percentile 99.999", tquant::CalibrationMethod::kPercentile, 99.999},
      {"percentile 99.9999", tquant::CalibrationMethod::kPercentile, 99.9999},
      {"entropy", tquant::CalibrationMethod::kEntropy, 99.99},
      {"mse", tquant::CalibrationMethod::kMse, 99.99},
  };
}

void use_calibrator(torch::nn::Module& model, const RangeChoice& choice) {
  if (choice.method == tquant::CalibrationMethod::kPercentile) {
    tquant::set_calibration_method(model, choice.method, choice.percentile);
  } else {
    tquant::set_calibration_method(model, choice.method);
  }
}

}  // namespace bert
