#include "tquant/histogram_search.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <c10/util/Exception.h>

namespace tquant {

std::string to_string(CalibrationMethod method) {
  switch (method) {
    case CalibrationMethod::kMax: return "max";
    case CalibrationMethod::kPercentile: return "percentile";
    case CalibrationMethod::kEntropy: return "entropy";
    case CalibrationMethod::kMse: return "mse";
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled CalibrationMethod");
}

CalibrationMethod calibration_method_from_string(const std::string& name) {
  for (auto method : {CalibrationMethod::kMax, CalibrationMethod::kPercentile,
                      CalibrationMethod::kEntropy, CalibrationMethod::kMse}) {
    if (to_string(method) == name) return method;
  }
  TORCH_CHECK_VALUE(false, "unknown calibration method: expected max, percentile, entropy or "
                    "mse, got '", name, "'");
}

namespace {

void check_histogram(const HistogramView& hist, const char* method) {
  TORCH_CHECK_VALUE(hist.counts != nullptr && hist.num_bins > 0, method,
                    ": the histogram is empty; observe data first");
  TORCH_CHECK_VALUE(hist.bin_width >= 0.0 && std::isfinite(hist.bin_width), method,
                    ": expected a finite, non-negative bin width, got ", hist.bin_width);
}

void check_search_bins(int64_t start_bin, int64_t stride, const char* method) {
  TORCH_CHECK_VALUE(start_bin >= 1, method, ": expected start_bin >= 1, got ", start_bin);
  TORCH_CHECK_VALUE(stride >= 1, method, ": expected stride >= 1, got ", stride);
}

/// Prefix sums over bins [0, n): sum of counts, number of non-empty bins, sum of b * log(b).
/// long double keeps differences of large prefixes accurate enough to rank KL values.
struct EntropyPrefix {
  std::vector<long double> sum;
  std::vector<int64_t> nonzero;
  std::vector<long double> b_log_b;

  explicit EntropyPrefix(const std::vector<double>& bins)
      : sum(bins.size() + 1, 0.0L), nonzero(bins.size() + 1, 0), b_log_b(bins.size() + 1, 0.0L) {
    for (size_t j = 0; j < bins.size(); ++j) {
      const long double b = bins[j];
      sum[j + 1] = sum[j] + b;
      nonzero[j + 1] = nonzero[j] + (b > 0 ? 1 : 0);
      b_log_b[j + 1] = b_log_b[j] + (b > 0 ? b * std::log(b) : 0.0L);
    }
  }
};

/// KL(P || Q) of threshold i, with P and Q as described in the header, via prefix sums:
/// sum over a group of P_j log(P_j / Q_j) = sum b log b - log(S_k / n_k) * sum b.
long double kl_at_threshold(const std::vector<double>& bins, const EntropyPrefix& prefix,
                            int64_t i, int64_t levels, long double total) {
  const long double tail = prefix.sum[bins.size()] - prefix.sum[i];
  const long double last = bins[i - 1];
  if (last == 0 && tail > 0) return std::numeric_limits<long double>::infinity();
  long double weighted = 0.0L;  // sum_j P_j * (log P_j - log Q_j)
  for (int64_t k = 0; k < levels; ++k) {
    const int64_t j0 = (k * i + levels - 1) / levels;
    const int64_t j1 = ((k + 1) * i + levels - 1) / levels;
    if (j1 <= j0) continue;
    const int64_t n = prefix.nonzero[j1] - prefix.nonzero[j0];
    if (n == 0) continue;
    const long double s = prefix.sum[j1] - prefix.sum[j0];
    const long double log_q = std::log(s / n);
    if (j1 == i) {
      // The last bin carries the tail in P but not in Q.
      const int64_t inner_end = i - 1;
      weighted += (prefix.b_log_b[inner_end] - prefix.b_log_b[j0]) -
                  log_q * (prefix.sum[inner_end] - prefix.sum[j0]);
      if (last > 0) {
        const long double p_last = last + tail;
        weighted += p_last * (std::log(p_last) - log_q);
      }
    } else {
      weighted += (prefix.b_log_b[j1] - prefix.b_log_b[j0]) - log_q * s;
    }
  }
  const long double q_total = prefix.sum[i];
  return weighted / total + std::log(q_total) - std::log(total);
}

}  // namespace

int64_t last_nonempty_bin(const HistogramView& hist) {
  for (int64_t j = hist.num_bins - 1; j >= 0; --j) {
    if (hist.counts[j] > 0.0) return j;
  }
  return -1;
}

// Every search below stops at the last non-empty bin L: the bins after it are padding (a
// per-channel histogram is as long as its longest channel, and merging pairs of bins leaves
// empty bins at the end), and a threshold in them would clip nothing while being scored as if
// it did something, so the searches return the same on a histogram and on its first L + 1 bins.

double amax_percentile(const HistogramView& hist, double percentile) {
  check_histogram(hist, "percentile");
  TORCH_CHECK_VALUE(percentile >= 0.0 && percentile <= 100.0,
                    "percentile: expected 0 <= percentile <= 100, got ", percentile);
  double total = 0.0;
  for (int64_t j = 0; j < hist.num_bins; ++j) total += hist.counts[j];
  TORCH_CHECK_VALUE(total > 0.0, "percentile: the histogram holds no counts");
  const double target = percentile / 100.0;
  double cdf = 0.0;
  for (int64_t j = 0; j < hist.num_bins; ++j) {
    cdf += hist.counts[j] / total;
    if (cdf >= target) return static_cast<double>(j) * hist.bin_width;
  }
  // Rounding kept the sum below the target: the end of the data.
  return static_cast<double>(last_nonempty_bin(hist) + 1) * hist.bin_width;
}

double amax_entropy(const HistogramView& hist, int64_t num_levels, int64_t start_bin,
                    int64_t stride) {
  check_histogram(hist, "entropy");
  check_search_bins(start_bin, stride, "entropy");
  TORCH_CHECK_VALUE(num_levels >= 2, "entropy: expected at least 2 levels, got ", num_levels);
  const int64_t n = hist.num_bins;
  TORCH_CHECK_VALUE(n >= 2 && start_bin <= n, "entropy: the histogram has ", n,
                    " bins, fewer than start_bin ", start_bin);
  std::vector<double> bins(hist.counts, hist.counts + n);
  bins[0] = bins[1];  // as NVIDIA's calibrator: damp the spike of exact zeros
  const EntropyPrefix prefix(bins);
  const long double total = prefix.sum[n];
  TORCH_CHECK_VALUE(total > 0, "entropy: the histogram holds no counts");
  const int64_t stop = std::min(n, last_nonempty_bin(hist) + 1);
  if (stop < start_bin) return static_cast<double>(stop) * hist.bin_width;

  int64_t best = start_bin;
  long double best_kl = std::numeric_limits<long double>::infinity();
  bool found = false;
  for (int64_t i = start_bin; i <= stop; i += stride) {
    const long double kl = kl_at_threshold(bins, prefix, i, num_levels, total);
    if (!found || kl <= best_kl) {  // "<=": the last minimum wins, as in NVIDIA's code
      best_kl = kl;
      best = i;
      found = true;
    }
  }
  return static_cast<double>(best) * hist.bin_width;
}

double amax_mse(const HistogramView& hist, double steps, int64_t start_bin, int64_t stride) {
  check_histogram(hist, "mse");
  check_search_bins(start_bin, stride, "mse");
  TORCH_CHECK_VALUE(steps >= 1.0, "mse: expected at least one quantization step, got ", steps);
  TORCH_CHECK_VALUE(start_bin < hist.num_bins, "mse: the histogram has ", hist.num_bins,
                    " bins, expected more than start_bin ", start_bin);
  const int64_t last = last_nonempty_bin(hist);
  TORCH_CHECK_VALUE(last >= 0, "mse: the histogram holds no counts");
  if (last < start_bin) return (static_cast<double>(last) + 0.5) * hist.bin_width;
  // Bins past `last` hold nothing: they add no error to any candidate, so the sums stop there.
  const int64_t n = last + 1;
  const int64_t max_code = static_cast<int64_t>(std::floor(steps));
  std::vector<double> centers(n);
  for (int64_t j = 0; j < n; ++j) centers[j] = (static_cast<double>(j) + 0.5) * hist.bin_width;
  // Prefix sums of n, n*c, n*c^2: the error of a run of bins that all quantize to value v is
  // sum n (c - v)^2 = sum n c^2 - 2 v sum n c + v^2 sum n, so each candidate costs O(levels)
  // instead of O(bins).
  std::vector<double> p0(n + 1, 0.0), p1(n + 1, 0.0), p2(n + 1, 0.0);
  for (int64_t j = 0; j < n; ++j) {
    const double count = hist.counts[j];
    const double c = centers[j];
    p0[j + 1] = p0[j] + count;
    p1[j + 1] = p1[j] + count * c;
    p2[j + 1] = p2[j] + count * c * c;
  }
  auto run_error = [&](int64_t j0, int64_t j1, double value) {
    return (p2[j1] - p2[j0]) - 2.0 * value * (p1[j1] - p1[j0]) + value * value * (p0[j1] - p0[j0]);
  };
  int64_t best = start_bin;
  double best_error = std::numeric_limits<double>::infinity();
  for (int64_t i = start_bin; i < n; i += stride) {
    const double amax = centers[i];
    if (amax <= 0.0) continue;
    const double scale = steps / amax;
    // Code of bin j: nearbyint(c_j * scale) (half to even), clamped at max_code. Codes grow
    // with j, so the bins of code l form one run [j0, j1).
    auto code = [&](int64_t j) { return std::nearbyint(centers[j] * scale); };
    const double bins_per_step = 1.0 / (scale * hist.bin_width);
    double error = 0.0;
    int64_t j0 = 0;
    for (int64_t l = 0; l < max_code && j0 < n; ++l) {
      // First bin whose code exceeds l: start from the arithmetic guess, then settle exactly.
      const double guess = (static_cast<double>(l) + 0.5) * bins_per_step - 0.5;
      const double bounded = std::min(std::max(guess, 0.0), static_cast<double>(n));
      int64_t j1 = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(bounded)), j0, n);
      while (j1 < n && code(j1) <= l) ++j1;
      while (j1 > j0 && code(j1 - 1) > l) --j1;
      error += run_error(j0, j1, static_cast<double>(l) / scale);
      j0 = j1;
    }
    error += run_error(j0, n, static_cast<double>(max_code) / scale);  // clipped tail
    if (error < best_error) {  // "<": the first minimum wins, as np.argmin
      best_error = error;
      best = i;
    }
  }
  return centers[best];
}

double steps_per_amax(const QuantSpec& spec) {
  const double span = static_cast<double>(quant_max(spec) - quant_min(spec));
  return spec.symmetric() ? span / 2.0 : span;
}

int64_t entropy_levels(const QuantSpec& spec) {
  return int64_t{1} << (bit_width(spec.dtype()) - 1 + (is_signed(spec.dtype()) ? 0 : 1));
}

double search_amax(const HistogramView& hist, CalibrationMethod method,
                   const RangeSearchOptions& options, const QuantSpec& spec, double abs_max) {
  switch (method) {
    case CalibrationMethod::kMax:
      return abs_max;
    case CalibrationMethod::kPercentile:
      return amax_percentile(hist, options.percentile());
    case CalibrationMethod::kEntropy:
      return amax_entropy(hist, entropy_levels(spec), options.start_bin(), options.stride());
    case CalibrationMethod::kMse:
      return amax_mse(hist, steps_per_amax(spec), options.start_bin(), options.stride());
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled CalibrationMethod");
}

}  // namespace tquant
