#pragma once

// Internal: calibrate's passes with hooks, shared by tquant::calibrate and
// tquant::calibrate_distributed (src/distributed/sync_observers.cpp).

#include <functional>

#include <torch/nn/module.h>

#include "tquant/quantize.h"

namespace tquant::detail {

/// What calibrate does, with two hooks for statistics that live in more than one process:
///   1. the forward loop runs with every quantizer observing (for shared-grid histograms:
///      their range pass);
///   2. if any driven quantizer holds a shared-grid HistogramObserver: `after_range_pass`
///      runs, those observers fix their grids, and the loop runs again with only them
///      observing (the others' statistics are complete already);
///   3. `after_last_pass` runs, then the ranges freeze.
/// Whether step 2 happens depends on the model's observers only, so ranks with the same model
/// run the same passes and the hooks' collectives match.
CalibrationReport calibrate_in_passes(torch::nn::Module& model,
                                      const std::function<void(CalibrationProgress&)>& forward_loop,
                                      CalibrationProgress::Callback on_step,
                                      const std::function<void()>& after_range_pass,
                                      const std::function<void()>& after_last_pass);

}  // namespace tquant::detail
