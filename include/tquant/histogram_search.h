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
/// Bins past the last non-empty one (padding) never change what a search returns.
struct HistogramView {
  const double* counts = nullptr;
  int64_t num_bins = 0;
  double bin_width = 0.0;
};

/// Index of the last bin with a positive count, or -1 when every bin is empty.
int64_t last_nonempty_bin(const HistogramView& hist);

/// Search settings; defaults are NVIDIA's HistogramCalibrator.compute_amax defaults.
struct RangeSearchOptions {
  TORCH_ARG(double, percentile) = 99.99;
  /// First candidate bin of the entropy and MSE searches.
  TORCH_ARG(int64_t, start_bin) = 128;
  /// Step between candidate bins.
  TORCH_ARG(int64_t, stride) = 1;
};

/// Left edge of the first bin whose cumulative fraction reaches percentile / 100
/// (NVIDIA's _compute_amax_percentile: searchsorted on the CDF, then bin_edges[idx]). When
/// float rounding keeps the CDF below the target, the right edge of the last non-empty bin L,
/// (L + 1) * bin_width (NVIDIA: the last edge, which is the same when no bin is padding).
double amax_percentile(const HistogramView& hist, double percentile);

/// KL-divergence search as in TensorRT's entropy calibrator and NVIDIA's
/// _compute_amax_entropy: bin 0 takes bin 1's count (to damp the spike of zeros); for each
/// threshold i from start_bin to min(num_bins, L + 1), L the last non-empty bin, P = bins[0, i)
/// with the tail added to the last bin, Q = the same bins merged into `num_levels` groups (group
/// of bin j = floor(j * levels / i)), each group's count spread evenly over its non-empty bins.
/// The threshold with the smallest KL(P || Q) wins; on ties the last one, as NVIDIA's code does.
/// Returns i * bin_width; when the data end before start_bin (L + 1 < start_bin), the range of
/// all data, (L + 1) * bin_width.
double amax_entropy(const HistogramView& hist, int64_t num_levels, int64_t start_bin = 128,
                    int64_t stride = 1);

/// MSE search as in NVIDIA's _compute_amax_mse: each bin centre c_i
/// (start_bin <= i <= min(num_bins - 1, L), L the last non-empty bin) is tried as amax; the
/// error is sum_j counts_j * (c_j - fq(c_j))^2 where fq quantizes to `steps` levels per amax
/// (round half to even, clamped at floor(steps)). The first minimum wins. When the data end
/// before start_bin (L < start_bin), the centre of bin L.
double amax_mse(const HistogramView& hist, double steps, int64_t start_bin = 128,
                int64_t stride = 1);

/// Quantization levels between 0 and amax for a spec: (qmax - qmin) / 2 when symmetric
/// (127.5 for int8, 127 narrow), qmax - qmin when affine (a range starting at 0).
double steps_per_amax(const QuantSpec& spec);

/// Levels of the entropy search: 2^(bits - 1), doubled for unsigned formats (NVIDIA's rule).
int64_t entropy_levels(const QuantSpec& spec);

/// amax by `method` from one histogram. kMax is not a histogram method: pass `abs_max`, the
/// exact largest |x| seen, which is returned for kMax. HistogramObserver calls it; use it
/// directly on a histogram of your own.
///
/// Example:
///   std::vector<double> counts = ...;   // 2048 bins of |x|, width w
///   tquant::HistogramView hist{counts.data(), 2048, w};
///   double amax = tquant::search_amax(hist, tquant::CalibrationMethod::kPercentile,
///                                     tquant::RangeSearchOptions().percentile(99.9),
///                                     tquant::int8_per_tensor_activation_spec(), max_abs_x);
double search_amax(const HistogramView& hist, CalibrationMethod method,
                   const RangeSearchOptions& options, const QuantSpec& spec, double abs_max);

}  // namespace tquant
