#include <gtest/gtest.h>

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
  observer->set_method(CalibrationMethod::kMax);
  const float by_max = observer->calculate_qparams().scale.item<float>();
  observer->set_method(CalibrationMethod::kPercentile, 99.9);
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
  observer->observe(x * 2);  // channels grow: pairs merge, counts kept
  EXPECT_EQ(observer->counts.sizes(), torch::IntArrayRef({3, 2048}));
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
