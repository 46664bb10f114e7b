#pragma once

#include <vector>

#include <torch/nn/module.h>

#include "demo_report.h"

namespace bert {

/// The calibrators the demo compares (docs/bert.md, step 2), in the order ties are broken:
/// max, percentile 99.9 / 99.99 / 99.999 / 99.9999 (transformer-deploy's grid), entropy, MSE.
std::vector<RangeChoice> demo_calibrators();

/// Switches every calibrated quantizer of `model` to `choice`'s method (and percentile),
/// from the histograms already collected (tquant::set_calibration_method).
void use_calibrator(torch::nn::Module& model, const RangeChoice& choice);

}  // namespace bert
