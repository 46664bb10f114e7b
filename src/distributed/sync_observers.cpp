#include "tquant/distributed.h"

#include <limits>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "tquant/fake_quantize.h"
#include "tquant/histogram_observer.h"
#include "tquant/observer.h"
#include "tquant/quantize.h"
#include "../calibrate_passes.h"

namespace tquant {

namespace {

constexpr const char* kWhat = "tquant::sync_observers";
// Per observer and rank: has data, then the statistics' shape (ndim, up to kMaxDims sizes).
constexpr int64_t kMaxDims = 4;
constexpr int64_t kMetaWidth = 2 + kMaxDims;

enum class Rule { kMinMax, kMovingAverage, kHistogram, kSharedGrid };

// Metadata of a shared-grid histogram: in its range pass, or counting on a fixed grid.
constexpr int64_t kRanging = 1;
constexpr int64_t kCounting = 2;

struct Entry {
  std::string name;
  Rule rule = Rule::kMinMax;
  ObserverBase* observer = nullptr;
  at::Tensor* min_val = nullptr;  // min-max family: the observer's buffers
  at::Tensor* max_val = nullptr;
  HistogramObserverImpl* histogram = nullptr;
  // Filled from the exchanged metadata.
  int source = -1;  // lowest rank with data; -1: none has any
  bool counting = false;  // shared grid: the ranks with data have fixed their grids
  std::vector<int64_t> shape;      // min_val's shape (histogram: counts' [C, L] of `source`)
  std::vector<int64_t> rank_bins;  // histogram: L on every rank
};

template <typename T>
bool bind_min_max(torch::nn::Module& module, Entry& entry) {
  auto* observer = dynamic_cast<T*>(&module);
  if (observer == nullptr) return false;
  entry.min_val = &observer->min_val;
  entry.max_val = &observer->max_val;
  entry.rule = observer->options.averaging_constant() == 0.0 ? Rule::kMinMax : Rule::kMovingAverage;
  return true;
}

std::vector<Entry> observers_of(torch::nn::Module& model) {
  std::vector<Entry> entries;
  for (const auto& item : model.named_modules()) {
    torch::nn::Module& module = *item.value();
    auto* observer = dynamic_cast<ObserverBase*>(&module);
    if (observer == nullptr) continue;
    Entry entry;
    entry.name = item.key();
    entry.observer = observer;
    if (auto* histogram = dynamic_cast<HistogramObserverImpl*>(&module)) {
      entry.rule = histogram->options.grid() == HistogramGrid::kShared ? Rule::kSharedGrid
                                                                       : Rule::kHistogram;
      entry.histogram = histogram;
    } else {
      const bool bound = bind_min_max<MinMaxObserverImpl>(module, entry) ||
                         bind_min_max<MovingAverageMinMaxObserverImpl>(module, entry) ||
                         bind_min_max<PerChannelMinMaxObserverImpl>(module, entry) ||
                         bind_min_max<MovingAveragePerChannelMinMaxObserverImpl>(module, entry);
      TORCH_CHECK_NOT_IMPLEMENTED(bound, kWhat, ": observer '", entry.name, "' (",
                                  module.name(), ") has no rule for combining across ranks");
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

/// 0: no data; 1: statistics (a shared grid: kRanging or kCounting).
int64_t data_state(const Entry& entry) {
  if (entry.rule != Rule::kSharedGrid) return entry.observer->has_data() ? 1 : 0;
  if (entry.histogram->awaiting_grid()) return kRanging;
  return entry.histogram->has_data() ? kCounting : 0;
}

at::Tensor stats_of(const Entry& entry) {
  if (entry.rule == Rule::kSharedGrid && entry.histogram->awaiting_grid()) {
    return entry.histogram->min_val;
  }
  return entry.histogram != nullptr ? entry.histogram->counts : *entry.min_val;
}

/// One all-gather of every observer's (has data, shape); picks the source rank of each and
/// checks that the ranks with data agree on the shape (histograms: on the channel count).
void exchange_metadata(std::vector<Entry>& entries, const DistributedGroup& group) {
  const auto count = static_cast<int64_t>(entries.size());
  auto meta = at::zeros({count * kMetaWidth}, at::kLong);
  auto* data = meta.data_ptr<int64_t>();
  for (int64_t i = 0; i < count; ++i) {
    const auto& entry = entries[i];
    const int64_t state = data_state(entry);
    if (state == 0) continue;
    const at::Tensor stats = stats_of(entry);
    TORCH_CHECK_NOT_IMPLEMENTED(stats.dim() <= kMaxDims, kWhat, ": observer '", entry.name,
                                "' holds statistics of ", stats.dim(), " dimensions; at most ",
                                kMaxDims, " are supported");
    data[i * kMetaWidth] = state;
    data[i * kMetaWidth + 1] = stats.dim();
    for (int64_t d = 0; d < stats.dim(); ++d) data[i * kMetaWidth + 2 + d] = stats.size(d);
  }
  const auto all = group.allgather(meta, std::string(kWhat) + " (which observers have data)");
  for (int64_t i = 0; i < count; ++i) {
    auto& entry = entries[i];
    for (int r = 0; r < group.world_size(); ++r) {
      const auto* row = all[r].data_ptr<int64_t>() + i * kMetaWidth;
      std::vector<int64_t> shape(row + 2, row + 2 + row[1]);
      entry.rank_bins.push_back(shape.size() == 2 ? shape[1] : 0);
      if (row[0] == 0) continue;
      if (entry.source < 0) {
        entry.source = r;
        entry.shape = shape;
        entry.counting = row[0] == kCounting;
        continue;
      }
      TORCH_CHECK_VALUE(entry.rule != Rule::kSharedGrid || entry.counting == (row[0] == kCounting),
                        kWhat, ": shared-grid histogram '", entry.name, "' is ",
                        entry.counting ? "counting on a fixed grid" : "in its range pass",
                        " on rank ", entry.source, " but ",
                        row[0] == kCounting ? "counting on a fixed grid" : "in its range pass",
                        " on rank ", r, "; sync the ranges before fix_grid() on every rank ",
                        "(calibrate_distributed does)");
      const bool same = entry.histogram != nullptr ? shape[0] == entry.shape[0]
                                                   : shape == entry.shape;
      TORCH_CHECK_VALUE(same, kWhat, ": observer '", entry.name, "' holds statistics of shape ",
                        c10::IntArrayRef(entry.shape), " on rank ", entry.source, " but ",
                        c10::IntArrayRef(shape), " on rank ", r,
                        " (the ranks fed it tensors with different channel counts)");
    }
  }
}

/// Running min / max and histogram ranges: one all-reduce MIN of [min, -max].
void reduce_extremes(std::vector<Entry*>& entries, const DistributedGroup& group) {
  if (entries.empty()) return;
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<at::Tensor> parts;
  for (Entry* entry : entries) {
    const bool has = data_state(*entry) != 0;
    at::Tensor lo;
    at::Tensor hi;
    if (entry->histogram != nullptr) {
      const int64_t channels = entry->shape[0];
      lo = has ? entry->histogram->min_val.to(at::kCPU, at::kFloat) : at::full({channels}, inf);
      hi = has ? entry->histogram->max_val.to(at::kCPU, at::kFloat) : at::full({channels}, -inf);
    } else {
      lo = has ? entry->min_val->to(at::kCPU, at::kFloat) : at::full(entry->shape, inf);
      hi = has ? entry->max_val->to(at::kCPU, at::kFloat) : at::full(entry->shape, -inf);
    }
    parts.push_back(lo.flatten());
    parts.push_back(-hi.flatten());  // MIN of -max is -MAX: one collective for both
  }
  auto packed = at::cat(parts);
  group.allreduce(packed, c10d::ReduceOp::MIN, std::string(kWhat) + " (min / max)");
  int64_t offset = 0;
  auto take = [&](const at::Tensor& like_shape) {
    auto part = packed.narrow(0, offset, like_shape.numel()).reshape(like_shape.sizes());
    offset += like_shape.numel();
    return part.clone();
  };
  for (Entry* entry : entries) {
    const bool histogram = entry->histogram != nullptr;
    at::Tensor* lo_buf = histogram ? &entry->histogram->min_val : entry->min_val;
    at::Tensor* hi_buf = histogram ? &entry->histogram->max_val : entry->max_val;
    const at::Tensor shape_of = at::empty(histogram
                                              ? std::vector<int64_t>{entry->shape[0]}
                                              : entry->shape);
    auto lo = take(shape_of);
    auto hi = -take(shape_of);
    lo_buf->set_data(lo.to(lo_buf->device()));
    hi_buf->set_data(hi.to(hi_buf->device()));
  }
}

/// Moving averages: the mean over the ranks that have data (one all-reduce SUM).
void average_moving(std::vector<Entry*>& entries, const DistributedGroup& group) {
  if (entries.empty()) return;
  std::vector<at::Tensor> parts;
  for (Entry* entry : entries) {
    const bool has = entry->observer->has_data();
    parts.push_back(has ? entry->min_val->to(at::kCPU, at::kFloat).flatten()
                        : at::zeros({c10::multiply_integers(entry->shape)}));
    parts.push_back(has ? entry->max_val->to(at::kCPU, at::kFloat).flatten()
                        : at::zeros({c10::multiply_integers(entry->shape)}));
    parts.push_back(at::full({1}, has ? 1.0f : 0.0f));
  }
  auto packed = at::cat(parts);
  group.allreduce(packed, c10d::ReduceOp::SUM, std::string(kWhat) + " (moving averages)");
  int64_t offset = 0;
  for (Entry* entry : entries) {
    const int64_t n = c10::multiply_integers(entry->shape);
    auto lo = packed.narrow(0, offset, n);
    auto hi = packed.narrow(0, offset + n, n);
    auto ranks = packed.narrow(0, offset + 2 * n, 1);
    offset += 2 * n + 1;
    entry->min_val->set_data((lo / ranks).reshape(entry->shape).to(entry->min_val->device()));
    entry->max_val->set_data((hi / ranks).reshape(entry->shape).to(entry->max_val->device()));
  }
}

/// An empty-count histogram on `bin_width`'s grid with `bins` bins and range [lo, hi].
HistogramObserver grid_histogram(const HistogramObserverOptions& options,
                                 const at::Tensor& bin_width, int64_t bins, const at::Tensor& lo,
                                 const at::Tensor& hi) {
  HistogramObserver grid(options);
  grid->counts.set_data(at::zeros({bin_width.size(0), bins}, at::kDouble));
  grid->bin_width.set_data(bin_width.clone());
  grid->min_val.set_data(lo.clone());
  grid->max_val.set_data(hi.clone());
  return grid;
}

/// Histograms: the source rank's grid grown to the global range (merge() grows a histogram to
/// cover what it merges, as observing that range would), every rank's counts rebinned onto
/// it by merge(), then one all-reduce SUM of all counts. Expects the global min / max in the
/// observers already (reduce_extremes) and keeps each rank's own counts until the sum.
void sum_histograms(std::vector<Entry*>& entries, const std::vector<HistogramObserver>& local,
                    const DistributedGroup& group) {
  if (entries.empty()) return;
  // The source ranks' bin widths: one all-gather of every histogram's widths.
  std::vector<at::Tensor> widths;
  for (size_t i = 0; i < entries.size(); ++i) {
    widths.push_back(local[i]->has_data() ? local[i]->bin_width.to(at::kCPU)
                                          : at::zeros({entries[i]->shape[0]}, at::kDouble));
  }
  const auto all_widths = group.allgather(at::cat(widths), std::string(kWhat) +
                                                               " (histogram bin widths)");
  std::vector<HistogramObserver> grids;
  std::vector<at::Tensor> counts;
  int64_t offset = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    Entry& entry = *entries[i];
    const int64_t channels = entry.shape[0];
    auto width = all_widths[entry.source].narrow(0, offset, channels);
    offset += channels;
    auto lo = entry.histogram->min_val.to(at::kCPU);  // global, from reduce_extremes
    auto hi = entry.histogram->max_val.to(at::kCPU);
    auto grid = grid_histogram(entry.histogram->options, width, entry.rank_bins[entry.source],
                               lo, hi);
    auto cover = grid_histogram(entry.histogram->options, width, 1, lo, hi);
    grid->merge(*cover);                                   // grow to the global range
    if (local[i]->has_data()) grid->merge(*local[i]);      // this rank's counts on the grid
    counts.push_back(grid->counts.flatten());
    grids.push_back(grid);
  }
  auto packed = at::cat(counts);
  group.allreduce(packed, c10d::ReduceOp::SUM, std::string(kWhat) + " (histogram counts)");
  offset = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    HistogramObserverImpl& target = *entries[i]->histogram;
    const auto& grid = grids[i];
    const int64_t n = grid->counts.numel();
    target.counts.set_data(
        packed.narrow(0, offset, n).reshape(grid->counts.sizes()).to(target.counts.device()));
    target.bin_width.set_data(grid->bin_width.to(target.bin_width.device()));
    offset += n;
  }
}

/// Shared-grid histograms counting on fixed grids: every rank's grid must be the same (one
/// all-reduce MIN of [width, -width] checks it), then one all-reduce SUM of the counts. The
/// counts are integers in float64, so the sum is exact in any order (below 2^53 values).
void sum_shared_grids(std::vector<Entry*>& entries, const DistributedGroup& group) {
  if (entries.empty()) return;
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<at::Tensor> widths;
  std::vector<at::Tensor> counts;
  for (Entry* entry : entries) {
    const HistogramObserverImpl& h = *entry->histogram;
    const bool has = data_state(*entry) != 0;
    const int64_t channels = entry->shape[0];
    auto width = has ? h.bin_width.to(at::kCPU, at::kDouble) : at::full({channels}, inf, at::kDouble);
    widths.push_back(width);
    widths.push_back(has ? -width : width);
    counts.push_back(has ? h.counts.to(at::kCPU, at::kDouble).flatten()
                         : at::zeros({c10::multiply_integers(entry->shape)}, at::kDouble));
  }
  auto packed_widths = at::cat(widths);
  group.allreduce(packed_widths, c10d::ReduceOp::MIN, std::string(kWhat) + " (shared grids)");
  auto packed_counts = at::cat(counts);
  int64_t offset = 0;
  for (Entry* entry : entries) {
    const int64_t channels = entry->shape[0];
    auto lowest = packed_widths.narrow(0, offset, channels);
    auto highest = -packed_widths.narrow(0, offset + channels, channels);
    offset += 2 * channels;
    TORCH_CHECK_VALUE(at::equal(lowest, highest), kWhat, ": shared-grid histogram '",
                      entry->name, "' has bin widths from ", lowest.min().item<double>(),
                      " to ", highest.max().item<double>(), " across ranks; fix_grid() must "
                      "follow a sync of the ranges on every rank (calibrate_distributed does)");
  }
  group.allreduce(packed_counts, c10d::ReduceOp::SUM, std::string(kWhat) +
                                                          " (shared-grid histogram counts)");
  offset = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    Entry& entry = *entries[i];
    HistogramObserverImpl& target = *entry.histogram;
    const int64_t n = c10::multiply_integers(entry.shape);
    target.counts.set_data(
        packed_counts.narrow(0, offset, n).reshape(entry.shape).to(target.counts.device()));
    offset += n;
  }
  // A rank without data takes the common grid (widths equal on the ranks with data).
  offset = 0;
  for (Entry* entry : entries) {
    const int64_t channels = entry->shape[0];
    auto width = packed_widths.narrow(0, offset, channels).clone();
    offset += 2 * channels;
    entry->histogram->bin_width.set_data(width.to(entry->histogram->bin_width.device()));
  }
}

/// Which observers a sync touches.
enum class Scope { kAll, kSharedGridRanges };

ObserverSyncReport sync_observers_in(torch::nn::Module& model, const DistributedGroup& group,
                                     Scope scope) {
  check_same_model(model, group, kWhat);
  at::NoGradGuard no_grad;
  auto entries = observers_of(model);
  exchange_metadata(entries, group);

  ObserverSyncReport report;
  std::vector<Entry*> extremes;
  std::vector<Entry*> moving;
  std::vector<Entry*> histograms;
  std::vector<Entry*> shared_grids;
  std::vector<HistogramObserver> local_histograms;
  for (auto& entry : entries) {
    if (scope == Scope::kSharedGridRanges && (entry.rule != Rule::kSharedGrid || entry.counting)) {
      continue;
    }
    if (entry.source < 0) {
      ++report.without_data;
      continue;
    }
    switch (entry.rule) {
      case Rule::kMinMax:
        extremes.push_back(&entry);
        ++report.min_max;
        break;
      case Rule::kMovingAverage:
        moving.push_back(&entry);
        ++report.moving_average;
        break;
      case Rule::kHistogram: {
        extremes.push_back(&entry);
        histograms.push_back(&entry);
        // This rank's own histogram as it is now (before its range becomes the global one).
        HistogramObserver own(entry.histogram->options);
        own->merge(*entry.histogram);
        local_histograms.push_back(own);
        ++report.histogram;
        break;
      }
      case Rule::kSharedGrid:
        extremes.push_back(&entry);
        if (entry.counting) shared_grids.push_back(&entry);
        ++report.shared_grid;
        break;
    }
  }
  reduce_extremes(extremes, group);
  average_moving(moving, group);
  sum_histograms(histograms, local_histograms, group);
  sum_shared_grids(shared_grids, group);

  // Quantizers that refresh their parameters from the observer (QAT with observers on) take
  // the synced statistics now, so scale and zero point agree on every rank too.
  for (const auto& item : model.named_modules()) {
    auto* quantizer = dynamic_cast<FakeQuantizeImpl*>(item.value().get());
    if (quantizer == nullptr || quantizer->options.dynamic()) continue;
    if (quantizer->observer_enabled() && quantizer->qparams().defined() &&
        quantizer->observer_ref().has_data()) {
      quantizer->update_qparams();
    }
  }
  return report;
}

}  // namespace

ObserverSyncReport sync_observers(torch::nn::Module& model, const DistributedGroup& group) {
  return sync_observers_in(model, group, Scope::kAll);
}

CalibrationReport calibrate_distributed(torch::nn::Module& model, const DistributedGroup& group,
                                        const std::function<void()>& forward_loop) {
  TORCH_CHECK_VALUE(static_cast<bool>(forward_loop), "tquant::calibrate_distributed: expected a "
                    "forward loop, got an empty function");
  // Shared-grid histograms: their ranges are synced after the range pass, so every rank fixes
  // the same grid; everything is synced after the last pass (a one-pass model: once).
  return detail::calibrate_in_passes(
      model, [&](CalibrationProgress&) { forward_loop(); }, {},
      [&] { sync_observers_in(model, group, Scope::kSharedGridRanges); },
      [&] { sync_observers(model, group); });
}

}  // namespace tquant
