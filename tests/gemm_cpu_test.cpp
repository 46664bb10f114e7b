#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "tquant/cpu_features.h"
#include "tquant/functional.h"
#include "tquant/gemm.h"
#include "tquant/qparams.h"

namespace {

namespace F = torch::nn::functional;
using tquant::Int8GemmPath;
using tquant::Int8Weight;

// Odd sizes hit the remainder paths: the 16-wide AVX-512 quantizer tail, and oneDNN's blocking
// (it pads K and N internally, so no size restriction is visible here); _int_mm on CPU has none.
const std::vector<int64_t> kMs = {1, 3, 17, 33, 65};
const std::vector<std::pair<int64_t, int64_t>> kKNs = {{1, 1},   {3, 5},    {17, 33},
                                                       {64, 48}, {65, 129}, {768, 96}};

// Every path that is exact on this CPU (kInt16Madd always; oneDNN and _int_mm with VNNI).
std::vector<Int8GemmPath> paths() { return tquant::int8_gemm_exact_paths(); }

// |a - b| <= kInt8LinearRelTol * max|b| (plus the smallest normal, for all-zero outputs).
void expect_close_rel(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double scale = b.abs().max().item<double>();
  const double err = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  EXPECT_LE(err, tquant::kInt8LinearRelTol * scale + FLT_MIN) << what << " max|ref| " << scale;
}

TEST(Int8Gemm, ReportsItsPath) {
  const auto reason = tquant::int8_gemm_path_reason();
  EXPECT_FALSE(reason.empty());
  // The PyPI LibTorch ships oneDNN; the oneDNN path is chosen exactly where its int8 kernels
  // sum exactly (VNNI or AMX for oneDNN), tquant's int16 kernel everywhere else.
  if (at::hasMKLDNN() && std::getenv("TQUANT_INT8_GEMM") == nullptr) {
    const auto expected = tquant::cpu_features().onednn_int8_exact ? Int8GemmPath::kOneDnnQLinear
                                                                   : Int8GemmPath::kInt16Madd;
    EXPECT_EQ(tquant::int8_gemm_path(), expected)
        << reason << "\n" << tquant::cpu_features().to_string();
  }
  const auto exact = tquant::int8_gemm_exact_paths();
  EXPECT_EQ(exact.front(), tquant::int8_gemm_path());
  EXPECT_NE(std::find(exact.begin(), exact.end(), Int8GemmPath::kInt16Madd), exact.end());
}

TEST(Int8Gemm, RejectsAPathThatSaturatesHere) {
  const auto exact = tquant::int8_gemm_exact_paths();
  for (auto path : {Int8GemmPath::kOneDnnQLinear, Int8GemmPath::kIntMm}) {
    if (std::find(exact.begin(), exact.end(), path) != exact.end()) continue;
    try {
      tquant::prepare_int8_weight(torch::randn({4, 8}), path);
      ADD_FAILURE() << to_string(path) << " was accepted though it is not exact here";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(to_string(path) == "int_mm" ? "_int_mm" : "oneDNN"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(Int8Gemm, SaturatingCodesSumExactlyOnEveryPath) {
  // u8 255 (code 127 + 128) against +127 in both k of a pair: 64770, above int16's 32767.
  // vpmaddubsw would saturate here; every path must give the exact sum.
  for (auto path : paths()) {
    for (int64_t k : {2, 64, 1040}) {
      const auto qw = torch::full({16, k}, 127, torch::kChar);
      const auto weight = tquant::prepare_int8_weight(qw, torch::ones({16}), path);
      for (int64_t m : {1, 7, 64}) {
        for (int code : {127, -127}) {
          const auto qx = torch::full({m, k}, code, torch::kChar);
          const auto y =
              tquant::detail::int8_gemm_dequant(qx, 1.0, weight, torch::ones({16}), c10::nullopt);
          EXPECT_TRUE(torch::equal(y, torch::full({m, 16}, 127.0 * code * k)))
              << to_string(path) << " M " << m << " K " << k << " code " << code << ": "
              << y[0][0].item<double>();
        }
      }
    }
  }
}

TEST(Int8Gemm, RejectsKWhoseSumsCouldOverflowInt32) {
  const int64_t k = tquant::kMaxInt8GemmK + 1;
  try {
    tquant::prepare_int8_weight(torch::zeros({1, k}, torch::kChar), torch::ones({1}));
    ADD_FAILURE() << "K = " << k << " was accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(k)), std::string::npos) << e.what();
  }
}

TEST(Int8Gemm, WeightIsPerChannelNarrowRangeQuantize) {
  torch::manual_seed(1);
  auto w = torch::randn({33, 17});
  w[3].zero_();  // an all-zero row gets scale eps, codes 0
  auto weight = tquant::prepare_int8_weight(w);
  auto spec =
      tquant::QuantSpec().narrow_range(true).granularity(tquant::Granularity::kPerChannel).axis(0);
  auto qp = tquant::qparams_from_amax(w.abs().amax({1}), spec);
  EXPECT_TRUE(torch::equal(weight.qweight, tquant::quantize(w, qp)));
  EXPECT_TRUE(torch::equal(weight.scale, qp.scale));
  EXPECT_EQ(weight.qweight.min().item<int>(), -127);
  EXPECT_EQ(weight.qweight.max().item<int>(), 127);
}

TEST(Int8Gemm, PerTensorQuantizerMatchesReferenceAtTiesAndClamp) {
  // Ties: x = (n + 0.5) * 0.25 is exact, so x * (1 / 0.25) lands on .5 and must round to even;
  // |x| beyond 127 * 0.25 must clamp to +-127 (never -128).
  for (int64_t k : {1, 3, 15, 16, 17, 33, 65, 771}) {
    auto n = torch::arange(-140, -140 + 3 * k, torch::kFloat).reshape({3, k});
    auto x = (n + 0.5) * 0.25;
    auto q = tquant::detail::quantize_per_tensor_int8(x, 0.25);
    auto ref = tquant::detail::quantize_per_tensor_int8_ref(x, 0.25);
    EXPECT_TRUE(torch::equal(q, ref)) << "K " << k;
    EXPECT_GE(q.min().item<int>(), -127);
  }
  torch::manual_seed(2);
  for (int64_t m : kMs) {
    auto x = torch::randn({m, 65}) * 3;
    EXPECT_TRUE(torch::equal(tquant::detail::quantize_per_tensor_int8(x, 0.013),
                             tquant::detail::quantize_per_tensor_int8_ref(x, 0.013)))
        << "M " << m;
  }
}

TEST(Int8Gemm, PerTokenQuantizerMatchesReference) {
  torch::manual_seed(3);
  for (int64_t m : kMs) {
    for (int64_t k : {1, 3, 16, 17, 65, 768}) {
      auto x = torch::randn({m, k}) * torch::rand({m, 1}) * 10;
      x[0].zero_();  // all-zero row: scale eps
      auto [q, s] = tquant::detail::quantize_per_token_int8(x);
      auto [q_ref, s_ref] = tquant::detail::quantize_per_token_int8_ref(x);
      EXPECT_TRUE(torch::equal(s, s_ref)) << "M " << m << " K " << k;
      EXPECT_TRUE(torch::equal(q, q_ref)) << "M " << m << " K " << k;
    }
  }
}

TEST(Int8Gemm, IntegerAccumulatorsAreExact) {
  // With unit scales the float output is the int32 accumulator itself; exact while
  // |acc| <= K * 127 * 127 < 2^24, i.e. K <= 1040. Extreme codes (+-127) included.
  torch::manual_seed(4);
  for (auto path : paths()) {
    for (auto [k, n] : std::vector<std::pair<int64_t, int64_t>>{
             {1, 1}, {3, 5}, {17, 33}, {65, 129}, {1024, 64}}) {
      auto qw = torch::randint(-127, 128, {n, k}, torch::kChar);
      qw[0].fill_(-127);
      auto weight = tquant::prepare_int8_weight(qw, torch::ones({n}), path);
      for (int64_t m : kMs) {
        auto qx = torch::randint(-127, 128, {m, k}, torch::kChar);
        qx[0].fill_(127);
        auto y = tquant::detail::int8_gemm_dequant(qx, 1.0, weight, torch::ones({n}), c10::nullopt);
        auto acc = torch::matmul(qx.to(torch::kLong), qw.to(torch::kLong).t());
        EXPECT_TRUE(torch::equal(y.to(torch::kLong), acc))
            << to_string(path) << " M " << m << " K " << k << " N " << n;
        EXPECT_TRUE(torch::equal(y, acc.to(torch::kFloat))) << to_string(path);
      }
    }
  }
}

TEST(Int8Gemm, StaticMatchesReference) {
  torch::manual_seed(5);
  for (auto path : paths()) {
    for (auto [k, n] : kKNs) {
      auto w = torch::randn({n, k}) * 0.1;
      auto b = torch::randn({n});
      auto weight = tquant::prepare_int8_weight(w, path);
      for (int64_t m : kMs) {
        auto x = torch::randn({m, k}) * 2;
        const double sx = x.abs().max().item<double>() / 127 * 0.8;  // some clamping
        const auto tag = to_string(path) + " M " + std::to_string(m) + " K " + std::to_string(k) +
                         " N " + std::to_string(n);
        expect_close_rel(tquant::int8_linear_static(x, sx, weight, b),
                         tquant::int8_linear_static_ref(x, sx, weight, b), tag + " bias");
        expect_close_rel(tquant::int8_linear_static(x, sx, weight),
                         tquant::int8_linear_static_ref(x, sx, weight), tag);
      }
    }
  }
}

TEST(Int8Gemm, DynamicMatchesReference) {
  torch::manual_seed(6);
  for (auto path : paths()) {
    for (auto [k, n] : kKNs) {
      auto w = torch::randn({n, k}) * 0.1;
      auto b = torch::randn({n});
      auto weight = tquant::prepare_int8_weight(w, path);
      for (int64_t m : kMs) {
        auto x = torch::randn({m, k}) * torch::rand({m, 1}) * 5;
        const auto tag = to_string(path) + " M " + std::to_string(m) + " K " + std::to_string(k) +
                         " N " + std::to_string(n);
        expect_close_rel(tquant::int8_linear_dynamic(x, weight, b),
                         tquant::int8_linear_dynamic_ref(x, weight, b), tag + " bias");
        expect_close_rel(tquant::int8_linear_dynamic(x, weight),
                         tquant::int8_linear_dynamic_ref(x, weight), tag);
      }
    }
  }
}

TEST(Int8Gemm, LinearCpuTakesTheCudaContract) {
  // int8_linear_cpu(x, input_scale, weight, bias, gelu): static with a scale, per token
  // without, the same calls as int8_linear_cuda; the values are those of the two CPU functions.
  torch::manual_seed(8);
  for (auto path : paths()) {
    auto weight = tquant::prepare_int8_weight(torch::randn({33, 17}) * 0.1, path);
    auto b = torch::randn({33});
    auto x = torch::randn({2, 5, 17});
    const auto tag = to_string(path);
    EXPECT_TRUE(tquant::int8_linear_cpu(x, 0.02, weight, b).equal(
        tquant::int8_linear_static(x, 0.02, weight, b)))
        << tag;
    EXPECT_TRUE(tquant::int8_linear_cpu(x, 0.02, weight, b, /*gelu=*/true)
                    .equal(tquant::int8_linear_static(x, 0.02, weight, b, std::nullopt, true)))
        << tag;
    EXPECT_TRUE(tquant::int8_linear_cpu(x, std::nullopt, weight, b)
                    .equal(tquant::int8_linear_dynamic(x, weight, b)))
        << tag;
    EXPECT_TRUE(tquant::int8_linear_cpu(x, std::nullopt, weight, b, /*gelu=*/true)
                    .equal(at::gelu(tquant::int8_linear_dynamic(x, weight, b))))
        << tag;
  }
}

TEST(Int8Gemm, AcceptsLeadingDims) {
  torch::manual_seed(7);
  auto weight = tquant::prepare_int8_weight(torch::randn({9, 20}));
  auto x = torch::randn({2, 5, 20});
  auto y = tquant::int8_linear_static(x, 0.02, weight);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, 9}));
  EXPECT_TRUE(torch::equal(
      y, tquant::int8_linear_static(x.reshape({10, 20}), 0.02, weight).reshape({2, 5, 9})));
  auto yd = tquant::int8_linear_dynamic(x.transpose(0, 1), weight);  // non-contiguous input
  EXPECT_EQ(yd.sizes(), (std::vector<int64_t>{5, 2, 9}));
  expect_close_rel(yd, tquant::int8_linear_dynamic_ref(x.transpose(0, 1), weight), "3d dyn");
  auto e = tquant::int8_linear_dynamic(torch::randn({0, 20}), weight);
  EXPECT_EQ(e.sizes(), (std::vector<int64_t>{0, 9}));
}

// The converted (INT8) output equals the fake-quant simulation F::linear(fq(x), fq(W)) + b: both
// compute sum_k (s_x q_x) (s_w q_w) on the same codes. They differ only by float32 rounding:
// the simulation sums K float products in its own order (error <= K * eps * sum_k |terms|),
// the INT8 path sums integers exactly and rounds a few times in its epilogue. That bound is far
// below one output quantization step (max|y| / 127), which is checked as well.
TEST(Int8Gemm, StaticEqualsFakeQuantSimulation) {
  torch::manual_seed(8);
  for (auto path : paths()) {
    for (auto [k, n] : kKNs) {
      auto w = torch::randn({n, k}) * 0.1;
      auto b = torch::randn({n});
      auto weight = tquant::prepare_int8_weight(w, path);
      auto w_spec = tquant::QuantSpec()
                        .narrow_range(true)
                        .granularity(tquant::Granularity::kPerChannel)
                        .axis(0);
      auto fq_w = tquant::fake_quantize(w, tquant::qparams_from_amax(w.abs().amax({1}), w_spec));
      for (int64_t m : kMs) {
        auto x = torch::randn({m, k});
        auto amax = x.abs().max() * 0.9;
        auto x_qp = tquant::qparams_from_amax(amax, tquant::QuantSpec().narrow_range(true));
        const double sx = x_qp.scale.item<double>();
        auto fq_x = tquant::fake_quantize(x, x_qp);
        auto sim = F::linear(fq_x, fq_w, b);
        auto y = tquant::int8_linear_static(x, sx, weight, b);
        auto terms =
            torch::matmul(fq_x.abs().to(torch::kDouble), fq_w.abs().to(torch::kDouble).t());
        auto bound =
            (static_cast<double>(k) + 4) * FLT_EPSILON * (terms + b.abs().to(torch::kDouble));
        auto err = (y.to(torch::kDouble) - sim.to(torch::kDouble)).abs();
        const auto tag = to_string(path) + " M " + std::to_string(m) + " K " + std::to_string(k) +
                         " N " + std::to_string(n);
        EXPECT_TRUE((err <= bound).all().item<bool>())
            << tag << " max err " << err.max().item<double>();
        const double step = sim.abs().max().item<double>() / 127;
        EXPECT_LE(err.max().item<double>(), step) << tag;
      }
    }
  }
}

TEST(Int8Gemm, NonFiniteInputRowsComeOutNaNOnEveryPath) {
  torch::manual_seed(31);
  const at::Tensor w = torch::randn({19, 33});
  const at::Tensor bias = torch::randn({19});
  at::Tensor x = torch::randn({2, 7, 33});
  const at::Tensor clean = x.clone();
  x[0][2][5] = std::nanf("");
  x[1][6][0] = INFINITY;
  const at::Tensor bad = at::zeros({2, 7}, at::kBool).index_put_({0, 2}, true).index_put_({1, 6}, true);
  for (auto path : paths()) {
    const Int8Weight weight = tquant::prepare_int8_weight(w, path);
    const double sx = 0.03;
    const std::vector<std::pair<at::Tensor, at::Tensor>> outputs = {
        {tquant::int8_linear_static(x, sx, weight, bias),
         tquant::int8_linear_static(clean, sx, weight, bias)},
        {tquant::int8_linear_static_ref(x, sx, weight, bias),
         tquant::int8_linear_static_ref(clean, sx, weight, bias)},
        {tquant::int8_linear_dynamic(x, weight, bias),
         tquant::int8_linear_dynamic(clean, weight, bias)},
        {tquant::int8_linear_dynamic_ref(x, weight, bias),
         tquant::int8_linear_dynamic_ref(clean, weight, bias)}};
    for (const auto& [y, y_clean] : outputs) {
      EXPECT_TRUE(y.index({bad}).isnan().all().item<bool>()) << tquant::to_string(path);
      EXPECT_TRUE(at::equal(y.index({bad.logical_not()}), y_clean.index({bad.logical_not()})))
          << tquant::to_string(path);
    }
  }
}

TEST(Int8Gemm, ErrorsNameShapesAndTypes) {
  auto weight = tquant::prepare_int8_weight(torch::randn({8, 16}));
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const c10::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  auto k_err = message([&] { tquant::int8_linear_static(torch::randn({4, 15}), 0.1, weight); });
  EXPECT_NE(k_err.find("[4, 15]"), std::string::npos) << k_err;
  EXPECT_NE(k_err.find("K = 16"), std::string::npos) << k_err;
  auto d_err = message([&] {
    tquant::int8_linear_dynamic(torch::randn({4, 16}).to(torch::kDouble), weight);
  });
  EXPECT_NE(d_err.find("float32"), std::string::npos) << d_err;
  auto b_err = message([&] {
    tquant::int8_linear_dynamic(torch::randn({4, 16}), weight, torch::randn({7}));
  });
  EXPECT_NE(b_err.find("[8]"), std::string::npos) << b_err;
  auto s_err = message([&] { tquant::int8_linear_static(torch::randn({4, 16}), 0.0, weight); });
  EXPECT_NE(s_err.find("scale"), std::string::npos) << s_err;
  auto w_err = message([&] { tquant::prepare_int8_weight(torch::randn({2, 3, 4})); });
  EXPECT_NE(w_err.find("[N, K]"), std::string::npos) << w_err;
  auto c_err = message([&] {
    tquant::prepare_int8_weight(torch::full({2, 3}, -128, torch::kChar), torch::ones({2}));
  });
  EXPECT_NE(c_err.find("-128"), std::string::npos) << c_err;
  // A bias on another device is named, never read through a foreign pointer.
  auto dev_err = message([&] {
    tquant::int8_linear_dynamic(torch::randn({4, 16}), weight,
                                torch::zeros({8}, torch::device(torch::kMeta)));
  });
  EXPECT_NE(dev_err.find("on the CPU"), std::string::npos) << dev_err;
  // 1 / float(1e-40) is +inf: such a scale is refused, not turned into infinite codes.
  auto tiny_err = message([&] { tquant::int8_linear_static(torch::randn({4, 16}), 1e-40, weight); });
  EXPECT_NE(tiny_err.find("reciprocal"), std::string::npos) << tiny_err;
  auto n_err = message([&] { tquant::prepare_int8_weight(torch::randn({0, 16})); });
  EXPECT_NE(n_err.find("N > 0"), std::string::npos) << n_err;
}

}  // namespace
