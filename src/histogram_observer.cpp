#include "tquant/histogram_observer.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace tquant {

namespace {

constexpr const char* kKind = "HistogramObserver";
constexpr int64_t kDefaultGrowthLimit = 16;  // max_bins = 16 * bins unless set

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Merges adjacent bins of a 1-D row in groups of `factor` (zero-padding the end).
at::Tensor merge_bins(const at::Tensor& row, int64_t factor) {
  const int64_t len = row.size(0);
  const int64_t padded = ceil_div(len, factor) * factor;
  return at::constant_pad_nd(row, {0, padded - len}).reshape({-1, factor}).sum(1);
}

/// Moves counts of bins of width src_width onto bins of width dst_width, spreading each
/// source bin's count over the destination bins it overlaps (uniform density inside a bin).
/// Mass beyond the last destination bin goes into the last bin.
std::vector<double> rebin_uniform(const double* src, int64_t src_len, double src_width,
                                  int64_t dst_len, double dst_width) {
  std::vector<double> dst(dst_len, 0.0);
  for (int64_t j = 0; j < src_len; ++j) {
    if (src[j] == 0.0) continue;
    if (src_width == 0.0 || dst_width == 0.0) {
      dst[0] += src[j];
      continue;
    }
    const double lo = j * src_width;
    const double hi = lo + src_width;
    int64_t k = std::min<int64_t>(static_cast<int64_t>(lo / dst_width), dst_len - 1);
    for (; k < dst_len; ++k) {
      const double b_lo = k * dst_width;
      const double b_hi = (k == dst_len - 1) ? std::max(hi, b_lo + dst_width) : b_lo + dst_width;
      const double overlap = std::min(hi, b_hi) - std::max(lo, b_lo);
      if (overlap > 0) dst[k] += src[j] * overlap / src_width;
      if (b_hi >= hi) break;
    }
  }
  return dst;
}

}  // namespace

std::string to_string(HistogramGrid grid) {
  return grid == HistogramGrid::kShared ? "shared" : "streaming";
}

HistogramGrid histogram_grid_from_string(const std::string& name) {
  if (name == "streaming") return HistogramGrid::kStreaming;
  TORCH_CHECK_VALUE(name == "shared", "expected a histogram grid 'streaming' or 'shared', got '",
                    name, "'");
  return HistogramGrid::kShared;
}

HistogramObserverImpl::HistogramObserverImpl(HistogramObserverOptions options_)
    : options(std::move(options_)) {
  reset();
}

void HistogramObserverImpl::reset() {
  check_spec(options.spec());
  TORCH_CHECK_NOT_IMPLEMENTED(options.spec().granularity() != Granularity::kPerBlock, kKind,
                              " supports per-tensor and per-channel granularity, got per_block");
  TORCH_CHECK_VALUE(options.bins() >= 2, kKind, ": expected at least 2 bins, got ",
                    options.bins());
  TORCH_CHECK_VALUE(options.max_bins() == 0 || options.max_bins() >= options.bins(), kKind,
                    ": expected max_bins >= bins (", options.bins(), "), got ", options.max_bins());
  counts = register_buffer("counts", at::empty({0, 0}, at::kDouble));
  bin_width = register_buffer("bin_width", at::empty({0}, at::kDouble));
  min_val = register_buffer("min_val", at::empty({0}));
  max_val = register_buffer("max_val", at::empty({0}));
}

int64_t HistogramObserverImpl::channel_count(const at::Tensor& x) const {
  if (options.spec().granularity() == Granularity::kPerTensor) return 1;
  return x.size(canonical_axis(options.spec().axis(), x.dim(), kKind));
}

void HistogramObserverImpl::grow_to_cover(const at::Tensor& channel_amax) {
  // Each channel follows the per-tensor rule (NVIDIA's): its first non-zero data fix its bin
  // width, bins of that width are appended as its range grows, and past the cap its bins merge
  // in groups of 2^k. Channels share one [C, L] tensor, L the longest row any channel needs; a
  // shorter channel's row is zero past its data, which the searches ignore. So a channel's
  // counts and width are those a per-tensor observer of its data alone would hold.
  const int64_t cap = options.max_bins() > 0 ? options.max_bins()
                                             : kDefaultGrowthLimit * options.bins();
  auto amax = channel_amax.to(at::kCPU, at::kDouble).contiguous();
  auto widths = bin_width.to(at::kCPU).contiguous();
  const double* amax_data = amax.data_ptr<double>();
  double* width_data = widths.data_ptr<double>();
  const int64_t channels = counts.size(0);
  const int64_t len = counts.size(1);
  std::vector<int64_t> factor(channels, 1);
  int64_t new_len = 0;  // longest row a growing channel needs; 0 while none grows
  bool widths_changed = false;
  bool merged = false;
  for (int64_t c = 0; c < channels; ++c) {
    const double target = amax_data[c];
    const double width = width_data[c];
    if (!(target > 0.0)) continue;
    if (width == 0.0) {
      // First non-zero data of this channel: its width is fixed now (only zeros, in bin 0, so far).
      width_data[c] = target / static_cast<double>(options.bins());
      widths_changed = true;
      continue;
    }
    const int64_t needed = static_cast<int64_t>(std::ceil(target / width));
    if (needed <= len) continue;
    while (ceil_div(needed, factor[c]) > cap) factor[c] *= 2;
    new_len = std::max(new_len, ceil_div(needed, factor[c]));
    if (factor[c] > 1) {
      width_data[c] = width * static_cast<double>(factor[c]);
      widths_changed = merged = true;
    }
  }
  if (widths_changed) bin_width.set_data(widths.to(bin_width.device()));
  if (new_len == 0) return;
  if (!merged) {  // appending only: every row keeps its bins, the tensor gets longer
    counts.set_data(at::constant_pad_nd(counts, {0, new_len - len}).contiguous());
    return;
  }
  // Merged rows get shorter; the others must keep every bin up to their last non-empty one.
  auto position = at::arange(1, len + 1, counts.options().dtype(at::kLong));
  auto ends = (counts.gt(0).to(at::kLong) * position).amax(1).to(at::kCPU).contiguous();
  for (int64_t c = 0; c < channels; ++c) {
    if (factor[c] == 1) new_len = std::max(new_len, ends.data_ptr<int64_t>()[c]);
  }
  std::vector<at::Tensor> rows;
  rows.reserve(channels);
  for (int64_t c = 0; c < channels; ++c) {
    auto row = factor[c] > 1 ? merge_bins(counts[c], factor[c]) : counts[c];
    rows.push_back(row.size(0) >= new_len ? row.slice(0, 0, new_len)
                                          : at::constant_pad_nd(row, {0, new_len - row.size(0)}));
  }
  counts.set_data(at::stack(rows).contiguous());
}

void HistogramObserverImpl::add_per_tensor(const at::Tensor& abs_x) {
  const double width = bin_width.item<double>();
  const int64_t len = counts.size(1);
  if (width == 0.0) {
    counts[0][0] += static_cast<double>(abs_x.numel());
    return;
  }
  // histc puts a value equal to the upper edge into the last bin, as NVIDIA's collector does,
  // and drops values beyond it: on a fixed (shared) grid those are clamped into the last bin.
  const double top = static_cast<double>(len) * width;
  at::Tensor in_range = abs_x;
  if (options.grid() == HistogramGrid::kShared && abs_x.numel() > 0 &&
      abs_x.max().item<double>() > top) {
    in_range = abs_x.clamp_max(top);
  }
  auto hist = at::histc(in_range, len, 0.0, top);
  counts.add_(hist.to(counts.device(), at::kDouble).unsqueeze(0));
}

at::Tensor HistogramObserverImpl::channel_last_bins() const {
  // A channel's own extent is n_c = ceil(max|x|_c / w_c) bins (what a per-tensor histogram of
  // its data holds); the value on its right edge belongs to its last bin, as with histc.
  auto abs_max = at::maximum(-min_val, max_val).to(at::kCPU, at::kDouble).contiguous();
  auto widths = bin_width.to(at::kCPU).contiguous();
  const int64_t channels = counts.size(0);
  const int64_t len = counts.size(1);
  auto last = at::zeros({channels}, at::kLong);
  for (int64_t c = 0; c < channels; ++c) {
    const double top = abs_max.data_ptr<double>()[c];
    const double width = widths.data_ptr<double>()[c];
    if (!(top > 0.0) || !(width > 0.0)) continue;  // only zeros (or nothing finite) so far
    const double extent = std::min(std::ceil(top / width), static_cast<double>(len));
    last.data_ptr<int64_t>()[c] = std::max<int64_t>(static_cast<int64_t>(extent), 1) - 1;
  }
  return last;
}

void HistogramObserverImpl::add_per_channel(const at::Tensor& abs_rows, const at::Tensor& weights) {
  const int64_t channels = abs_rows.size(0);
  const int64_t len = counts.size(1);
  auto width = bin_width.to(abs_rows.device(), at::kFloat);
  auto safe_width = at::where(width > 0, width, at::ones_like(width)).unsqueeze(1);
  auto last = channel_last_bins().to(abs_rows.device()).unsqueeze(1);
  auto index = at::minimum(at::floor(abs_rows / safe_width).clamp_max(len - 1).to(at::kLong), last);
  index += (at::arange(channels, index.options()) * len).unsqueeze(1);
  auto hist = weights.defined()
                  ? at::bincount(index.flatten(), weights.flatten(), channels * len)
                  : at::bincount(index.flatten(), {}, channels * len);
  counts.add_(hist.to(counts.device(), at::kDouble).reshape({channels, len}));
}

void HistogramObserverImpl::add_per_channel_cpu(const at::Tensor& rows) {
  // One pass over x with no temporaries: threads own disjoint blocks of channels (so their
  // counters never collide), and each reads its columns of every row. The bin index is
  // floor(|x| / width) in float32, clamped to the channel's last bin: the same arithmetic as
  // add_per_channel, so both paths count identically.
  const int64_t count = rows.size(0);
  const int64_t channels = rows.size(1);
  const int64_t len = counts.size(1);
  const int64_t row_stride = rows.stride(0);
  const int64_t col_stride = rows.stride(1);
  auto widths = bin_width.to(at::kFloat).contiguous();
  const float* width = widths.data_ptr<float>();
  const float* data = rows.data_ptr<float>();
  TORCH_INTERNAL_ASSERT(counts.is_contiguous());
  double* out = counts.data_ptr<double>();
  auto last_bins = channel_last_bins();
  const int64_t* last = last_bins.data_ptr<int64_t>();
  std::vector<float> last_float(last, last + channels);  // exact: last < max_bins << 2^24
  // parallel_for hands each thread one large range; walking it in blocks of 32 channels keeps
  // the counters being hit (32 x 2048 float64 at the default bins: 512 KiB) in L2 instead of
  // missing on each add.
  constexpr int64_t kChannelsPerBlock = 32;
  at::parallel_for(0, channels, kChannelsPerBlock, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; block += kChannelsPerBlock) {
      const int64_t block_end = std::min(block + kChannelsPerBlock, end);
      for (int64_t n = 0; n < count; ++n) {
        const float* row = data + n * row_stride;
        for (int64_t c = block; c < block_end; ++c) {
          const float w = width[c] > 0.0f ? width[c] : 1.0f;
          // |x| / w >= 0, so truncation is floor (and avoids a libm floorf call).
          const float q = std::fabs(row[c * col_stride]) / w;
          out[c * len + (q < last_float[c] ? static_cast<int64_t>(q) : last[c])] += 1.0;
        }
      }
    }
  });
}

at::Tensor HistogramObserverImpl::observe(const at::Tensor& x) {
  detail::check_observed_input(x, kKind);
  at::NoGradGuard no_grad;
  const auto& spec = options.spec();
  auto xd = x.detach();
  auto [lo, hi] = detail::finite_min_max(xd, spec, options.non_finite(), kKind);
  at::Tensor finite;
  if (options.non_finite() == NonFinitePolicy::kIgnore && !at::isfinite(xd).all().item<bool>()) {
    finite = at::isfinite(xd);
  }
  const int64_t channels = channel_count(xd);
  lo = lo.reshape({channels}).to(min_val.device(), at::kFloat);
  hi = hi.reshape({channels}).to(max_val.device(), at::kFloat);
  const bool shared = options.grid() == HistogramGrid::kShared;
  if (min_val.numel() == 0) {
    if (!shared) {  // a shared grid gets its counts from fix_grid()
      counts.set_data(at::zeros({channels, options.bins()}, counts.options()));
      bin_width.set_data(at::zeros({channels}, bin_width.options()));
    }
    min_val.set_data(lo);
    max_val.set_data(hi);
  } else {
    TORCH_CHECK_VALUE(channels == min_val.size(0), kKind, ": expected ", min_val.size(0),
                      " channels along axis ", spec.axis(), " as in earlier batches, got ",
                      channels, " from an input of shape ", x.sizes());
    min_val.set_data(at::minimum(min_val, lo));
    max_val.set_data(at::maximum(max_val, hi));
  }
  if (!shared) {
    grow_to_cover(at::maximum(-lo, hi));
  } else if (awaiting_grid()) {
    return x;  // range pass: min / max only
  }
  add_counts(xd, finite);
  return x;
}

void HistogramObserverImpl::add_counts(const at::Tensor& xd, const at::Tensor& finite) {
  const auto& spec = options.spec();
  const int64_t channels = counts.size(0);
  if (spec.granularity() == Granularity::kPerTensor) {
    auto abs_x = xd.abs().to(at::kFloat);
    if (finite.defined()) abs_x = abs_x.masked_select(finite);
    add_per_tensor(abs_x);
    return;
  }
  const int64_t axis = canonical_axis(spec.axis(), xd.dim(), kKind);
  if (!finite.defined() && xd.device().is_cpu() && xd.scalar_type() == at::kFloat &&
      counts.device().is_cpu()) {
    add_per_channel_cpu(xd.movedim(axis, -1).reshape({-1, channels}));
    return;
  }
  auto rows = xd.movedim(axis, 0).reshape({channels, -1}).abs().to(at::kFloat);
  at::Tensor weights;
  if (finite.defined()) {
    auto finite_rows = finite.movedim(axis, 0).reshape({channels, -1});
    rows = at::where(finite_rows, rows, at::zeros({}, rows.options()));
    weights = finite_rows.to(at::kFloat);
  }
  add_per_channel(rows, weights);
}

bool HistogramObserverImpl::awaiting_grid() const {
  return options.grid() == HistogramGrid::kShared && min_val.numel() > 0 && counts.numel() == 0;
}

void HistogramObserverImpl::fix_grid() {
  TORCH_CHECK_VALUE(options.grid() == HistogramGrid::kShared, kKind,
                    ": fix_grid() is for a shared grid (HistogramGrid::kShared); this observer "
                    "streams (kStreaming) and fixes its grid from its first batch");
  TORCH_CHECK_VALUE(awaiting_grid(), kKind, ": fix_grid() ends the range pass; ",
                    has_data() ? "the grid is fixed already (reset_stats() starts over)"
                               : "no data observed yet");
  // The width a streaming histogram takes from a first batch with this range: max|x| / bins,
  // in float64 from the float32 extremes. A channel without a non-zero finite value gets
  // width 0 (everything in bin 0), as in streaming mode.
  auto amax = at::maximum(-min_val, max_val).to(at::kCPU, at::kDouble).clamp_min(0.0);
  bin_width.set_data((amax / static_cast<double>(options.bins())).to(bin_width.device()));
  counts.set_data(at::zeros({min_val.size(0), options.bins()}, counts.options()));
}

at::Tensor HistogramObserverImpl::shape_for_spec(const at::Tensor& per_channel) const {
  return options.spec().granularity() == Granularity::kPerTensor ? per_channel.reshape({})
                                                                 : per_channel;
}

at::Tensor HistogramObserverImpl::abs_max() const {
  TORCH_CHECK_VALUE(min_val.numel() > 0, kKind, ": no data observed yet");
  return shape_for_spec(at::maximum(-min_val, max_val).clamp_min(0));
}

at::Tensor HistogramObserverImpl::compute_amax(CalibrationMethod method) const {
  return compute_amax(method, options.search());
}

at::Tensor HistogramObserverImpl::compute_amax(CalibrationMethod method,
                                               const RangeSearchOptions& search) const {
  TORCH_CHECK_VALUE(!awaiting_grid(), kKind, ": the range pass of this shared-grid histogram "
                    "is done but its grid is not fixed: call fix_grid() and observe the data "
                    "again (tquant::calibrate does both)");
  TORCH_CHECK_VALUE(has_data(), kKind, ": no data observed yet; run calibration before asking "
                    "for a range");
  TORCH_CHECK_NOT_IMPLEMENTED(
      is_integer(options.spec().dtype()) ||
          (method != CalibrationMethod::kEntropy && method != CalibrationMethod::kMse),
      kKind, ": the ", to_string(method), " search models an integer grid; for ",
      to_string(options.spec().dtype()), " use max or percentile");
  auto host_counts = counts.to(at::kCPU).contiguous();
  auto host_width = bin_width.to(at::kCPU).contiguous();
  auto host_abs_max = at::maximum(-min_val, max_val).to(at::kCPU, at::kDouble).contiguous();
  const int64_t channels = host_counts.size(0);
  const int64_t len = host_counts.size(1);
  auto amax = at::empty({channels}, at::kFloat);
  for (int64_t c = 0; c < channels; ++c) {
    HistogramView view{host_counts.data_ptr<double>() + c * len, len,
                       host_width.data_ptr<double>()[c]};
    const double abs_max = std::max(0.0, host_abs_max.data_ptr<double>()[c]);
    double value = view.bin_width == 0.0
                       ? 0.0  // only zeros seen in this channel
                       : search_amax(view, method, search, options.spec(), abs_max);
    amax.data_ptr<float>()[c] = static_cast<float>(std::min(value, abs_max));
  }
  return shape_for_spec(amax.to(min_val.device()));
}

QParams HistogramObserverImpl::calculate_qparams() {
  auto amax = compute_amax(options.method());
  if (options.spec().symmetric()) return qparams_from_amax(amax, options.spec(), options.eps());
  auto lo = at::maximum(shape_for_spec(min_val), -amax);
  auto hi = at::minimum(shape_for_spec(max_val), amax);
  return tquant::calculate_qparams(lo, hi, options.spec(), options.eps());
}

void HistogramObserverImpl::set_calibration_method(CalibrationMethod method,
                                                   std::optional<double> percentile) {
  if (percentile) {
    TORCH_CHECK_VALUE(*percentile >= 0.0 && *percentile <= 100.0, kKind,
                      ": expected 0 <= percentile <= 100, got ", *percentile);
    options.search().percentile(*percentile);
  }
  options.method(method);
}

void HistogramObserverImpl::reset_stats() {
  counts.set_data(at::empty({0, 0}, counts.options()));
  bin_width.set_data(at::empty({0}, bin_width.options()));
  min_val.set_data(at::empty({0}, min_val.options()));
  max_val.set_data(at::empty({0}, max_val.options()));
}

void HistogramObserverImpl::merge(const ObserverBase& other_base) {
  const auto* other = dynamic_cast<const HistogramObserverImpl*>(&other_base);
  TORCH_CHECK_TYPE(other != nullptr, kKind, ": can only merge another HistogramObserver");
  TORCH_CHECK_VALUE(to_string(other->options.spec()) == to_string(options.spec()) &&
                        other->options.bins() == options.bins() &&
                        other->options.grid() == options.grid(),
                    kKind, ": cannot merge observers of different specs, bin counts or grids: ",
                    to_string(options.spec()), " (", options.bins(), " bins, ",
                    to_string(options.grid()), " grid) and ", to_string(other->options.spec()),
                    " (", other->options.bins(), " bins, ", to_string(other->options.grid()),
                    " grid)");
  if (options.grid() == HistogramGrid::kShared) {
    merge_shared(*other);
    return;
  }
  if (!other->has_data()) return;
  if (!has_data()) {
    counts.set_data(other->counts.to(counts.device()).clone());
    bin_width.set_data(other->bin_width.to(bin_width.device()).clone());
    min_val.set_data(other->min_val.to(min_val.device()).clone());
    max_val.set_data(other->max_val.to(max_val.device()).clone());
    return;
  }
  TORCH_CHECK_VALUE(other->counts.size(0) == counts.size(0), kKind, ": cannot merge ",
                    other->counts.size(0), " channels into ", counts.size(0));
  auto other_lo = other->min_val.to(min_val.device());
  auto other_hi = other->max_val.to(max_val.device());
  grow_to_cover(at::maximum(-other_lo, other_hi));
  min_val.set_data(at::minimum(min_val, other_lo));
  max_val.set_data(at::maximum(max_val, other_hi));

  auto src = other->counts.to(at::kCPU).contiguous();
  auto src_width = other->bin_width.to(at::kCPU).contiguous();
  auto dst_width = bin_width.to(at::kCPU).contiguous();
  const int64_t len = counts.size(1);
  auto added = at::empty({counts.size(0), len}, at::kDouble);
  for (int64_t c = 0; c < counts.size(0); ++c) {
    auto moved = rebin_uniform(src.data_ptr<double>() + c * src.size(1), src.size(1),
                               src_width.data_ptr<double>()[c], len,
                               dst_width.data_ptr<double>()[c]);
    std::copy(moved.begin(), moved.end(), added.data_ptr<double>() + c * len);
  }
  counts.add_(added.to(counts.device()));
}

void HistogramObserverImpl::merge_shared(const HistogramObserverImpl& other) {
  // Exact: ranges combine by min / max, counts on the same grid add. Histograms on different
  // grids (another range, or one still in its range pass) are refused rather than rebinned.
  if (other.min_val.numel() == 0) return;
  if (min_val.numel() == 0) {
    counts.set_data(other.counts.to(counts.device()).clone());
    bin_width.set_data(other.bin_width.to(bin_width.device()).clone());
    min_val.set_data(other.min_val.to(min_val.device()).clone());
    max_val.set_data(other.max_val.to(max_val.device()).clone());
    return;
  }
  TORCH_CHECK_VALUE(other.min_val.size(0) == min_val.size(0), kKind, ": cannot merge ",
                    other.min_val.size(0), " channels into ", min_val.size(0));
  const bool both_ranging = awaiting_grid() && other.awaiting_grid();
  const bool same_grid = has_data() && other.has_data() &&
                         counts.sizes() == other.counts.sizes() &&
                         at::equal(bin_width.to(at::kCPU), other.bin_width.to(at::kCPU));
  TORCH_CHECK_VALUE(both_ranging || same_grid, kKind, ": cannot merge shared-grid histograms ",
                    "on different grids: expected both in their range pass, or both counting "
                    "on equal bin widths (fix_grid() after the same min / max), got ",
                    awaiting_grid() ? "a range pass" : "a fixed grid", " and ",
                    other.awaiting_grid() ? "a range pass" : "a fixed grid",
                    both_ranging || !has_data() || !other.has_data() ? "" : " of other widths");
  min_val.set_data(at::minimum(min_val, other.min_val.to(min_val.device())));
  max_val.set_data(at::maximum(max_val, other.max_val.to(max_val.device())));
  if (same_grid) counts.add_(other.counts.to(counts.device()));
}

std::string HistogramObserverImpl::describe() const {
  std::ostringstream out;
  out << kKind << " " << to_string(options.spec()) << " " << to_string(options.method());
  if (options.method() == CalibrationMethod::kPercentile) out << "(" << options.search().percentile() << ")";
  if (options.grid() == HistogramGrid::kShared) out << ", shared grid";
  if (awaiting_grid()) {
    out << ", range pass, |x| <= " << at::maximum(-min_val, max_val).max().item<float>();
  } else if (has_data()) {
    out << ", " << counts.size(1) << " bins, |x| <= " << at::maximum(-min_val, max_val).max().item<float>();
  } else {
    out << ", (no data)";
  }
  return out.str();
}

void HistogramObserverImpl::pretty_print(std::ostream& stream) const {
  stream << "tquant::" << kKind << "(" << to_string(options.spec()) << ", "
         << to_string(options.method()) << ", bins=" << options.bins()
         << (options.grid() == HistogramGrid::kShared ? ", grid=shared" : "") << ")";
}

}  // namespace tquant
