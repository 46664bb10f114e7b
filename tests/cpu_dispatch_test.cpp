#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "../src/int16_madd_gemm.h"
#include "tquant/cpu_features.h"
#include "test_util.h"

namespace {

using tquant::CpuIsa;

// Every level this CPU can run, lowest first (the kernels of each are tested on it).
std::vector<CpuIsa> runnable_levels() {
  std::vector<CpuIsa> levels;
  for (CpuIsa isa : {CpuIsa::kBaseline, CpuIsa::kAvx2, CpuIsa::kAvx512Core}) {
    if (isa <= tquant::cpu_features().detected) levels.push_back(isa);
  }
  return levels;
}

TEST(CpuFeatures, ParsesOneDnnLevelNames) {
  EXPECT_EQ(tquant::parse_cpu_isa("avx2"), CpuIsa::kAvx2);
  EXPECT_EQ(tquant::parse_cpu_isa("AVX2_VNNI"), CpuIsa::kAvx2);
  EXPECT_EQ(tquant::parse_cpu_isa("SSE41"), CpuIsa::kBaseline);
  EXPECT_EQ(tquant::parse_cpu_isa("avx512_core"), CpuIsa::kAvx512Core);
  EXPECT_EQ(tquant::parse_cpu_isa("AVX512_CORE_VNNI"), CpuIsa::kAvx512CoreVnni);
  EXPECT_EQ(tquant::parse_cpu_isa("AVX512_CORE_AMX"), CpuIsa::kAvx512CoreVnni);
  EXPECT_EQ(tquant::parse_cpu_isa("ALL"), CpuIsa::kAvx512CoreVnni);
  for (CpuIsa isa : {CpuIsa::kBaseline, CpuIsa::kAvx2, CpuIsa::kAvx512Core, CpuIsa::kAvx512CoreVnni}) {
    if (isa != CpuIsa::kBaseline) EXPECT_EQ(tquant::parse_cpu_isa(tquant::to_string(isa)), isa);
  }
  const std::string error = tquant::test::error_message([] { tquant::parse_cpu_isa("avx9"); });
  EXPECT_NE(error.find("'avx9'"), std::string::npos) << error;
  EXPECT_NE(error.find("AVX512_CORE"), std::string::npos) << error;
}

TEST(CpuFeatures, KernelsNeverExceedTheCpuOrTheCap) {
  const auto& f = tquant::cpu_features();
  EXPECT_LE(f.kernels, f.detected) << f.to_string();
  const char* cap = std::getenv("TQUANT_MAX_CPU_ISA");
  if (cap == nullptr || *cap == '\0') cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (cap != nullptr && *cap != '\0') {
    EXPECT_LE(f.kernels, tquant::parse_cpu_isa(cap)) << f.to_string();
    EXPECT_NE(f.cap.find(cap), std::string::npos) << f.to_string();
  } else {
    EXPECT_EQ(f.kernels, f.detected) << f.to_string();
  }
  // oneDNN's int8 kernels are exact only with a VNNI or AMX instruction.
  if (f.onednn_int8_exact) {
    EXPECT_TRUE(f.has_avx512_vnni || f.has_avx_vnni || f.has_amx_int8) << f.to_string();
  }
  EXPECT_NE(f.to_string().find("tquant kernels: " + tquant::to_string(f.kernels)),
            std::string::npos);
  std::cout << f.to_string() << "\n";
}

// Codes of both signs with the extremes, in A's layout (pairs along K, zero padding).
at::Tensor random_codes16(int64_t m, int64_t k, int64_t lda, uint64_t seed) {
  torch::manual_seed(seed);
  at::Tensor a = torch::zeros({m, lda}, torch::kShort);
  a.narrow(1, 0, k).copy_(torch::randint(-127, 128, {m, k}, torch::kShort));
  if (m > 0 && k > 0) a[0].narrow(0, 0, k).fill_(127);
  return a;
}

TEST(Int16MaddGemm, EveryLevelEqualsTheExactSum) {
  for (CpuIsa isa : runnable_levels()) {
    for (auto [k, n] : std::vector<std::pair<int64_t, int64_t>>{
             {1, 1}, {3, 5}, {17, 33}, {64, 48}, {65, 129}, {768, 96}, {1536, 17}}) {
      const auto layout = tquant::detail::Int16PairLayout::for_shape(k, n);
      at::Tensor w = torch::randint(-127, 128, {n, k}, torch::kChar);
      w[0].fill_(-127);
      at::Tensor packed = torch::empty({layout.elements()}, torch::kShort);
      tquant::detail::pack_weight_int16_pairs(w.data_ptr<int8_t>(), n, k, layout,
                                              packed.data_ptr<int16_t>());
      for (int64_t m : {1, 3, 6, 7, 13, 33}) {
        const int64_t lda = 2 * layout.k2;
        const at::Tensor a = random_codes16(m, k, lda, static_cast<uint64_t>(m * 131 + k));
        at::Tensor c = torch::full({m, n + 3}, -7, torch::kInt);  // ldc > n: columns past n kept
        tquant::detail::gemm_s16s16s32(isa, a.data_ptr<int16_t>(), lda, packed.data_ptr<int16_t>(),
                                       layout, c.data_ptr<int32_t>(), n + 3, m, n);
        const at::Tensor expected =
            torch::matmul(a.narrow(1, 0, k).to(torch::kLong), w.to(torch::kLong).t());
        const auto tag = tquant::to_string(isa) + " M " + std::to_string(m) + " K " +
                         std::to_string(k) + " N " + std::to_string(n);
        EXPECT_TRUE(torch::equal(c.narrow(1, 0, n).to(torch::kLong), expected)) << tag;
        EXPECT_TRUE((c.narrow(1, n, 3) == -7).all().item<bool>()) << tag << ": wrote past N";
        at::Tensor ref = torch::empty({m, n}, torch::kInt);
        tquant::detail::gemm_s16s16s32_ref(a.data_ptr<int16_t>(), lda, packed.data_ptr<int16_t>(),
                                           layout, ref.data_ptr<int32_t>(), n, m, n);
        EXPECT_TRUE(torch::equal(ref.to(torch::kLong), expected)) << tag << " (ref)";
      }
    }
  }
}

TEST(Int16MaddGemm, QuantizerOfEveryLevelMatchesTquantQuantize) {
  for (CpuIsa isa : runnable_levels()) {
    for (int64_t n : {1, 2, 15, 16, 17, 33, 385}) {
      // Ties (.5 after scaling) round to even; beyond +-127 * scale clamps.
      const at::Tensor x = ((torch::arange(n, torch::kFloat) - n / 2.0f) * 0.75f + 0.5f) * 0.25f;
      const at::Tensor mult = torch::rand({n}) + 0.5f;
      for (bool with_mult : {false, true}) {
        const at::Tensor xm = with_mult ? x * mult : x;
        const float inv = 1.0f / 0.25f;
        const at::Tensor expected =
            (xm * inv).clamp(-127, 127).round().to(torch::kShort);
        at::Tensor out = torch::full({n + 1}, 99, torch::kShort);
        const bool finite = tquant::detail::quantize_row_int16(
            isa, x.data_ptr<float>(), n, inv, with_mult ? mult.data_ptr<float>() : nullptr,
            out.data_ptr<int16_t>());
        EXPECT_TRUE(finite);
        EXPECT_TRUE(torch::equal(out.narrow(0, 0, n), expected))
            << tquant::to_string(isa) << " n " << n << " mult " << with_mult;
        EXPECT_EQ(out[n].item<int>(), n % 2 != 0 ? 0 : 99) << "pair padding";
      }
      at::Tensor bad = x.clone();
      bad[n - 1] = std::nanf("");
      at::Tensor out = torch::empty({n + 1}, torch::kShort);
      EXPECT_FALSE(tquant::detail::quantize_row_int16(isa, bad.data_ptr<float>(), n, 4.0f,
                                                      nullptr, out.data_ptr<int16_t>()))
          << tquant::to_string(isa) << " n " << n;
      EXPECT_FLOAT_EQ(tquant::detail::row_amax(isa, x.data_ptr<float>(), n, nullptr),
                      x.abs().max().item<float>());
    }
  }
}

}  // namespace
