#pragma once

#include <optional>
#include <string>

#include "tquant/histogram_search.h"
#include "tquant/observer.h"

namespace tquant {

/// Where a HistogramObserver's bins come from (docs/calibrators.md, docs/distributed.md).
///   kStreaming: one pass over the data. The first batch fixes the bin width (max|x| / bins);
///               later, larger batches append bins of that width (NVIDIA's calibrator). The
///               grid depends on which batch came first, so shards merged across ranks agree
///               with one process only as far as docs/distributed.md measures.
///   kShared:    two passes. The first (range pass) records only min / max; fix_grid() then
///               sets each channel's width to max|x| / bins; the second pass counts on that
///               grid. A value's bin depends only on the value and the range, so histograms of
///               any split of the data add up exactly: N ranks equal one process bit for bit.
///               tquant::calibrate runs the forward loop twice for such observers.
enum class HistogramGrid { kStreaming, kShared };

std::string to_string(HistogramGrid grid);
HistogramGrid histogram_grid_from_string(const std::string& name);

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
  /// kStreaming (one pass, grid from the first batch) or kShared (range pass, then counts on
  /// one grid fixed from the whole range; see HistogramGrid).
  TORCH_ARG(HistogramGrid, grid) = HistogramGrid::kStreaming;
};

/// Histogram of |x| (per tensor or per channel) from which max, percentile, entropy or MSE
/// choose the clipping range amax. The method can be changed after calibration
/// (set_calibration_method) without observing again, so one pass of data serves every method.
///
/// Symmetric specs use [-amax, amax]. Affine specs use the observed [min, max] clipped to
/// [-amax, amax], so a one-sided activation (after ReLU or GELU) keeps its sign information.
///
/// Buffers: counts [C, L] (float64), bin_width [C] (float64), min_val and max_val [C]
/// (float32); C = 1 for per-tensor, L = bins until a range grows, never above max_bins.
/// Channel c's bin i covers [i * bin_width[c], (i + 1) * bin_width[c]); each channel's row
/// holds what a per-tensor observer of that channel's data alone would (same width, same
/// bins), zero-padded to L, the longest channel's bin count. All empty before the first batch.
/// With a shared grid, counts and bin_width stay empty during the range pass (min_val and
/// max_val are set) and L = bins once fix_grid() ran.
///
/// Example:
///   tquant::HistogramObserver observer;
///   for (auto& batch : batches) observer->observe(batch);
///   observer->set_calibration_method(tquant::CalibrationMethod::kEntropy);
///   tquant::QParams qp = observer->calculate_qparams();
///
/// With a shared grid (HistogramGrid::kShared) the data are observed twice:
///   tquant::HistogramObserver observer(tquant::HistogramObserverOptions()
///                                          .grid(tquant::HistogramGrid::kShared));
///   for (auto& batch : batches) observer->observe(batch);   // range pass: min / max only
///   observer->fix_grid();                                   // width = max|x| / bins
///   for (auto& batch : batches) observer->observe(batch);   // counts on that grid
class HistogramObserverImpl : public torch::nn::Cloneable<HistogramObserverImpl>,
                              public ObserverBase {
 public:
  explicit HistogramObserverImpl(HistogramObserverOptions options_ = {});

  void reset() override;
  at::Tensor forward(const at::Tensor& x) { return observe(x); }

  at::Tensor observe(const at::Tensor& x) override;
  QParams calculate_qparams() override;
  /// True once counts exist: after the first batch, or for a shared grid after fix_grid().
  bool has_data() const override { return counts.numel() > 0; }
  void reset_stats() override;
  void merge(const ObserverBase& other) override;
  const QuantSpec& quant_spec() const override { return options.spec(); }
  std::string describe() const override;
  void pretty_print(std::ostream& stream) const override;

  /// Shared grid only: true after the range pass (min / max recorded) until fix_grid().
  bool awaiting_grid() const;
  /// Shared grid only: ends the range pass. Channel c's bin width becomes max|x|_c / bins from
  /// the recorded min / max (0 for a channel of zeros) and its counts start at zero; later
  /// observe() calls count on this grid, a value beyond it in the last bin. Throws unless
  /// awaiting_grid().
  void fix_grid();

  /// Chooses how amax is computed from now on (and, when given, the percentile kPercentile
  /// uses, 0..100; otherwise options.search().percentile() stays); the histogram is kept. The
  /// model-wide form is tquant::set_calibration_method(model, method, percentile).
  void set_calibration_method(CalibrationMethod method,
                              std::optional<double> percentile = std::nullopt);
  [[deprecated("use set_calibration_method(method)")]] void set_method(CalibrationMethod method) {
    set_calibration_method(method);
  }
  [[deprecated("use set_calibration_method(method, percentile)")]] void set_method(
      CalibrationMethod method, double percentile) {
    set_calibration_method(method, percentile);
  }

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
  /// Bins x (detached) on the current grid; `finite`: mask of finite values, or undefined.
  void add_counts(const at::Tensor& x, const at::Tensor& finite);
  void merge_shared(const HistogramObserverImpl& other);
  void add_per_channel(const at::Tensor& abs_rows, const at::Tensor& weights);
  /// Fused CPU float32 path of add_per_channel; rows: [M, C] (any strides) of raw values.
  void add_per_channel_cpu(const at::Tensor& rows);
  /// Per channel, the last bin of its own extent ceil(max|x| / width) (int64 [C], CPU).
  at::Tensor channel_last_bins() const;
  at::Tensor shape_for_spec(const at::Tensor& per_channel) const;
};
TORCH_MODULE(HistogramObserver);

}  // namespace tquant
