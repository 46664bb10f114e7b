// Golden tests: tquant's min-max observers against torch.ao.quantization (torch 2.11).
//
// The fixture tests/golden/data/minmax.pt comes from tests/golden/gen_minmax_golden.py; it
// holds the input batches and, after every batch, torch.ao's min_val, max_val and
// calculate_qparams(). tquant must reproduce them exactly: min / max are plain reductions and
// the qparams formulas (scale = amax / ((qmax - qmin) / 2) or (max - min) / (qmax - qmin), in
// float32; zero_point = qmin - round(min / scale)) are the same float32 operations.

#include <cstdint>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "tquant/observer.h"

namespace {

using tquant::Granularity;
using tquant::MinMaxObserverOptions;
using tquant::QuantDtype;
using tquant::QuantSpec;

constexpr int64_t kBatches = 4;

c10::IValue load_fixture(const std::string& file) {
  const std::string path = std::string(TQUANT_GOLDEN_DIR) + "/" + file;
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot open golden fixture ", path,
              " (regenerate it with tests/golden/gen_minmax_golden.py)");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return torch::pickle_load(bytes);
}

const c10::IValue& fixture() {
  static const c10::IValue value = load_fixture("minmax.pt");
  return value;
}

c10::IValue get(const c10::IValue& dict, const std::string& key) {
  const auto entries = dict.toGenericDict();
  auto it = entries.find(key);
  TORCH_CHECK(it != entries.end(), "golden fixture has no entry '", key, "'");
  return it->value();
}

std::vector<at::Tensor> tensors(const c10::IValue& list) {
  std::vector<at::Tensor> out;
  for (const c10::IValue& item : list.toList()) out.push_back(item.toTensor());
  return out;
}

// Bit-exact equality of two tensors of the same number of elements (compared as float64,
// which holds every float32 and int32 value exactly).
::testing::AssertionResult exactly_equal(const at::Tensor& expected, const at::Tensor& got,
                                         const std::string& what) {
  auto e = expected.to(at::kDouble).flatten().contiguous();
  auto g = got.to(at::kDouble).flatten().contiguous();
  if (e.numel() != g.numel()) {
    return ::testing::AssertionFailure() << what << ": expected " << e.numel()
                                         << " values, got " << g.numel();
  }
  const double* ep = e.data_ptr<double>();
  const double* gp = g.data_ptr<double>();
  int64_t mismatches = 0;
  std::ostringstream first;
  for (int64_t i = 0; i < e.numel(); ++i) {
    if (ep[i] != gp[i]) {
      if (mismatches++ == 0) {
        first.precision(9);
        first << "first at [" << i << "]: torch.ao " << ep[i] << ", tquant " << gp[i];
      }
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << mismatches << " of " << e.numel()
                                       << " values differ; " << first.str();
}

struct SpecCase {
  const char* name;  // as in the fixture keys
  QuantSpec spec;
};

// torch.ao's (dtype, qscheme, quant_min, quant_max) in tquant's terms.
std::vector<SpecCase> spec_cases() {
  return {
      {"qint8_symmetric", QuantSpec(QuantDtype::kInt8).symmetric(true)},
      {"quint8_affine", QuantSpec(QuantDtype::kUInt8).symmetric(false)},
      {"qint8_narrow", QuantSpec(QuantDtype::kInt8).symmetric(true).narrow_range(true)},
  };
}

const std::vector<std::string>& data_names() {
  static const std::vector<std::string> names = {"t2d", "t3d"};
  return names;
}

std::vector<int64_t> axes_of(const std::string& data) {
  return data == "t2d" ? std::vector<int64_t>{0, 1} : std::vector<int64_t>{0, 2};
}

// Feeds the fixture's batches to `observer` and compares its state and qparams with torch.ao's
// after every batch.
template <typename Holder>
void expect_matches_torch_ao(Holder observer, const std::string& key, const std::string& data) {
  SCOPED_TRACE(key);
  const auto batches = tensors(get(get(fixture(), "inputs"), data));
  const auto expected = get(get(fixture(), "cases"), key);
  const auto min_val = get(expected, "min_val").toTensor();
  const auto max_val = get(expected, "max_val").toTensor();
  const auto scale = get(expected, "scale").toTensor();
  const auto zero_point = get(expected, "zero_point").toTensor();
  ASSERT_EQ(static_cast<int64_t>(batches.size()), kBatches);
  ASSERT_EQ(min_val.size(0), kBatches);
  for (int64_t b = 0; b < kBatches; ++b) {
    const std::string step = key + " after batch " + std::to_string(b);
    observer->observe(batches[b]);
    const tquant::QParams qparams = observer->calculate_qparams();
    ASSERT_EQ(observer->min_val.sizes(), min_val[b].sizes()) << step;
    ASSERT_EQ(qparams.scale.sizes(), scale[b].sizes()) << step;
    EXPECT_TRUE(exactly_equal(min_val[b], observer->min_val, step + " min_val"));
    EXPECT_TRUE(exactly_equal(max_val[b], observer->max_val, step + " max_val"));
    EXPECT_EQ(qparams.scale.scalar_type(), at::kFloat) << step;
    EXPECT_TRUE(exactly_equal(scale[b], qparams.scale, step + " scale"));
    EXPECT_TRUE(exactly_equal(zero_point[b], qparams.zero_point, step + " zero_point"));
  }
}

QuantSpec per_channel(QuantSpec spec, int64_t axis) {
  return spec.granularity(Granularity::kPerChannel).axis(axis);
}

TEST(GoldenMinMax, FixtureLoadsWithPickleLoad) {
  const c10::IValue& root = fixture();
  ASSERT_TRUE(root.isGenericDict());
  for (const auto& data : data_names()) {
    const auto batches = tensors(get(get(root, "inputs"), data));
    ASSERT_EQ(static_cast<int64_t>(batches.size()), kBatches) << data;
    for (const auto& x : batches) EXPECT_EQ(x.scalar_type(), at::kFloat) << data;
  }
  EXPECT_EQ(tensors(get(get(root, "inputs"), "t3d"))[0].sizes(), at::IntArrayRef({3, 17, 33}));
}

TEST(GoldenMinMax, MinMaxObserverMatchesTorchAo) {
  for (const auto& spec : spec_cases()) {
    for (const auto& data : data_names()) {
      expect_matches_torch_ao(tquant::MinMaxObserver(MinMaxObserverOptions(spec.spec)),
                              std::string("MinMaxObserver.") + spec.name + "." + data, data);
    }
  }
}

TEST(GoldenMinMax, MovingAverageMatchesTorchAo) {
  // No averaging constant given: tquant's default must be torch.ao's 0.01.
  for (const auto& spec : spec_cases()) {
    for (const auto& data : data_names()) {
      expect_matches_torch_ao(
          tquant::MovingAverageMinMaxObserver(MinMaxObserverOptions(spec.spec)),
          std::string("MovingAverageMinMaxObserver.") + spec.name + "." + data, data);
    }
  }
}

TEST(GoldenMinMax, PerChannelMatchesTorchAo) {
  // Includes an all-zero channel (scale eps), a strictly positive and a strictly negative one.
  for (const auto& spec : spec_cases()) {
    for (const auto& data : data_names()) {
      for (int64_t axis : axes_of(data)) {
        expect_matches_torch_ao(
            tquant::PerChannelMinMaxObserver(
                MinMaxObserverOptions(per_channel(spec.spec, axis))),
            std::string("PerChannelMinMaxObserver.") + spec.name + "." + data + ".axis" +
                std::to_string(axis),
            data);
      }
    }
  }
}

TEST(GoldenMinMax, MovingAveragePerChannelMatchesTorchAo) {
  for (const auto& spec : spec_cases()) {
    for (const auto& data : data_names()) {
      for (int64_t axis : axes_of(data)) {
        expect_matches_torch_ao(
            tquant::MovingAveragePerChannelMinMaxObserver(
                MinMaxObserverOptions(per_channel(spec.spec, axis))),
            std::string("MovingAveragePerChannelMinMaxObserver.") + spec.name + "." + data +
                ".axis" + std::to_string(axis),
            data);
      }
    }
  }
}

TEST(GoldenMinMax, EveryFixtureCaseIsChecked) {
  // The keys the tests above build; a case added to (or renamed in) the generator shows here.
  std::set<std::string> tested;
  for (const auto& spec : spec_cases()) {
    for (const auto& data : data_names()) {
      for (const char* observer : {"MinMaxObserver", "MovingAverageMinMaxObserver"}) {
        tested.insert(std::string(observer) + "." + spec.name + "." + data);
      }
      for (const char* observer :
           {"PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"}) {
        for (int64_t axis : axes_of(data)) {
          tested.insert(std::string(observer) + "." + spec.name + "." + data + ".axis" +
                        std::to_string(axis));
        }
      }
    }
  }
  std::set<std::string> in_fixture;
  for (const auto& entry : get(fixture(), "cases").toGenericDict()) {
    in_fixture.insert(entry.key().toStringRef());
  }
  EXPECT_EQ(in_fixture, tested);
}

}  // namespace
