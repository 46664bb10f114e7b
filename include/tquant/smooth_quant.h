#pragma once

// SmoothQuant (Xiao et al., 2023): per-input-channel factors s that move activation outliers
// into the weight, x W^T = (x / s) (W diag(s))^T, applied inside QuantLinear (docs/smoothquant.md).

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>

#include "tquant/observer.h"
#include "tquant/report.h"

namespace tquant {

/// The factors are clamped to [kSmoothFactorMin, kSmoothFactorMax], as NVIDIA ModelOpt clamps
/// its pre_quant_scale (= 1 / s) to [1e-4, 1e4].
constexpr double kSmoothFactorMin = 1e-4;
constexpr double kSmoothFactorMax = 1e4;
/// An input channel whose max |x| is at most this (2^-31, ModelOpt's threshold) carries nothing
/// to smooth: its factor is 1.
constexpr double kSmoothActivationFloor = 1.0 / 2147483648.0;

/// SmoothQuant factors of one layer from its statistics, all [K] (K = in_features):
///   s_j = clamp(a_j^alpha / w_j^(1 - alpha), kSmoothFactorMin, kSmoothFactorMax)
///   s_j = 1 where a_j <= kSmoothActivationFloor,
/// a_j = max |x_j| over the calibration inputs, w_j = max_i |W[i, j]| (a zero weight column gives
/// w_j^(1-alpha) = 0, hence s_j = kSmoothFactorMax). Computed in float64, returned float32.
/// alpha in [0, 1]; a and w must be finite and >= 0 (checked: the error names the channel).
///
/// Example:
///   at::Tensor s = tquant::smooth_quant_factors(x.abs().amax(0), w.abs().amax(0), 0.5);
at::Tensor smooth_quant_factors(const at::Tensor& act_amax, const at::Tensor& weight_amax,
                                double alpha);

/// One candidate alpha of one layer, as the alpha search's metric sees it.
struct SmoothQuantTrial {
  /// Qualified name of the QuantLinear ("encoder.layer.0.attention.self.query").
  std::string name;
  double alpha = 0.0;
  /// [R, in_features] float32: the first R rows of input the layer received during
  /// smooth_quant's forward loop (R <= SmoothQuantOptions::search_rows), on the layer's device.
  at::Tensor input;
  /// [R, out_features]: the unsmoothed float layer on `input` (x W^T + b).
  at::Tensor reference;
  /// [R, out_features]: the layer smoothed with this alpha's factors and fake-quantized with
  /// fresh quantizers from its own QConfig, calibrated on `input` (observe, then QDQ).
  at::Tensor output;
};

/// Loss of a trial; lower is better. Must be finite.
using SmoothQuantMetric = std::function<double(const SmoothQuantTrial&)>;

/// Mean squared error between trial.output and trial.reference (the default metric).
double smooth_quant_mse(const SmoothQuantTrial& trial);

struct SmoothQuantOptions {
  /// Migration strength when `alphas` is empty, in s_j = max|x_j|^alpha / max|W_j|^(1-alpha):
  /// 0 scales each weight column to max 1 (and multiplies x_j by max|W_j|), 1 scales each
  /// activation channel to max 1 (its whole range moves into the weight). 0.5 is the paper's
  /// default.
  TORCH_ARG(double, alpha) = 0.5;
  /// Per-layer search: every layer tries each alpha and keeps the one with the lowest
  /// metric (the first on ties). Empty: every layer uses `alpha`.
  TORCH_ARG(std::vector<double>, alphas) = {};
  /// The search's loss; empty: smooth_quant_mse.
  TORCH_ARG(SmoothQuantMetric, metric) = nullptr;
  /// Input rows each layer keeps for the search (the first ones of the loop). Not used without
  /// `alphas`.
  TORCH_ARG(int64_t, search_rows) = 1024;
  /// NaN / Inf in a layer's calibration input: kError throws naming the layer; kIgnore leaves
  /// those values out of max |x| (with a warning).
  TORCH_ARG(NonFinitePolicy, non_finite) = NonFinitePolicy::kError;
  /// Called after each layer's factors are set with (layers done, layers in all).
  TORCH_ARG(ProgressCallback, on_progress) = {};
};

/// What smooth_quant did to one layer.
struct SmoothedLayer {
  std::string name;
  double alpha = 0.0;
  /// (alpha, loss) of every candidate when searched; empty otherwise.
  std::vector<std::pair<double, double>> losses;
  /// [in_features] float32 on the CPU: the factors s (what the layer now holds as its
  /// smooth_factor), max |x_j| and max_i |W[i, j]|.
  at::Tensor factor;
  at::Tensor act_amax;
  at::Tensor weight_amax;
};

struct SmoothQuantReport {
  std::vector<SmoothedLayer> layers;
  /// Tquant modules left unsmoothed, with the reason (not a QuantLinear, not prepared, no
  /// input quantizer, converted, saw no data).
  std::vector<std::pair<std::string, std::string>> skipped;
  /// One line per smoothed layer (alpha, factor range, the search's losses) and per skip.
  std::string to_string() const;
};
std::ostream& operator<<(std::ostream& stream, const SmoothQuantReport& report);

/// SmoothQuant on a prepared model, in place. For every prepared QuantLinear with an input
/// quantizer (static or dynamic; not kFloat, not converted):
///   1. forward_loop runs with the prepared modules in float mode (their original float
///      computation) while each such layer records max |x_j| of its input per channel;
///   2. s = smooth_quant_factors(max |x|, max_i |W[i, :]|, alpha) with the given alpha, or the
///      per-layer best of options.alphas under options.metric;
///   3. the layer keeps s (QuantLinearImpl::set_smooth_factor): from then on its input
///      quantizer observes and quantizes x / s and its weight quantizer W * s (columns), which
///      is exact in float; its observers are reset and it is left in kObserve.
/// Other prepared modules return to the mode they had. Run tquant::calibrate next (the ranges
/// of the smoothed layers must be observed again), then convert. Calling smooth_quant again
/// replaces the factors (the statistics are of the unsmoothed input, so nothing compounds).
/// The float weight parameter is not changed: kFloat computes exactly the float layer, and the
/// factors live in the buffer "smooth_factor" (saved, loaded, cloned and moved with the module;
/// docs/smoothquant.md).
///
/// BERT-like post-LayerNorm models: the division by s happens in the layer, not in the
/// preceding LayerNorm's gamma / beta, so the residual branch that reads the same LayerNorm
/// output is untouched (smoothquant#21).
///
/// Example:
///   tquant::prepare(*net, tquant::QConfigMapping(tquant::int8_static_qconfig()));
///   torch::NoGradGuard no_grad;
///   auto loop = [&] { for (auto& batch : calibration_batches) net->forward(batch); };
///   tquant::SmoothQuantReport smoothed = tquant::smooth_quant(
///       *net, loop, tquant::SmoothQuantOptions().alphas({0.3, 0.5, 0.7, 0.9}));
///   tquant::calibrate(*net, loop);
///   tquant::convert(*net);
SmoothQuantReport smooth_quant(torch::nn::Module& model, const std::function<void()>& forward_loop,
                               const SmoothQuantOptions& options = {});

}  // namespace tquant
