#include <gtest/gtest.h>
#include "test_util.h"

#include "tquant/histogram_observer.h"

#include <torch/torch.h>

using namespace tquant;

namespace {

torch::Tensor laplace_with_outliers(int64_t n, int64_t seed) {
  torch::manual_seed(seed);
  auto u = torch::rand({n}) - 0.5;
  auto x = -u.sign() * torch::log1p(-2 * u.abs());  // Laplace(0, 1)
  x.index_put_({torch::indexing::Slice(0, 3)}, torch::tensor({40.0f, -35.0f, 30.0f}));
  return x;
}

}  // namespace

TEST(HistogramSearch, PercentileReturnsLeftEdgeOfTheBinReachingTheFraction) {
  std::vector<double> counts = {50, 30, 15, 5};
  HistogramView view{counts.data(), 4, 0.5};
  EXPECT_DOUBLE_EQ(amax_percentile(view, 50.0), 0.0);
  EXPECT_DOUBLE_EQ(amax_percentile(view, 80.0), 0.5);
  EXPECT_DOUBLE_EQ(amax_percentile(view, 96.0), 1.5);
  EXPECT_THROW(amax_percentile(view, 101.0), c10::ValueError);
}

TEST(HistogramSearch, EntropyStopsAtTheEndOfACompactDistribution) {
  // All mass below bin 200 of 2048: thresholds below 200 fold real mass into the last bin,
  // thresholds far above 200 spend the 128 levels on empty bins; both raise KL.
  std::vector<double> counts(2048, 0.0);
  for (int j = 0; j < 200; ++j) counts[j] = 1000.0 - 4.0 * j;
  HistogramView view{counts.data(), 2048, 0.01};
  const double amax = amax_entropy(view, 128);
  EXPECT_NEAR(amax, 2.0, 0.25);
}

TEST(HistogramSearch, EntropyAndMseClipLongTails) {
  // Laplace(0, 1) without the injected outliers: max |x| of 200k samples is about 12.
  auto x = laplace_with_outliers(200003, 1).slice(0, 3).abs();
  const double top = x.max().item<double>();
  auto hist = torch::histc(x, 2048, 0, top).to(torch::kDouble);
  HistogramView view{hist.data_ptr<double>(), 2048, top / 2048};
  const double entropy = amax_entropy(view, 128);
  const double mse = amax_mse(view, 127.0);
  // ACIQ (Banner et al. 2019): the MSE-optimal 8-bit clip of Laplace(b) is 9.89 b.
  EXPECT_NEAR(mse, 9.89, 1.0);
  EXPECT_LT(entropy, 0.95 * top);
  EXPECT_GT(entropy, 5.0);  // 99.3% of the mass lies below 5
}

TEST(HistogramSearch, MseKeepsRareHugeOutliersThatCostMoreToClip) {
  // Three outliers at 30..40 among 200k Laplace samples: clipping them costs more squared
  // error than the coarser step of a wide range, so MSE keeps most of the range.
  auto x = laplace_with_outliers(200000, 1).abs();
  const double top = x.max().item<double>();
  auto hist = torch::histc(x, 2048, 0, top).to(torch::kDouble);
  HistogramView view{hist.data_ptr<double>(), 2048, top / 2048};
  EXPECT_GT(amax_mse(view, 127.0), 20.0);
  EXPECT_LT(amax_percentile(view, 99.99), 12.0);
}

TEST(HistogramSearch, NoSearchChoosesAThresholdPastTheLastNonEmptyBin) {
  // Each histogram ends in empty padding, as a per-channel row shorter than its tensor or a
  // histogram whose bins were merged in pairs does. A search must give the same result as on
  // the histogram cut after its last non-empty bin L, and so never more than (L + 1) * width.
  struct Case {
    const char* name;
    std::vector<double> counts;
    int64_t start_bin;
  };
  std::vector<Case> cases;
  // Uniform counts of 1 in bins [0, 1024) of 2048: every threshold from 1024 on has KL 0, so
  // the last-minimum rule picked the last padded bin, 2048.
  std::vector<double> uniform(2048, 0.0);
  std::fill(uniform.begin(), uniform.begin() + 1024, 1.0);
  cases.push_back({"uniform", uniform, 128});
  // Counts on bins 1, 4, 7, ..., 151 of 256: with 127 steps the candidate centre 190.5 puts
  // every one of them exactly on the grid (step 1.5), error 0, so MSE picked it, in padding.
  std::vector<double> comb(256, 0.0);
  for (int j = 1; j <= 151; j += 3) comb[j] = 1.0;
  cases.push_back({"comb", comb, 128});
  // Ten counts of 1: the running sum of 0.1 stays below 1, so percentile 100 fell back to the
  // histogram's last edge.
  std::vector<double> ten(300, 0.0);
  std::fill(ten.begin(), ten.begin() + 10, 1.0);
  cases.push_back({"ten", ten, 1});
  // Laplace-like decay over 700 bins of 2048.
  std::vector<double> decay(2048, 0.0);
  for (int j = 0; j < 700; ++j) decay[j] = std::floor(5000.0 * std::exp(-j / 90.0)) + 1.0;
  cases.push_back({"decay", decay, 128});

  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const double width = 0.25;
    const HistogramView padded{c.counts.data(), static_cast<int64_t>(c.counts.size()), width};
    const int64_t last = last_nonempty_bin(padded);
    const HistogramView cut{c.counts.data(), last + 1, width};
    const double end = static_cast<double>(last + 1) * width;
    const double entropy = amax_entropy(padded, 128, c.start_bin);
    const double mse = amax_mse(padded, 127.0, c.start_bin);
    const double percentile = amax_percentile(padded, 100.0);
    EXPECT_LE(entropy, end);
    EXPECT_LE(mse, end);
    EXPECT_LE(percentile, end);
    if (c.start_bin <= last) {
      EXPECT_EQ(entropy, amax_entropy(cut, 128, c.start_bin));
      EXPECT_EQ(mse, amax_mse(cut, 127.0, c.start_bin));
    }
    EXPECT_EQ(percentile, amax_percentile(cut, 100.0));
    EXPECT_EQ(amax_percentile(padded, 99.9), amax_percentile(cut, 99.9));
  }
  EXPECT_EQ(last_nonempty_bin(HistogramView{uniform.data(), 2048, 1.0}), 1023);
  EXPECT_EQ(amax_entropy(HistogramView{uniform.data(), 2048, 1.0}, 128), 1024.0);
  EXPECT_LE(amax_mse(HistogramView{comb.data(), 256, 1.0}, 127.0), 151.5);
  EXPECT_EQ(amax_percentile(HistogramView{ten.data(), 300, 1.0}, 100.0), 10.0);
}

TEST(HistogramSearch, DataEndingBeforeStartBinKeepTheWholeRange) {
  // All data in bins [0, 50), searches starting at bin 128: no candidate lies in the data, so
  // the result covers all of it rather than a threshold in the empty bins.
  std::vector<double> counts(256, 0.0);
  for (int j = 0; j < 50; ++j) counts[j] = 100.0 - j;
  const HistogramView view{counts.data(), 256, 0.5};
  EXPECT_EQ(amax_entropy(view, 128, 128), 50 * 0.5);
  EXPECT_EQ(amax_mse(view, 127.5, 128), 49.5 * 0.5);
}

TEST(HistogramSearch, SearchSettingsAreValidated) {
  std::vector<double> counts(64, 1.0);
  HistogramView view{counts.data(), 64, 1.0};
  EXPECT_THROW(amax_entropy(view, 128, 128), c10::ValueError);  // fewer bins than start_bin
  EXPECT_THROW(amax_mse(view, 127.0, 1, 0), c10::ValueError);
  EXPECT_THROW(amax_entropy(HistogramView{}, 128), c10::ValueError);
}

TEST(HistogramObserver, MaxMethodReturnsLargestMagnitude) {
  HistogramObserver observer(HistogramObserverOptions().method(CalibrationMethod::kMax));
  observer->observe(torch::tensor({-7.0f, 2.0f, 3.0f}));
  EXPECT_FLOAT_EQ(observer->compute_amax(CalibrationMethod::kMax).item<float>(), 7.0f);
  EXPECT_FLOAT_EQ(observer->calculate_qparams().scale.item<float>(), 7.0f / 127.5f);
}

TEST(HistogramObserver, PercentileIgnoresOutliers) {
  HistogramObserver observer;
  observer->observe(laplace_with_outliers(100000, 2));
  const float amax = observer->compute_amax(CalibrationMethod::kPercentile).item<float>();
  EXPECT_LT(amax, 15.0f);
  EXPECT_GT(amax, 7.0f);  // 99.99% of Laplace(1) lies below ln(1e4) = 9.2
}

TEST(HistogramObserver, GrowingRangeKeepsEveryCount) {
  HistogramObserver observer;
  auto a = torch::rand({1000});
  auto b = torch::rand({1000}) * 3;
  observer->observe(a);
  const double width = observer->bin_width.item<double>();
  observer->observe(b);
  EXPECT_DOUBLE_EQ(observer->counts.sum().item<double>(), 2000.0);
  EXPECT_DOUBLE_EQ(observer->bin_width.item<double>(), width) << "width fixed by first batch";
  EXPECT_GT(observer->counts.size(1), 2048);
  EXPECT_GE(observer->counts.size(1) * width, b.max().item<double>());
  // The first batch's counts stay where they were.
  auto first = torch::histc(a, 2048, 0, a.max().item<double>());
  EXPECT_TRUE(torch::all(observer->counts[0].slice(0, 0, 2048) >= first.to(torch::kDouble))
                  .item<bool>());
}

TEST(HistogramObserver, GrowthPastMaxBinsMergesPairs) {
  HistogramObserver observer(HistogramObserverOptions().bins(16).max_bins(32));
  observer->observe(torch::linspace(0, 1, 100));
  observer->observe(torch::linspace(0, 5, 100));
  EXPECT_LE(observer->counts.size(1), 32);
  EXPECT_DOUBLE_EQ(observer->counts.sum().item<double>(), 200.0);
  EXPECT_GE(observer->counts.size(1) * observer->bin_width.item<double>(), 5.0);
}

TEST(HistogramObserver, MethodCanChangeWithoutCollectingAgain) {
  HistogramObserver observer;
  observer->observe(laplace_with_outliers(50000, 3));
  auto counts_before = observer->counts.clone();
  const float by_percentile = observer->calculate_qparams().scale.item<float>();
  observer->set_calibration_method(CalibrationMethod::kMax);
  const float by_max = observer->calculate_qparams().scale.item<float>();
  observer->set_calibration_method(CalibrationMethod::kPercentile, 99.9);
  const float by_p999 = observer->calculate_qparams().scale.item<float>();
  EXPECT_GT(by_max, by_percentile);
  EXPECT_LT(by_p999, by_percentile);
  EXPECT_TRUE(torch::equal(counts_before, observer->counts));
}

TEST(HistogramObserver, PerChannelHistogramsAreIndependent) {
  HistogramObserver observer(HistogramObserverOptions(
      QuantSpec().granularity(Granularity::kPerChannel).axis(1)));
  torch::manual_seed(4);
  auto x = torch::randn({4096, 3}) * torch::tensor({1.0f, 10.0f, 100.0f});
  observer->observe(x);
  observer->observe(x * 2);  // each channel's range doubles: bins of its width are appended
  EXPECT_EQ(observer->counts.sizes(), torch::IntArrayRef({3, 4096}));
  EXPECT_TRUE(torch::allclose(observer->counts.sum(1), torch::full({3}, 8192.0, torch::kDouble)));
  auto amax = observer->compute_amax(CalibrationMethod::kPercentile);
  ASSERT_EQ(amax.sizes(), torch::IntArrayRef({3}));
  EXPECT_NEAR(amax[1].item<float>() / amax[0].item<float>(), 10.0f, 2.0f);
  EXPECT_NEAR(amax[2].item<float>() / amax[0].item<float>(), 100.0f, 20.0f);
  auto qp = observer->calculate_qparams();
  EXPECT_EQ(qp.scale.sizes(), torch::IntArrayRef({3}));
  for (auto method : {CalibrationMethod::kEntropy, CalibrationMethod::kMse}) {
    EXPECT_EQ(observer->compute_amax(method).sizes(), torch::IntArrayRef({3}));
  }
}

TEST(HistogramObserver, PerChannelMatchesOnePerTensorObserverPerChannel) {
  torch::manual_seed(5);
  auto x = torch::randn({512, 2}) * torch::tensor({1.0f, 4.0f});
  HistogramObserver per_channel(HistogramObserverOptions(
      QuantSpec().granularity(Granularity::kPerChannel).axis(1)));
  per_channel->observe(x);
  for (int64_t c = 0; c < 2; ++c) {
    HistogramObserver single;
    single->observe(x.select(1, c).contiguous());
    for (auto method : {CalibrationMethod::kPercentile, CalibrationMethod::kEntropy,
                        CalibrationMethod::kMse}) {
      const double width = single->bin_width.item<double>();
      EXPECT_NEAR(per_channel->compute_amax(method)[c].item<float>(),
                  single->compute_amax(method).item<float>(), width * 1.01)
          << "channel " << c << " " << to_string(method);
    }
  }
}

namespace {

/// Three batches [rows, 5] whose range grows differently per channel: channel 0 keeps its
/// scale, 1 and 2 grow every batch (x1.3, x1.7), 3 grows once (x2.5 at the last batch), 4
/// shrinks. Student-t tails (normal / sqrt(chi^2_3 / 3)) cut at 6 so that entropy and MSE
/// clip, and a planted +-8 in row 0, so each batch's range is exactly 8 x its scale.
std::vector<torch::Tensor> growing_batches(int64_t seed) {
  torch::manual_seed(seed);
  const std::vector<std::vector<float>> scales = {
      {1.0f, 1.0f, 1.0f}, {1.0f, 1.3f, 1.69f}, {0.2f, 0.34f, 0.578f}, {3.0f, 3.0f, 7.5f},
      {2.0f, 1.6f, 1.28f}};
  std::vector<torch::Tensor> batches;
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t rows = std::vector<int64_t>{4099, 3001, 5003}[b];
    auto normal = torch::randn({rows, 5});
    auto chi2 = torch::randn({rows, 5, 3}).pow(2).sum(2) / 3;
    auto t = (normal / chi2.sqrt()).clamp(-6.0, 6.0);
    t[0] = torch::tensor({8.0f, -8.0f, 8.0f, -8.0f, 8.0f});
    std::vector<float> scale;
    for (const auto& s : scales) scale.push_back(s[b]);
    batches.push_back(t * torch::tensor(scale));
  }
  return batches;
}

/// Per-channel observer on `batches` against one per-tensor observer per channel fed the same
/// channel's values: same bin width, same extent (bins up to the last non-empty one), and every
/// method's amax within one bin of the per-tensor grid.
void expect_channels_match_per_tensor(const std::vector<torch::Tensor>& batches,
                                      const HistogramObserverOptions& options) {
  HistogramObserver per_channel(HistogramObserverOptions(options).spec(
      QuantSpec().granularity(Granularity::kPerChannel).axis(1)));
  for (const auto& x : batches) per_channel->observe(x);
  const auto max_bins = options.max_bins() > 0 ? options.max_bins() : 16 * options.bins();
  EXPECT_LE(per_channel->counts.size(1), max_bins);
  for (int64_t c = 0; c < batches[0].size(1); ++c) {
    SCOPED_TRACE("channel " + std::to_string(c));
    HistogramObserver single(options);
    for (const auto& x : batches) single->observe(x.select(1, c).contiguous());
    const double width = single->bin_width.item<double>();
    EXPECT_EQ(per_channel->bin_width[c].item<double>(), width);
    auto row = per_channel->counts[c];
    const int64_t extent = row.nonzero().max().item<int64_t>() + 1;
    EXPECT_EQ(extent, single->counts.size(1)) << "bins up to the channel's largest value";
    EXPECT_EQ(row.sum().item<double>(), single->counts.sum().item<double>());
    for (auto method : {CalibrationMethod::kMax, CalibrationMethod::kPercentile,
                        CalibrationMethod::kEntropy, CalibrationMethod::kMse}) {
      for (double p : {99.0, 99.9, 99.99}) {
        if (method != CalibrationMethod::kPercentile && p != 99.99) continue;
        const auto search = RangeSearchOptions(options.search()).percentile(p);
        const double got = per_channel->compute_amax(method, search)[c].item<double>();
        const double expected = single->compute_amax(method, search).item<double>();
        EXPECT_LE(std::abs(got - expected), width)
            << to_string(method) << " (p " << p << "): per channel " << got << ", per tensor "
            << expected << " (" << (got - expected) / width << " bins)";
      }
    }
  }
}

}  // namespace

TEST(HistogramObserver, PerChannelRangesThatGrowMatchPerTensorObservers) {
  // Each channel appends bins of its first width as its range grows, as the per-tensor
  // observer (and NVIDIA's calibrator) does, so batching changes nothing per channel.
  const auto batches = growing_batches(11);
  expect_channels_match_per_tensor(batches, HistogramObserverOptions());
  HistogramObserver observer(HistogramObserverOptions(
      QuantSpec().granularity(Granularity::kPerChannel).axis(1)));
  for (const auto& x : batches) observer->observe(x);
  // Channel 3 grew 2.5x: its 2048 bins became about 5120, and the tensor is that long.
  EXPECT_GT(observer->counts.size(1), 2 * 2048);
}

TEST(HistogramObserver, PerChannelGrowthPastMaxBinsMergesLikePerTensor) {
  // max_bins bounds memory: counts holds at most C x max_bins values. A channel that outgrows
  // it merges its bins in groups of 2^k exactly as a per-tensor observer with the same options.
  // Here 256 bins, at most 384: channel 1 appends (x1.3) then merges (x1.69), 2 merges then
  // appends, 3 merges once (x2.5, 640 bins needed).
  const auto batches = growing_batches(12);
  auto options = HistogramObserverOptions().bins(256).max_bins(384).search(
      RangeSearchOptions().start_bin(16));
  expect_channels_match_per_tensor(batches, options);
  auto spec = QuantSpec().granularity(Granularity::kPerChannel).axis(1);
  HistogramObserver first(HistogramObserverOptions(options).spec(spec));
  HistogramObserver all(HistogramObserverOptions(options).spec(spec));
  first->observe(batches[0]);
  for (const auto& x : batches) all->observe(x);
  auto factor = all->bin_width / first->bin_width;
  EXPECT_TRUE(torch::equal(factor, torch::tensor({1.0, 2.0, 2.0, 2.0, 1.0}, torch::kDouble)))
      << factor;
  // The longest row: channel 2's 370 bins (merged to 218 at x1.7, then appended up to x2.89).
  EXPECT_EQ(all->counts.size(1), 370);
}

TEST(HistogramObserver, AffineSpecKeepsOneSidedRange) {
  HistogramObserver observer(
      HistogramObserverOptions(QuantSpec(QuantDtype::kUInt8).symmetric(false))
          .method(CalibrationMethod::kMax));
  observer->observe(torch::tensor({-0.17f, 0.0f, 1.0f, 5.1f}));
  auto qp = observer->calculate_qparams();
  EXPECT_FLOAT_EQ(qp.scale.item<float>(), (5.1f + 0.17f) / 255.0f);
  EXPECT_GT(qp.zero_point.item<int>(), 0);
}

TEST(HistogramObserver, MergeEqualsObservingBothShards) {
  auto a = laplace_with_outliers(20000, 6);
  auto b = laplace_with_outliers(20000, 7) * 0.5;  // smaller range: same grid after merge
  HistogramObserver left, right, whole;
  left->observe(a);
  right->observe(b);
  whole->observe(a);
  whole->observe(b);
  left->merge(*right);
  EXPECT_DOUBLE_EQ(left->counts.sum().item<double>(), 40000.0);
  const double width = whole->bin_width.item<double>();
  for (auto method : {CalibrationMethod::kPercentile, CalibrationMethod::kEntropy,
                      CalibrationMethod::kMse}) {
    EXPECT_NEAR(left->compute_amax(method).item<float>(),
                whole->compute_amax(method).item<float>(), 2 * width)
        << to_string(method);
  }
}

TEST(HistogramObserver, AllZeroDataThenRealData) {
  HistogramObserver observer;
  observer->observe(torch::zeros({100}));
  EXPECT_FLOAT_EQ(observer->compute_amax(CalibrationMethod::kPercentile).item<float>(), 0.0f);
  observer->observe(torch::linspace(-1, 1, 101));
  EXPECT_DOUBLE_EQ(observer->counts.sum().item<double>(), 201.0);
  EXPECT_GT(observer->calculate_qparams().scale.item<float>(), 1e-3f);
}

TEST(HistogramObserver, BadInputIsAClearErrorAndLeavesStateUnchanged) {
  HistogramObserver observer;
  EXPECT_THROW(observer->calculate_qparams(), c10::ValueError);
  observer->observe(torch::randn({10}));
  auto counts = observer->counts.clone();
  EXPECT_THROW(observer->observe(torch::tensor({1.0f, NAN})), c10::ValueError);
  EXPECT_THROW(observer->observe(torch::empty({0})), c10::ValueError);
  EXPECT_THROW(observer->observe(torch::ones({2}, torch::kLong)), c10::TypeError);
  EXPECT_TRUE(torch::equal(counts, observer->counts));
  EXPECT_THROW(HistogramObserver(HistogramObserverOptions(
                   QuantSpec().granularity(Granularity::kPerBlock))),
               c10::NotImplementedError);
  HistogramObserver per_channel(HistogramObserverOptions(
      QuantSpec().granularity(Granularity::kPerChannel).axis(3)));
  EXPECT_THROW(per_channel->observe(torch::ones({2, 2})), c10::IndexError);
}

TEST(HistogramObserver, Fp8RejectsIntegerGridSearches) {
  HistogramObserver observer(HistogramObserverOptions(QuantSpec(QuantDtype::kFp8E4M3)));
  observer->observe(torch::randn({1000}));
  EXPECT_NO_THROW(observer->calculate_qparams());
  EXPECT_THROW(observer->compute_amax(CalibrationMethod::kEntropy), c10::NotImplementedError);
}

TEST(HistogramObserver, StateSurvivesCloneAndStateDictNames) {
  HistogramObserver observer;
  observer->observe(laplace_with_outliers(1000, 8));
  auto copy = std::dynamic_pointer_cast<HistogramObserverImpl>(observer->clone());
  ASSERT_TRUE(copy);
  EXPECT_TRUE(torch::equal(copy->counts, observer->counts));
  EXPECT_FLOAT_EQ(copy->compute_amax(CalibrationMethod::kEntropy).item<float>(),
                  observer->compute_amax(CalibrationMethod::kEntropy).item<float>());
  auto names = observer->named_buffers().keys();
  EXPECT_EQ(names, (std::vector<std::string>{"counts", "bin_width", "min_val", "max_val"}));
}

TEST(HistogramObserver, PerChannelCountsEqualFloorOfAbsOverWidth) {
  // Both collection paths (the fused CPU loop, and the ATen path used for other devices and
  // for NonFinitePolicy::kIgnore) count bin floor(|x| / width) in float32, clamped.
  torch::manual_seed(9);
  auto x = torch::randn({257, 5}) * torch::tensor({1.0f, 3.0f, 0.5f, 10.0f, 2.0f});
  for (int64_t axis : {1, 0}) {
    auto data = axis == 1 ? x : x.t().contiguous();  // channels along `axis` either way
    HistogramObserver observer(HistogramObserverOptions(
        QuantSpec().granularity(Granularity::kPerChannel).axis(axis)));
    observer->observe(data);
    auto width = observer->bin_width.to(torch::kFloat);
    for (int64_t c = 0; c < 5; ++c) {
      auto column = x.select(1, c).abs();
      auto bins = torch::floor(column / width[c]).clamp(0, 2047).to(torch::kLong);
      auto expected = torch::bincount(bins, {}, 2048).to(torch::kDouble);
      EXPECT_TRUE(torch::equal(observer->counts[c], expected)) << "axis " << axis << " channel " << c;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Shared grid (HistogramGrid::kShared): range pass, fix_grid(), counting pass.

namespace {

HistogramObserverOptions shared_grid_options(QuantSpec spec) {
  return HistogramObserverOptions(spec).grid(HistogramGrid::kShared);
}

/// Batches whose ranges differ (each scaled and shifted by its index), 17 columns, odd rows;
/// every other batch passed through ReLU (a spike of exact zeros).
std::vector<torch::Tensor> mixed_range_batches() {
  std::vector<torch::Tensor> batches;
  for (int64_t i = 0; i < 6; ++i) {
    torch::manual_seed(100 + i);
    auto x = torch::randn({33 + 2 * i, 17}) * (1.0 + i) + 0.3 * i;
    batches.push_back(i % 2 == 1 ? torch::relu(x) : x);
  }
  return batches;
}

/// Range pass over every group of batches (one observer each), ranges merged, grids fixed,
/// counting pass, counts merged: as N ranks would, in one process.
HistogramObserver shared_grid_over(const std::vector<std::vector<torch::Tensor>>& groups,
                                   const HistogramObserverOptions& options) {
  std::vector<HistogramObserver> parts;
  for (const auto& group : groups) {
    parts.emplace_back(options);
    for (const auto& x : group) parts.back()->observe(x);
  }
  HistogramObserver ranges(options);
  for (auto& part : parts) ranges->merge(*part);
  for (size_t i = 0; i < groups.size(); ++i) {
    parts[i]->min_val.set_data(ranges->min_val.clone());  // what the ranks' MIN / MAX gives
    parts[i]->max_val.set_data(ranges->max_val.clone());
    parts[i]->fix_grid();
    for (const auto& x : groups[i]) parts[i]->observe(x);
  }
  HistogramObserver total(options);
  for (auto& part : parts) total->merge(*part);
  return total;
}

constexpr CalibrationMethod kAllMethods[] = {CalibrationMethod::kMax,
                                             CalibrationMethod::kPercentile,
                                             CalibrationMethod::kEntropy, CalibrationMethod::kMse};

}  // namespace

TEST(HistogramObserver, SharedGridGivesTheSameHistogramHoweverTheDataAreSplit) {
  const auto batches = mixed_range_batches();
  for (const QuantSpec spec : {QuantSpec(), QuantSpec().granularity(Granularity::kPerChannel).axis(1),
                               QuantSpec(QuantDtype::kUInt8).symmetric(false)}) {
    const auto options = shared_grid_options(spec);
    auto one = shared_grid_over({batches}, options);
    const std::vector<std::vector<torch::Tensor>> splits[] = {
        {{batches[0], batches[1], batches[2]}, {batches[3], batches[4], batches[5]}},
        {{batches[5]}, {batches[0], batches[3]}, {batches[1], batches[2], batches[4]}},
        {{batches[4], batches[1]}, {}, {batches[0], batches[2], batches[3], batches[5]}}};
    for (const auto& split : splits) {
      auto parts = shared_grid_over(split, options);
      EXPECT_TRUE(torch::equal(parts->counts, one->counts)) << to_string(spec);
      EXPECT_TRUE(torch::equal(parts->bin_width, one->bin_width));
      EXPECT_TRUE(torch::equal(parts->min_val, one->min_val));
      EXPECT_TRUE(torch::equal(parts->max_val, one->max_val));
      for (const auto method : kAllMethods) {
        EXPECT_TRUE(torch::equal(parts->compute_amax(method), one->compute_amax(method)))
            << to_string(spec) << " " << to_string(method);
        parts->set_calibration_method(method);
        one->set_calibration_method(method);
        const auto a = parts->calculate_qparams();
        const auto b = one->calculate_qparams();
        EXPECT_TRUE(torch::equal(a.scale, b.scale) && torch::equal(a.zero_point, b.zero_point))
            << to_string(spec) << " " << to_string(method);
      }
    }
  }
}

TEST(HistogramObserver, SharedGridWidthIsTheWholeRangeOverBins) {
  const auto batches = mixed_range_batches();
  HistogramObserver shared(shared_grid_options(QuantSpec()));
  for (const auto& x : batches) shared->observe(x);
  EXPECT_TRUE(shared->awaiting_grid());
  EXPECT_FALSE(shared->has_data());
  EXPECT_EQ(shared->counts.numel(), 0);
  shared->fix_grid();
  for (const auto& x : batches) shared->observe(x);
  double top = 0;
  for (const auto& x : batches) top = std::max(top, x.abs().max().item<double>());
  EXPECT_EQ(shared->bin_width.item<double>(), top / 2048);
  EXPECT_EQ(shared->counts.size(1), 2048);
  int64_t total = 0;
  for (const auto& x : batches) total += x.numel();
  EXPECT_EQ(shared->counts.sum().item<double>(), static_cast<double>(total));

  // On one batch the shared grid is the streaming one: the first batch fixes the width.
  HistogramObserver streaming;
  HistogramObserver one_batch(shared_grid_options(QuantSpec()));
  streaming->observe(batches[3]);
  one_batch->observe(batches[3]);
  one_batch->fix_grid();
  one_batch->observe(batches[3]);
  EXPECT_TRUE(torch::equal(one_batch->counts, streaming->counts));
  EXPECT_TRUE(torch::equal(one_batch->bin_width, streaming->bin_width));
}

TEST(HistogramObserver, SharedGridCountsValuesBeyondTheGridInTheLastBin) {
  for (const QuantSpec spec : {QuantSpec(), QuantSpec().granularity(Granularity::kPerChannel)}) {
    HistogramObserver h(shared_grid_options(spec));
    h->observe(torch::tensor({{1.0f, -2.0f}, {0.5f, 1.5f}}));
    h->fix_grid();
    h->observe(torch::tensor({{9.0f, -2.0f}, {0.5f, 1.5f}}));  // 9 lies beyond the grid
    EXPECT_EQ(h->counts.sum().item<double>(), 4.0) << to_string(spec);
    // The last bin holds 9 (clamped) and -2 (the right edge); per channel, both are channel 0's.
    EXPECT_EQ(h->counts[0][-1].item<double>(), 2.0) << to_string(spec);
    EXPECT_EQ(h->abs_max().max().item<float>(), 9.0f);  // max stays exact
  }
}

TEST(HistogramObserver, SharedGridStepsAreCheckedWithClearErrors) {
  HistogramObserver h(shared_grid_options(QuantSpec()));
  EXPECT_NE(test::error_message([&] { h->fix_grid(); }).find("no data observed yet"),
            std::string::npos);
  h->observe(torch::randn({5, 3}));
  EXPECT_NE(test::error_message([&] { h->compute_amax(CalibrationMethod::kMax); })
                .find("call fix_grid() and observe the data again"),
            std::string::npos);
  h->fix_grid();
  EXPECT_NE(test::error_message([&] { h->fix_grid(); }).find("the grid is fixed already"),
            std::string::npos);
  HistogramObserver streaming;
  streaming->observe(torch::randn({5, 3}));
  EXPECT_NE(test::error_message([&] { streaming->fix_grid(); }).find("this observer streams"),
            std::string::npos);
  EXPECT_NE(test::error_message([&] { h->merge(*streaming); }).find("grids"), std::string::npos);
  // Another range: another grid, refused rather than rebinned.
  HistogramObserver other(shared_grid_options(QuantSpec()));
  other->observe(torch::randn({5, 3}) * 3);
  other->fix_grid();
  other->observe(torch::randn({5, 3}) * 3);
  EXPECT_NE(test::error_message([&] { h->merge(*other); }).find("on different grids"),
            std::string::npos);
  EXPECT_NE(h->describe().find("shared grid"), std::string::npos);
}
