// Golden tests: tquant's histogram observer and range searches against NVIDIA ModelOpt 0.47's
// HistogramCalibrator (num_bits 8, signed, 2048 bins, torch_hist=True), per tensor and, with
// one calibrator per channel, per channel (histogram_per_channel.pt, see the second half).
//
// The fixture tests/golden/data/histogram.pt comes from tests/golden/gen_histogram_golden.py;
// per case it holds the batches, ModelOpt's final histogram (counts and bin edges) and its
// compute_amax for entropy, MSE and three percentiles. tquant must build the same histogram
// and find every amax within one bin width: ModelOpt returns float32 bin edges (or centres)
// and sums in float32 / float64 where tquant sums in float64 / long double, so near-ties of
// the entropy and MSE curves could resolve to a neighbouring bin. Run on ModelOpt's own
// histogram, tquant's free search functions must moreover pick ModelOpt's bin.
//
// MSE: ModelOpt 0.47's compute_amax("mse") passes num_bits and unsigned positionally into the
// `bias` and `num_bits` slots of fake_tensor_quant, so it always returns the first candidate.
// The fixture's "amax_mse" is ModelOpt's own search with the intended 8-bit narrow-range fake
// quant (127 levels per amax); that is what tquant is compared with (see tests/golden/README.md).

#include <cmath>
#include <cstdint>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "tquant/histogram_observer.h"
#include "tquant/histogram_search.h"

namespace {

using tquant::CalibrationMethod;
using tquant::HistogramObserver;
using tquant::HistogramObserverOptions;
using tquant::HistogramView;
using tquant::QuantDtype;
using tquant::QuantSpec;
using tquant::RangeSearchOptions;

/// amax may differ from ModelOpt's by at most this many bin widths.
constexpr double kAmaxToleranceBins = 1.0;
/// ModelOpt's compute_amax defaults.
constexpr int64_t kStartBin = 128;
constexpr int64_t kStride = 1;

c10::IValue load_fixture(const std::string& file) {
  const std::string path = std::string(TQUANT_GOLDEN_DIR) + "/" + file;
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot open golden fixture ", path,
              " (regenerate it with tests/golden/gen_histogram_golden.py)");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return torch::pickle_load(bytes);
}

c10::IValue get(const c10::IValue& dict, const std::string& key) {
  const auto entries = dict.toGenericDict();
  auto it = entries.find(key);
  TORCH_CHECK(it != entries.end(), "golden fixture has no entry '", key, "'");
  return it->value();
}

/// One ModelOpt calibration run, as stored by gen_histogram_golden.py.
struct GoldenCase {
  std::string name;
  std::vector<at::Tensor> batches;
  at::Tensor counts;         // float64 [B], ModelOpt's histc counts
  at::Tensor edges;          // float32 [B + 1]
  at::Tensor bins_after_batch;
  double bin_width = 0.0;    // edges[1] - edges[0]
  double abs_max = 0.0;
  double entropy = 0.0;
  double mse = 0.0;          // intended narrow-range MSE search
  std::vector<double> percentiles;
  std::vector<double> amax_percentile;

  HistogramView view() const {
    return HistogramView{counts.data_ptr<double>(), counts.numel(), bin_width};
  }
};

/// One calibrator's results (everything run_case stores but the batches).
GoldenCase parse_case(const std::string& name, const c10::IValue& value,
                      std::vector<at::Tensor> batches) {
  GoldenCase c;
  c.name = name;
  c.batches = std::move(batches);
  c.counts = get(value, "counts").toTensor().to(at::kDouble).contiguous();
  c.edges = get(value, "bin_edges").toTensor().to(at::kDouble).contiguous();
  c.bins_after_batch = get(value, "bins_after_batch").toTensor();
  c.bin_width = (c.edges[1] - c.edges[0]).item<double>();
  c.abs_max = get(value, "abs_max").toTensor().item<double>();
  c.entropy = get(value, "amax_entropy").toTensor().item<double>();
  c.mse = get(value, "amax_mse").toTensor().item<double>();
  auto p = get(value, "percentiles").toTensor().to(at::kDouble).contiguous();
  auto a = get(value, "amax_percentile").toTensor().to(at::kDouble).contiguous();
  c.percentiles.assign(p.data_ptr<double>(), p.data_ptr<double>() + p.numel());
  c.amax_percentile.assign(a.data_ptr<double>(), a.data_ptr<double>() + a.numel());
  return c;
}

std::vector<at::Tensor> tensors(const c10::IValue& list) {
  std::vector<at::Tensor> out;
  for (const c10::IValue& x : list.toList()) out.push_back(x.toTensor());
  return out;
}

const std::vector<GoldenCase>& golden_cases() {
  static const std::vector<GoldenCase> cases = [] {
    std::vector<GoldenCase> out;
    const c10::IValue root = load_fixture("histogram.pt");
    for (const auto& entry : root.toGenericDict()) {
      out.push_back(parse_case(entry.key().toStringRef(), entry.value(),
                               tensors(get(entry.value(), "batches"))));
    }
    return out;
  }();
  return cases;
}

/// A per-channel run (histogram_per_channel.pt): the batches, and one ModelOpt calibrator per
/// channel, fed that channel's slice of every batch (so channels[c].batches are those slices).
struct PerChannelCase {
  std::string name;
  int64_t axis = 0;
  std::vector<at::Tensor> batches;
  std::vector<GoldenCase> channels;
};

const std::vector<PerChannelCase>& per_channel_cases() {
  static const std::vector<PerChannelCase> cases = [] {
    std::vector<PerChannelCase> out;
    const c10::IValue root = load_fixture("histogram_per_channel.pt");
    for (const auto& entry : root.toGenericDict()) {
      PerChannelCase pc;
      pc.name = entry.key().toStringRef();
      pc.axis = get(entry.value(), "axis").toTensor().item<int64_t>();
      pc.batches = tensors(get(entry.value(), "batches"));
      const auto channels = get(entry.value(), "channels").toList();
      for (size_t c = 0; c < channels.size(); ++c) {
        std::vector<at::Tensor> slices;
        for (const auto& x : pc.batches) slices.push_back(x.select(pc.axis, c).contiguous());
        pc.channels.push_back(parse_case(pc.name + "/c" + std::to_string(c), channels.get(c),
                                         std::move(slices)));
      }
      out.push_back(std::move(pc));
    }
    return out;
  }();
  return cases;
}

QuantSpec int8_spec() { return QuantSpec(QuantDtype::kInt8); }
/// ModelOpt's MSE fake quant is narrow: q in [-127, 127], scale = 127 / amax.
QuantSpec int8_narrow_spec() { return QuantSpec(QuantDtype::kInt8).narrow_range(true); }

HistogramObserver observe_all(const GoldenCase& c, const QuantSpec& spec) {
  HistogramObserver observer{HistogramObserverOptions(spec)};
  for (const auto& x : c.batches) observer->observe(x);
  return observer;
}

/// How strictly a tquant amax must match ModelOpt's.
///   kWithinOneBin: |got - expected| <= kAmaxToleranceBins bin widths.
///   kSameBin:      also the same candidate bin (|got - expected| < half a bin): on ModelOpt's
///                  own histogram the searches are the same algorithm, so only the float32
///                  rounding of ModelOpt's edges and centres may separate the results. This
///                  catches an off-by-one bin (e.g. the right instead of the left edge).
enum class Match { kWithinOneBin, kSameBin };

/// Prints the difference in bins and checks it.
void expect_amax_near(const GoldenCase& c, const std::string& what, double expected, double got,
                      Match match = Match::kWithinOneBin) {
  const double bins = (got - expected) / c.bin_width;
  std::cout << "[ golden   ] " << std::left << std::setw(24) << c.name << std::setw(34) << what
            << std::setprecision(9) << " ModelOpt " << std::setw(12) << expected << " tquant "
            << std::setw(12) << got << " diff " << std::setprecision(3) << bins << " bins\n";
  EXPECT_LE(std::abs(got - expected), kAmaxToleranceBins * c.bin_width)
      << c.name << " " << what << ": ModelOpt " << expected << ", tquant " << got << " ("
      << bins << " bins of " << c.bin_width << ")";
  if (match == Match::kSameBin) {
    EXPECT_LT(std::abs(bins), 0.5) << c.name << " " << what << ": tquant picked another bin "
                                   << "than ModelOpt (" << bins << " bins away)";
  }
}

std::string percentile_name(double p) {
  std::ostringstream out;
  out << "percentile " << p;
  return out.str();
}

TEST(GoldenHistogram, FixtureHoldsTheExpectedCases) {
  std::set<std::string> names;
  for (const auto& c : golden_cases()) {
    names.insert(c.name);
    EXPECT_FALSE(c.batches.empty()) << c.name;
    EXPECT_EQ(c.edges.numel(), c.counts.numel() + 1) << c.name;
    EXPECT_EQ(c.percentiles.size(), c.amax_percentile.size()) << c.name;
  }
  std::set<std::string> expected = {"laplace_grow_once", "relu_zeros_growing",
                                    "student_t_fixed_range", "student_t_growing"};
  for (const std::string kind : {"relu_spike", "gelu_spike", "signed_spike"}) {
    for (const std::string variant : {"_order_a", "_order_b", "_order_c", "_one_batch"}) {
      expected.insert(kind + variant);
    }
  }
  EXPECT_EQ(names, expected);
}

TEST(GoldenHistogram, HistogramMatchesModelOpt) {
  // Same bins (first batch: 2048 over [0, max|x|]; later: bins of that width appended up to
  // the new max|x|) and the same torch.histc counts.
  for (const auto& c : golden_cases()) {
    SCOPED_TRACE(c.name);
    HistogramObserver observer{HistogramObserverOptions(int8_spec())};
    for (size_t b = 0; b < c.batches.size(); ++b) {
      observer->observe(c.batches[b]);
      EXPECT_EQ(observer->counts.size(1), c.bins_after_batch[b].item<int64_t>())
          << "bins after batch " << b;
    }
    ASSERT_EQ(observer->counts.size(0), 1);
    ASSERT_EQ(observer->counts.size(1), c.counts.numel());
    EXPECT_EQ(observer->bin_width.item<double>(), c.bin_width);
    auto got = observer->counts[0].to(at::kDouble);
    const int64_t differing = (got != c.counts).sum().item<int64_t>();
    EXPECT_EQ(differing, 0) << "bins with different counts; total |difference| "
                            << (got - c.counts).abs().sum().item<double>();
    EXPECT_EQ(got.sum().item<double>(), c.counts.sum().item<double>());
  }
}

TEST(GoldenHistogram, ObserverEntropyWithinOneBinOfModelOpt) {
  for (const auto& c : golden_cases()) {
    auto observer = observe_all(c, int8_spec());
    const double got = observer->compute_amax(CalibrationMethod::kEntropy).item<double>();
    expect_amax_near(c, "observer entropy", c.entropy, got);
  }
}

TEST(GoldenHistogram, ObserverMseWithinOneBinOfModelOpt) {
  for (const auto& c : golden_cases()) {
    auto observer = observe_all(c, int8_narrow_spec());
    const double got = observer->compute_amax(CalibrationMethod::kMse).item<double>();
    expect_amax_near(c, "observer mse (narrow int8)", c.mse, got);
  }
}

TEST(GoldenHistogram, ObserverPercentileWithinOneBinOfModelOpt) {
  for (const auto& c : golden_cases()) {
    auto observer = observe_all(c, int8_spec());
    for (size_t k = 0; k < c.percentiles.size(); ++k) {
      const double got =
          observer
              ->compute_amax(CalibrationMethod::kPercentile,
                             RangeSearchOptions().percentile(c.percentiles[k]))
              .item<double>();
      expect_amax_near(c, "observer " + percentile_name(c.percentiles[k]),
                       c.amax_percentile[k], got);
    }
  }
}

TEST(GoldenHistogram, SearchLevelsMatchModelOpt) {
  // ModelOpt: entropy merges into 1 << (num_bits - 1 + unsigned) = 128 levels; its MSE fake
  // quant has max bound 2^(num_bits - 1) - 1 = 127 (narrow range).
  EXPECT_EQ(tquant::entropy_levels(int8_spec()), 128);
  EXPECT_EQ(tquant::steps_per_amax(int8_narrow_spec()), 127.0);
}

/// Runs tquant's search for `method` on ModelOpt's own histogram of case `c`: it must pick
/// ModelOpt's bin (for percentile: at each of the case's percentiles).
void expect_search_on_its_histogram_picks_the_same_bin(const GoldenCase& c,
                                                       CalibrationMethod method) {
  switch (method) {
    case CalibrationMethod::kEntropy:
      expect_amax_near(c, "amax_entropy on its histogram", c.entropy,
                       tquant::amax_entropy(c.view(), tquant::entropy_levels(int8_spec()),
                                            kStartBin, kStride),
                       Match::kSameBin);
      return;
    case CalibrationMethod::kMse:
      expect_amax_near(c, "amax_mse on its histogram", c.mse,
                       tquant::amax_mse(c.view(), tquant::steps_per_amax(int8_narrow_spec()),
                                        kStartBin, kStride),
                       Match::kSameBin);
      return;
    case CalibrationMethod::kPercentile:
      for (size_t k = 0; k < c.percentiles.size(); ++k) {
        expect_amax_near(c, "amax_" + percentile_name(c.percentiles[k]) + " on its hist",
                         c.amax_percentile[k],
                         tquant::amax_percentile(c.view(), c.percentiles[k]), Match::kSameBin);
      }
      return;
    case CalibrationMethod::kMax:
      break;
  }
  FAIL() << "max is not a histogram search";
}

TEST(GoldenHistogram, EntropyOnModelOptHistogramPicksTheSameBin) {
  for (const auto& c : golden_cases()) {
    expect_search_on_its_histogram_picks_the_same_bin(c, CalibrationMethod::kEntropy);
  }
}

TEST(GoldenHistogram, MseOnModelOptHistogramPicksTheSameBin) {
  for (const auto& c : golden_cases()) {
    expect_search_on_its_histogram_picks_the_same_bin(c, CalibrationMethod::kMse);
  }
}

TEST(GoldenHistogram, PercentileOnModelOptHistogramPicksTheSameBin) {
  for (const auto& c : golden_cases()) {
    expect_search_on_its_histogram_picks_the_same_bin(c, CalibrationMethod::kPercentile);
  }
}

// Spikes at zero (gen_histogram_golden.py's make_spike_cases): the same values after a ReLU,
// after a GELU and before either (control), each observed in three batch orders and in one
// batch. The first batch fixes the bin width, so each order bins the same values on another
// grid; one batch is the grid of a shared-grid histogram (HistogramGrid::kShared) on any
// split. Every case is also in the one-bin checks above (tquant vs ModelOpt on each grid);
// this test measures how far each method moves between grids, for both tools, and what the
// streaming merge of per-batch histograms (what a multi-rank sync does) does to it.

const GoldenCase& golden_case(const std::string& name) {
  for (const auto& c : golden_cases()) {
    if (c.name == name) return c;
  }
  TORCH_CHECK(false, "golden fixture has no case '", name, "'");
}

/// A streaming observer per batch, merged in order (each batch binned on its own grid first).
HistogramObserver merged_per_batch(const std::vector<at::Tensor>& batches, const QuantSpec& spec) {
  HistogramObserver total{HistogramObserverOptions(spec)};
  for (const auto& x : batches) {
    HistogramObserver part{HistogramObserverOptions(spec)};
    part->observe(x);
    total->merge(*part);
  }
  return total;
}

TEST(GoldenHistogram, SpikeAtZeroRangesOnEveryGrid) {
  const std::vector<std::string> orders = {"_order_a", "_order_b", "_order_c"};
  for (const std::string kind : {"relu_spike", "gelu_spike", "signed_spike"}) {
    const GoldenCase& one = golden_case(kind + "_one_batch");
    const double width = one.bin_width;  // the coarsest grid of the four
    // tquant's shared grid: the same grid and counts for every order, so the same ranges.
    at::Tensor shared_amax;
    for (const auto& order : orders) {
      HistogramObserver h{HistogramObserverOptions(int8_spec()).grid(tquant::HistogramGrid::kShared)};
      const auto& batches = golden_case(kind + order).batches;
      for (const auto& x : batches) h->observe(x);
      h->fix_grid();
      for (const auto& x : batches) h->observe(x);
      EXPECT_EQ(h->bin_width.item<double>(), width) << kind << order;
      auto amax = at::stack({h->compute_amax(CalibrationMethod::kEntropy),
                             h->compute_amax(CalibrationMethod::kMse),
                             h->compute_amax(CalibrationMethod::kPercentile)});
      if (!shared_amax.defined()) shared_amax = amax;
      EXPECT_TRUE(at::equal(amax, shared_amax)) << kind << order;
    }
    const double shared_entropy = shared_amax[0].item<double>();
    expect_amax_near(one, "shared grid entropy", one.entropy, shared_entropy);

    // Spread over the four grids (three orders and one batch), in bins of the coarsest grid.
    struct Spread {
      double lo = 1e300;
      double hi = -1e300;
      void add(double v) { lo = std::min(lo, v), hi = std::max(hi, v); }
    };
    Spread mo_entropy, mo_percentile, mo_mse, tq_entropy;
    for (const auto& name : {kind + orders[0], kind + orders[1], kind + orders[2],
                             kind + "_one_batch"}) {
      const GoldenCase& c = golden_case(name);
      mo_entropy.add(c.entropy);
      mo_percentile.add(c.amax_percentile[1]);  // 99.99
      mo_mse.add(c.mse);
      tq_entropy.add(observe_all(c, int8_spec())->compute_amax(CalibrationMethod::kEntropy).item<double>());
    }
    // Streaming merge of one histogram per batch (four "ranks", each its own grid).
    const auto& first_order = golden_case(kind + orders[0]).batches;
    auto merged = merged_per_batch(first_order, int8_spec());
    const double merged_entropy = merged->compute_amax(CalibrationMethod::kEntropy).item<double>();
    const double merged_mse = merged_per_batch(first_order, int8_narrow_spec())
                                  ->compute_amax(CalibrationMethod::kMse)
                                  .item<double>();
    const double merged_percentile =
        merged->compute_amax(CalibrationMethod::kPercentile).item<double>();
    const double zeros = [&] {
      double n = 0, total = 0;
      for (const auto& x : one.batches) n += x.eq(0).sum().item<double>(), total += x.numel();
      return n / total;
    }();
    std::cout << std::setprecision(5) << "[ spike    ] " << kind << " (exact zeros "
              << 100 * zeros << " %, bins of " << width << "):"
              << " spread over 4 grids, ModelOpt: entropy " << (mo_entropy.hi - mo_entropy.lo) / width
              << " bins [" << mo_entropy.lo << ", " << mo_entropy.hi << "], percentile 99.99 "
              << (mo_percentile.hi - mo_percentile.lo) / width << " bins, mse "
              << (mo_mse.hi - mo_mse.lo) / width << " bins; tquant streaming entropy "
              << (tq_entropy.hi - tq_entropy.lo) / width << " bins; shared grid entropy "
              << shared_entropy << " (every order); merge of per-batch histograms: entropy "
              << merged_entropy << " (" << (merged_entropy - one.entropy) / width
              << " bins from one batch), mse " << merged_mse << " ("
              << (merged_mse - one.mse) / width << "), percentile " << merged_percentile << " ("
              << (merged_percentile - one.amax_percentile[1]) / width << ")\n";
  }
}

// Per channel (histogram_per_channel.pt, tests/golden/gen_histogram_per_channel_golden.py):
// ModelOpt has no per-channel histograms, so its reference is one calibrator per channel. A
// per-channel observer must hold, in each channel's row, that calibrator's histogram (same
// width, same bins) and find the same ranges, however differently the channels' ranges grew
// across the batches (merging pairs of bins there, as an earlier version did, changed entropy by
// up to 295 bins).

HistogramObserver observe_per_channel(const PerChannelCase& pc, const QuantSpec& spec,
                                      int64_t axis) {
  HistogramObserver observer{HistogramObserverOptions(
      QuantSpec(spec).granularity(tquant::Granularity::kPerChannel).axis(axis))};
  for (const auto& x : pc.batches) {
    observer->observe(axis == pc.axis ? x : x.movedim(pc.axis, axis).contiguous());
  }
  return observer;
}

/// Non-zero values whose |x| / width lies within float32 rounding (1e-6 relative) of a bin
/// edge: ModelOpt's histc and tquant's floor(|x| / width) may put them on either side.
int64_t values_near_edges(const std::vector<at::Tensor>& batches, double width) {
  int64_t near = 0;
  for (const auto& x : batches) {
    auto r = x.abs().to(at::kDouble) / width;
    auto on_edge = (r - r.round()).abs() <= 1e-6 * r.clamp_min(1.0);
    near += (r.gt(0) & on_edge).sum().item<int64_t>();
  }
  return near;
}

TEST(GoldenHistogramPerChannel, FixtureHoldsAGrowingCase) {
  ASSERT_EQ(per_channel_cases().size(), 1u);
  const auto& pc = per_channel_cases()[0];
  EXPECT_EQ(pc.name, "per_channel_growing");
  ASSERT_EQ(pc.channels.size(), static_cast<size_t>(pc.batches[0].size(pc.axis)));
  // The case is only a test of growth if channels grow, and by different amounts.
  std::set<int64_t> final_bins;
  int64_t grown = 0;
  for (const auto& c : pc.channels) {
    EXPECT_EQ(c.edges.numel(), c.counts.numel() + 1) << c.name;
    const int64_t last = c.bins_after_batch[-1].item<int64_t>();
    final_bins.insert(last);
    grown += last > c.bins_after_batch[0].item<int64_t>() ? 1 : 0;
  }
  EXPECT_GE(grown, static_cast<int64_t>(pc.channels.size()) / 2);
  EXPECT_GE(final_bins.size(), pc.channels.size() / 2);
}

TEST(GoldenHistogramPerChannel, HistogramsMatchModelOptChannelByChannel) {
  for (const auto& pc : per_channel_cases()) {
    auto observer = observe_per_channel(pc, int8_spec(), pc.axis);
    ASSERT_EQ(observer->counts.size(0), static_cast<int64_t>(pc.channels.size()));
    // The channel axis does not matter: the same data along axis 0 count identically.
    auto moved = observe_per_channel(pc, int8_spec(), pc.axis == 0 ? 1 : 0);
    EXPECT_TRUE(torch::equal(moved->counts, observer->counts));
    int64_t longest = 0;
    for (size_t k = 0; k < pc.channels.size(); ++k) {
      const auto& c = pc.channels[k];
      SCOPED_TRACE(c.name);
      const int64_t bins = c.counts.numel();
      longest = std::max(longest, bins);
      EXPECT_EQ(observer->bin_width[k].item<double>(), c.bin_width);
      auto row = observer->counts[k];
      const int64_t extent = row.nonzero().max().item<int64_t>() + 1;
      EXPECT_EQ(extent, bins) << "ModelOpt's bins end where the channel's data end";
      auto got = row.slice(0, 0, bins);
      EXPECT_EQ(got.sum().item<double>(), c.counts.sum().item<double>());
      // Values on a bin edge may fall on either side; each moves one count out of one bin
      // and into its neighbour.
      const double moved_counts = (got - c.counts).abs().sum().item<double>();
      const int64_t near = values_near_edges(c.batches, c.bin_width);
      std::cout << "[ golden   ] " << c.name << ": " << bins << " bins, |counts - ModelOpt| "
                << moved_counts << ", values within rounding of an edge " << near << "\n";
      EXPECT_LE(moved_counts, 2.0 * static_cast<double>(near));
    }
    EXPECT_EQ(observer->counts.size(1), longest) << "the tensor is as long as its longest row";
  }
}

TEST(GoldenHistogramPerChannel, ObserverRangesWithinOneBinOfModelOpt) {
  for (const auto& pc : per_channel_cases()) {
    auto observer = observe_per_channel(pc, int8_spec(), pc.axis);
    auto narrow = observe_per_channel(pc, int8_narrow_spec(), pc.axis);
    auto entropy = observer->compute_amax(CalibrationMethod::kEntropy);
    auto mse = narrow->compute_amax(CalibrationMethod::kMse);
    auto max = observer->compute_amax(CalibrationMethod::kMax);
    for (size_t k = 0; k < pc.channels.size(); ++k) {
      const auto& c = pc.channels[k];
      EXPECT_EQ(max[k].item<double>(), c.abs_max) << c.name;
      expect_amax_near(c, "per-channel entropy", c.entropy, entropy[k].item<double>());
      expect_amax_near(c, "per-channel mse (narrow int8)", c.mse, mse[k].item<double>());
      for (size_t j = 0; j < c.percentiles.size(); ++j) {
        const double got = observer
                               ->compute_amax(CalibrationMethod::kPercentile,
                                              RangeSearchOptions().percentile(c.percentiles[j]))
                               [k].item<double>();
        expect_amax_near(c, "per-channel " + percentile_name(c.percentiles[j]),
                         c.amax_percentile[j], got);
      }
    }
  }
}

TEST(GoldenHistogramPerChannel, SearchesOnModelOptHistogramsPickTheSameBin) {
  for (const auto& pc : per_channel_cases()) {
    for (const auto& c : pc.channels) {
      for (auto method : {CalibrationMethod::kEntropy, CalibrationMethod::kMse,
                          CalibrationMethod::kPercentile}) {
        expect_search_on_its_histogram_picks_the_same_bin(c, method);
      }
    }
  }
}

}  // namespace
