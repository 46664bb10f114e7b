#pragma once

#include <string>

#include "tquant/histogram_search.h"
#include "tquant/observer.h"

namespace tquant {

/// Options of HistogramObserver.
///
/// Example:
///   auto options = tquant::HistogramObserverOptions()
///                      .method(tquant::CalibrationMethod::kEntropy);
struct HistogramObserverOptions {
  HistogramObserverOptions() = default;
  explicit HistogramObserverOptions(QuantSpec spec) : spec_(spec) {}
  /// Per-tensor or per-channel (per-block is not supported for histograms).
  TORCH_ARG(QuantSpec, spec);
  /// Bins of the first batch's histogram (NVIDIA and torch.ao default: 2048).
  TORCH_ARG(int64_t, bins) = 2048;
  /// Histograms grow by appending bins of the same width when a larger |x| arrives (as
  /// NVIDIA's calibrator does), each channel on its own; past max_bins, adjacent bins are
  /// merged in groups of 2, 4, ... 0 means 16 * bins. `counts` never holds more than
  /// C * max_bins values (8 bytes each).
  TORCH_ARG(int64_t, max_bins) = 0;
  TORCH_ARG(CalibrationMethod, method) = CalibrationMethod::kPercentile;
  TORCH_ARG(RangeSearchOptions, search);
  TORCH_ARG(double, eps) = kDefaultScaleEps;
  TORCH_ARG(NonFinitePolicy, non_finite) = NonFinitePolicy::kError;
};

/// Histogram of |x| (per tensor or per channel) from which max, percentile, entropy or MSE
/// choose the clipping range amax. The method can be changed after calibration
/// (set_method) without observing again, so one pass of data serves every method.
///
/// Symmetric specs use [-amax, amax]. Affine specs use the observed [min, max] clipped to
/// [-amax, amax], so a one-sided activation (after ReLU or GELU) keeps its sign information.
///
/// Buffers: counts [C, L] (float64), bin_width [C] (float64), min_val and max_val [C]
/// (float32); C = 1 for per-tensor, L = bins until a range grows, never above max_bins.
/// Channel c's bin i covers [i * bin_width[c], (i + 1) * bin_width[c]); each channel's row
/// holds what a per-tensor observer of that channel's data alone would (same width, same
/// bins), zero-padded to L, the longest channel's bin count. All empty before the first batch.
///
/// Example:
///   tquant::HistogramObserver observer;
///   for (auto& batch : batches) observer->observe(batch);
///   observer->set_method(tquant::CalibrationMethod::kEntropy);
///   tquant::QParams qp = observer->calculate_qparams();
class HistogramObserverImpl : public torch::nn::Cloneable<HistogramObserverImpl>,
                              public ObserverBase {
 public:
  explicit HistogramObserverImpl(HistogramObserverOptions options_ = {});

  void reset() override;
  at::Tensor forward(const at::Tensor& x) { return observe(x); }

  at::Tensor observe(const at::Tensor& x) override;
  QParams calculate_qparams() override;
  bool has_data() const override { return counts.numel() > 0; }
  void reset_stats() override;
  void merge(const ObserverBase& other) override;
  const QuantSpec& quant_spec() const override { return options.spec(); }
  std::string describe() const override;
  void pretty_print(std::ostream& stream) const override;

  /// Chooses how amax is computed from now on; the histogram is kept.
  void set_method(CalibrationMethod method);
  void set_method(CalibrationMethod method, double percentile);

  /// amax by `method` (0-dim for per-tensor, [C] for per-channel), float32.
  at::Tensor compute_amax(CalibrationMethod method) const;
  at::Tensor compute_amax(CalibrationMethod method, const RangeSearchOptions& search) const;

  /// Largest |x| observed per channel (0-dim for per-tensor), float32.
  at::Tensor abs_max() const;

  HistogramObserverOptions options;
  at::Tensor counts;
  at::Tensor bin_width;
  at::Tensor min_val;
  at::Tensor max_val;

 private:
  int64_t channel_count(const at::Tensor& x) const;
  void grow_to_cover(const at::Tensor& channel_amax);
  void add_per_tensor(const at::Tensor& abs_x);
  void add_per_channel(const at::Tensor& abs_rows, const at::Tensor& weights);
  /// Fused CPU float32 path of add_per_channel; rows: [M, C] (any strides) of raw values.
  void add_per_channel_cpu(const at::Tensor& rows);
  /// Per channel, the last bin of its own extent ceil(max|x| / width) (int64 [C], CPU).
  at::Tensor channel_last_bins() const;
  at::Tensor shape_for_spec(const at::Tensor& per_channel) const;
};
TORCH_MODULE(HistogramObserver);

}  // namespace tquant
