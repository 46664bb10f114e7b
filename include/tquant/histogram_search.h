#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tquant/formats.h"

namespace tquant {

/// How a histogram observer turns its histogram of |x| into a clipping range amax.
///   kMax:        the largest |x| seen (no clipping).
///   kPercentile: the bin edge where the cumulative count reaches `percentile` percent.
///   kEntropy:    the threshold minimizing KL(P || Q) between the clipped distribution and its
///                quantized version (TensorRT's calibrator: 128 levels, thresholds from bin 128).
///   kMse:        the bin centre minimizing the count-weighted squared quantization error.
enum class CalibrationMethod { kMax, kPercentile, kEntropy, kMse };

std::string to_string(CalibrationMethod method);
CalibrationMethod calibration_method_from_string(const std::string& name);

/// A histogram of |x| with bins of equal width starting at 0: bin i covers
/// [i * bin_width, (i + 1) * bin_width), the last bin also holds its right edge.
struct HistogramView {
  const double* counts = nullptr;
  int64_t num_bins = 0;
  double bin_width = 0.0;
};

/// Search settings; defaults are NVIDIA's HistogramCalibrator.compute_amax defaults.
struct RangeSearchOptions {
  TORCH_ARG(double, percentile) = 99.99;
  /// First candidate bin of the entropy and MSE searches.
  TORCH_ARG(int64_t, start_bin) = 128;
  /// Step between candidate bins.
  TORCH_ARG(int64_t, stride) = 1;
};

/// Left edge of the first bin whose cumulative fraction reaches percentile / 100
/// (NVIDIA's _compute_amax_percentile: searchsorted on the CDF, then bin_edges[idx]).
double amax_percentile(const HistogramView& hist, double percentile);

/// KL-divergence search as in TensorRT's entropy calibrator and NVIDIA's
/// _compute_amax_entropy: bin 0 takes bin 1's count (to damp the spike of zeros); for each
/// threshold i from start_bin to num_bins, P = bins[0, i) with the tail added to the last bin,
/// Q = the same bins merged into `num_levels` groups (group of bin j = floor(j * levels / i)),
/// each group's count spread evenly over its non-empty bins. The threshold with the smallest
/// KL(P || Q) wins; on ties the last one, as NVIDIA's code does. Returns i * bin_width.
double amax_entropy(const HistogramView& hist, int64_t num_levels, int64_t start_bin = 128,
                    int64_t stride = 1);

/// MSE search as in NVIDIA's _compute_amax_mse: each bin centre c_i (start_bin <= i < num_bins)
/// is tried as amax; the error is sum_j counts_j * (c_j - fq(c_j))^2 where fq
/// quantizes to `steps` levels per amax (round half to even, clamped at floor(steps)).
/// The first minimum wins.
double amax_mse(const HistogramView& hist, double steps, int64_t start_bin = 128,
                int64_t stride = 1);

/// Quantization levels between 0 and amax for a spec: (qmax - qmin) / 2 when symmetric
/// (127.5 for int8, 127 narrow), qmax - qmin when affine (a range starting at 0).
double steps_per_amax(const QuantSpec& spec);

/// Levels of the entropy search: 2^(bits - 1), doubled for unsigned formats (NVIDIA's rule).
int64_t entropy_levels(const QuantSpec& spec);

/// amax by `method` from one histogram. kMax is not a histogram method: pass `abs_max`, the
/// exact largest |x| seen, which is returned for kMax.
double search_amax(const HistogramView& hist, CalibrationMethod method,
                   const RangeSearchOptions& options, const QuantSpec& spec, double abs_max);

}  // namespace tquant
