// CUDA INT8 backend (tquant/cuda_int8.h). Tests ending in _CUDA compare each kernel with its ATen
// twin on a GPU and skip without one; the others run anywhere: the twins against independent
// computations (int64 matmul, float64 maths, the CPU path's quantizers), argument validation,
// the built-without-CUDA error, and the plain helpers (problem mapping, padding, cache key,
// launch configurations).

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cuda_test_util.h"
#include "tquant/cuda_int8.h"
#include "tquant/gemm.h"

// Stream guards for the side-stream test, where this LibTorch ships the CUDA headers.
#if __has_include(<c10/cuda/CUDAGuard.h>) && __has_include(<cuda_runtime_api.h>)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define TQUANT_TEST_HAS_CUDA_HEADERS 1
#endif

namespace {

using tquant::detail::CublasLtInt8Problem;

const std::vector<int64_t> kMs = {1, 3, 17, 33, 65};
// (K, N): N a multiple of 4 where the kernels need it; K odd on purpose (padding path).
const std::vector<std::pair<int64_t, int64_t>> kKNs = {
    {1, 4}, {3, 8}, {17, 20}, {64, 48}, {65, 132}, {768, 96}};

// Deterministic data: each call seeds the CPU generator.
at::Tensor random_codes(std::vector<int64_t> shape, int64_t seed, at::Device device = at::kCPU) {
  torch::manual_seed(seed);
  return at::randint(-128, 128, shape, at::TensorOptions().dtype(at::kChar)).to(device);
}

at::Tensor random_float(std::vector<int64_t> shape, int64_t seed, at::ScalarType dtype,
                        double scale = 3.0, at::Device device = at::kCPU) {
  torch::manual_seed(seed);
  return (at::randn(shape, at::TensorOptions().dtype(at::kFloat)) * scale)
      .to(dtype)
      .to(device);
}

void expect_equal(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  ASSERT_EQ(a.scalar_type(), b.scalar_type()) << what;
  const auto ac = a.cpu();
  const auto bc = b.cpu();
  const int64_t diff = ac.ne(bc).sum().item<int64_t>();
  EXPECT_EQ(diff, 0) << what << ": " << diff << " of " << a.numel() << " elements differ";
}

// |out - ref| <= tol * (|ref| + max|ref| / 1024), the form of the tolerances in cuda_int8.h.
void expect_close(const at::Tensor& out, const at::Tensor& ref, double tol,
                  const std::string& what) {
  ASSERT_EQ(out.sizes(), ref.sizes()) << what;
  const auto o = out.cpu().to(at::kDouble);
  const auto r = ref.cpu().to(at::kDouble);
  ASSERT_TRUE(o.isfinite().all().item<bool>()) << what << ": non-finite output";
  const double max_ref = r.numel() ? r.abs().max().item<double>() : 0.0;
  const auto bound = (r.abs() + max_ref / 1024) * tol + DBL_MIN;
  const auto excess = (o - r).abs() - bound;
  const double worst = excess.numel() ? excess.max().item<double>() : -1.0;
  EXPECT_LE(worst, 0.0) << what << ": max|ref| " << max_ref << ", max|out-ref| "
                        << (o - r).abs().max().item<double>();
}

void expect_error(const std::function<void()>& call, std::initializer_list<const char*> parts) {
  try {
    call();
    ADD_FAILURE() << "expected an error containing '" << *parts.begin() << "'";
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    for (const char* part : parts) {
      EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in: " << msg;
    }
  }
}

double tol_of(at::ScalarType t) {
  if (t == at::kBFloat16) return tquant::kCudaDequantBf16Tol;
  if (t == at::kHalf) return tquant::kCudaDequantF16Tol;
  return tquant::kCudaDequantF32Tol;
}

// ---- plain helpers ------------------------------------------------------------------------------

TEST(CudaInt8Helpers, AvailabilityImpliesBuilt) {
  if (tquant::cuda_int8_available()) {
    EXPECT_TRUE(tquant::cuda_int8_built());
  }
  if (!tquant::cuda_int8_built()) {
    EXPECT_EQ(tquant::detail::int8_gemm_heuristic_queries(), 0u);
  }
}

TEST(CudaInt8Helpers, RoundUp) {
  EXPECT_EQ(tquant::detail::round_up(0, 4), 0);
  EXPECT_EQ(tquant::detail::round_up(1, 4), 4);
  EXPECT_EQ(tquant::detail::round_up(4, 4), 4);
  EXPECT_EQ(tquant::detail::round_up(65, 4), 68);
  EXPECT_THROW(tquant::detail::round_up(3, 0), c10::Error);
}

TEST(CudaInt8Helpers, ProblemIsTheTransposedTnMapping) {
  // y[M, N] = x[M, K] w[N, K]^T  ->  cuBLASLt m = N, n = M, k = K, lda = ldb = K, ldc = N.
  const auto p = tquant::detail::int8_gemm_problem(4096, 2304, 768);
  EXPECT_EQ(p.m, 2304);
  EXPECT_EQ(p.n, 4096);
  EXPECT_EQ(p.k, 768);
  EXPECT_EQ(p.lda, 768);
  EXPECT_EQ(p.ldb, 768);
  EXPECT_EQ(p.ldc, 2304);
  EXPECT_EQ(p.batch, 1);
  EXPECT_FALSE(p.k_padded);
  EXPECT_TRUE(tquant::detail::regular_ordering_violation(p).empty());
  EXPECT_EQ(tquant::detail::describe(p), "m=2304 n=4096 k=768 lda=768 ldb=768 ldc=2304 batch=1");
}

TEST(CudaInt8Helpers, KIsPaddedToFourAndMIsFree) {
  for (int64_t K : {1, 2, 3, 5, 17, 65, 767}) {
    const auto p = tquant::detail::int8_gemm_problem(3, 8, K);
    EXPECT_EQ(p.k % tquant::kInt8GemmDimMultiple, 0) << K;
    EXPECT_GE(p.k, K);
    EXPECT_LT(p.k - K, tquant::kInt8GemmDimMultiple);
    EXPECT_TRUE(p.k_padded);
    EXPECT_EQ(p.lda, p.k);
    EXPECT_TRUE(tquant::detail::regular_ordering_violation(p).empty()) << K;
  }
  // M (cuBLASLt's n) has no restriction.
  EXPECT_TRUE(tquant::detail::regular_ordering_violation(
                  tquant::detail::int8_gemm_problem(17, 8, 64)).empty());
}

TEST(CudaInt8Helpers, OddNViolatesRegularOrdering) {
  const auto p = tquant::detail::int8_gemm_problem(8, 6, 64);
  const auto why = tquant::detail::regular_ordering_violation(p);
  EXPECT_NE(why.find("m (= N)=6"), std::string::npos) << why;
  EXPECT_NE(why.find("ldc=6"), std::string::npos) << why;
}

TEST(CudaInt8Helpers, BatchedStrides) {
  const auto p = tquant::detail::int8_gemm_problem(128, 128, 64, 12);
  EXPECT_EQ(p.batch, 12);
  EXPECT_EQ(p.stride_a, 128 * 64);
  EXPECT_EQ(p.stride_b, 128 * 64);
  EXPECT_EQ(p.stride_c, 128 * 128);
  EXPECT_NE(tquant::detail::describe(p).find("stride_c=16384"), std::string::npos);
}

TEST(CudaInt8Helpers, PointerAlignment) {
  EXPECT_EQ(tquant::detail::pointer_alignment(0x1000), 16);
  EXPECT_EQ(tquant::detail::pointer_alignment(0x1008), 8);
  EXPECT_EQ(tquant::detail::pointer_alignment(0x1004), 4);
  EXPECT_EQ(tquant::detail::pointer_alignment(0x1002), 2);
  EXPECT_EQ(tquant::detail::pointer_alignment(0x1001), 1);
}

TEST(CudaInt8Helpers, OperandAlignmentIncludesTheBatchStride) {
  using tquant::detail::operand_alignment;
  EXPECT_EQ(operand_alignment(0x1000, 12, 1), 16);  // one matrix: the stride does not matter
  EXPECT_EQ(operand_alignment(0x1000, 12, 3), 4);   // batch 1 starts 12 bytes after batch 0
  EXPECT_EQ(operand_alignment(0x1000, 24, 3), 8);
  EXPECT_EQ(operand_alignment(0x1000, 64, 3), 16);
  EXPECT_EQ(operand_alignment(0x1004, 64, 3), 4);   // the base pointer still counts
  // The int8 B operand of a batched call with M = 3, K = 4 has batch stride n * k = 12 bytes.
  const auto p = tquant::detail::int8_gemm_problem(3, 8, 4, 5);
  EXPECT_EQ(operand_alignment(0x1000, p.stride_b, p.batch), 4);
  EXPECT_EQ(operand_alignment(0x1000, p.stride_c * 4, p.batch), 16);  // int32 C, m % 4 == 0
}

TEST(CudaInt8Helpers, LeadingRowsIsDefinedForEmptyK) {
  EXPECT_EQ(tquant::detail::leading_rows(at::empty({2, 3, 0})), 6);
  EXPECT_EQ(tquant::detail::leading_rows(at::empty({0, 5})), 0);
  EXPECT_EQ(tquant::detail::leading_rows(at::empty({7})), 1);
  EXPECT_THROW(tquant::detail::leading_rows(at::ones({})), c10::Error);
}

TEST(CudaInt8Helpers, CublasLtVersionRule) {
  using tquant::detail::cublaslt_version_mismatch;
  EXPECT_EQ(cublaslt_version_mismatch(130100, 130100), "");
  EXPECT_EQ(cublaslt_version_mismatch(130000, 130203), "");  // newer minor: compatible
  const auto older = cublaslt_version_mismatch(130100, 130002);
  EXPECT_NE(older.find("13.0.2 (130002) is older than the 13.1.0 (130100)"), std::string::npos)
      << older;
  const auto major = cublaslt_version_mismatch(130100, 120904);
  EXPECT_NE(major.find("another major version"), std::string::npos) << major;
  EXPECT_NE(cublaslt_version_mismatch(120904, 130100), "");
}

// The line scripts/gpu_run.sh reads to tell that the kernels were built and which cuBLASLt and
// CUDA runtime the process loaded (no GPU needed).
TEST(CudaInt8Build, LibraryVersions) {
  const auto v = tquant::cuda_library_versions();
  std::printf("[tquant] cuda_int8_built=%d cuda_int8_available=%d cublaslt_compiled=%zu "
              "cublaslt_loaded=%zu cublaslt_path=%s cudart_compiled=%d cudart_loaded=%d "
              "cudart_path=%s\n",
              tquant::cuda_int8_built() ? 1 : 0, tquant::cuda_int8_available() ? 1 : 0,
              v.cublaslt_compiled, v.cublaslt_loaded, v.cublaslt_path.c_str(), v.cudart_compiled,
              v.cudart_loaded, v.cudart_path.c_str());
  if (!tquant::cuda_int8_built()) {
    EXPECT_EQ(v.cublaslt_compiled, 0u);
    EXPECT_EQ(v.cublaslt_loaded, 0u);
    EXPECT_NO_THROW(tquant::check_cublaslt_version());
    return;
  }
  EXPECT_GE(v.cublaslt_compiled, 110000u);
  EXPECT_GE(v.cublaslt_loaded, 110000u);
  EXPECT_NE(v.cublaslt_path.find("libcublasLt.so"), std::string::npos) << v.cublaslt_path;
  EXPECT_GT(v.cudart_compiled, 0);
  EXPECT_NE(v.cudart_path.find("libcudart.so"), std::string::npos) << v.cudart_path;
  const auto why = tquant::detail::cublaslt_version_mismatch(v.cublaslt_compiled,
                                                             v.cublaslt_loaded);
  if (why.empty()) {
    EXPECT_NO_THROW(tquant::check_cublaslt_version());
  } else {
    expect_error([] { tquant::check_cublaslt_version(); }, {"tquant CUDA INT8", "loaded from"});
    ADD_FAILURE() << why << " (" << v.cublaslt_path << ")";
  }
}

TEST(CudaInt8Helpers, CacheKeySeparatesShapesAlignmentsAndDevices) {
  using tquant::detail::make_int8_gemm_key;
  const auto p = tquant::detail::int8_gemm_problem(128, 768, 768);
  const auto key = make_int8_gemm_key(0, p, 16, 16, 16, at::kInt);
  tquant::detail::Int8GemmKeyHash hash;
  EXPECT_EQ(key, make_int8_gemm_key(0, p, 16, 16, 16, at::kInt));
  EXPECT_EQ(hash(key), hash(make_int8_gemm_key(0, p, 16, 16, 16, at::kInt)));
  EXPECT_FALSE(key == make_int8_gemm_key(1, p, 16, 16, 16, at::kInt));
  EXPECT_FALSE(key == make_int8_gemm_key(0, p, 4, 16, 16, at::kInt));
  EXPECT_FALSE(key == make_int8_gemm_key(0, p, 16, 16, 16, at::kChar));
  EXPECT_FALSE(key == make_int8_gemm_key(
                          0, tquant::detail::int8_gemm_problem(129, 768, 768), 16, 16, 16, at::kInt));
  EXPECT_FALSE(key == make_int8_gemm_key(
                          0, tquant::detail::int8_gemm_problem(128, 768, 768, 2), 16, 16, 16, at::kInt));
}

TEST(CudaInt8Helpers, KeyedCacheComputesOncePerKeyAcrossThreads) {
  tquant::detail::KeyedCache<int> cache;
  const auto k1 = tquant::detail::make_int8_gemm_key(
      0, tquant::detail::int8_gemm_problem(8, 8, 8), 16, 16, 16, at::kInt);
  const auto k2 = tquant::detail::make_int8_gemm_key(
      0, tquant::detail::int8_gemm_problem(8, 8, 12), 16, 16, 16, at::kInt);
  EXPECT_EQ(cache.get_or_compute(k1, [] { return 1; }), 1);
  EXPECT_EQ(cache.get_or_compute(k1, [] { return 2; }), 1);  // cached
  std::vector<std::thread> threads;
  std::vector<int> seen(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] { seen[t] = cache.get_or_compute(k2, [t] { return 10 + t; }); });
  }
  for (auto& t : threads) t.join();
  for (int v : seen) EXPECT_EQ(v, seen[0]);  // one value per key, whoever computed it
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_GE(cache.computed(), 2u);
}

TEST(CudaInt8Helpers, ElementwiseLaunchConfig) {
  // float32: 4 per 16-byte load; bf16: 8; unaligned or a row length that a vector would straddle:
  // scalar.
  auto c = tquant::detail::elementwise_launch_config(4096 * 768, 4, true, 132);
  EXPECT_EQ(c.vec, 4);
  EXPECT_EQ(c.threads, 256);
  EXPECT_EQ(c.blocks, 132 * 8);  // capped: grid-stride loop
  EXPECT_EQ(tquant::detail::elementwise_launch_config(100, 2, true, 132).vec, 8);
  EXPECT_EQ(tquant::detail::elementwise_launch_config(100, 2, false, 132).vec, 1);
  EXPECT_EQ(tquant::detail::elementwise_launch_config(6 * 6, 4, true, 132, 6, 4).vec, 1);
  EXPECT_EQ(tquant::detail::elementwise_launch_config(6 * 8, 4, true, 132, 8, 4).vec, 4);
  c = tquant::detail::elementwise_launch_config(10, 4, true, 132);
  EXPECT_EQ(c.blocks, 1);
  EXPECT_EQ(tquant::detail::elementwise_launch_config(0, 4, true, 132).blocks, 1);
}

TEST(CudaInt8Helpers, PerTokenLaunchConfig) {
  auto c = tquant::detail::per_token_launch_config(4096, 768, 4, true);  // float32 rows of 768
  EXPECT_EQ(c.vec, 4);
  EXPECT_EQ(c.threads, 192);
  EXPECT_EQ(c.blocks, 4096);
  c = tquant::detail::per_token_launch_config(7, 3072, 2, true);  // bf16 rows of 3072
  EXPECT_EQ(c.vec, 8);
  EXPECT_EQ(c.threads, 384);
  c = tquant::detail::per_token_launch_config(7, 65, 2, true);  // odd K: scalar
  EXPECT_EQ(c.vec, 1);
  EXPECT_EQ(c.threads, 96);
  EXPECT_EQ(tquant::detail::per_token_launch_config(1, 1, 4, true).threads, 32);
  EXPECT_EQ(tquant::detail::per_token_launch_config(1, 1 << 20, 4, true).threads, 512);
}

// ---- reference twins against independent computations -----------------------------------------

TEST(CudaInt8Ref, GemmEqualsInt64Matmul) {
  int64_t seed = 1;
  for (int64_t M : kMs) {
    for (auto [K, N] : kKNs) {
      const auto x = random_codes({M, K}, seed++);
      const auto w = random_codes({N, K}, seed++);
      const auto expected = at::matmul(x.to(at::kLong), w.to(at::kLong).t()).to(at::kInt);
      expect_equal(tquant::int8_gemm_cuda_ref(x, w), expected,
                   "M=" + std::to_string(M) + " K=" + std::to_string(K));
    }
  }
}

TEST(CudaInt8Ref, GemmIsExactAtTheLargestAccumulators) {
  // All -128: every product is 2^14, the sum K * 2^14 (K = 4096: 2^26) must come back exactly.
  const auto x = at::full({3, 4096}, -128, at::kChar);
  const auto w = at::full({4, 4096}, -128, at::kChar);
  const auto y = tquant::int8_gemm_cuda_ref(x, w);
  EXPECT_TRUE(y.eq(4096 * 16384).all().item<bool>());
}

TEST(CudaInt8Ref, BmmEqualsInt64Bmm) {
  const auto a = random_codes({3, 17, 65}, 7);
  const auto b = random_codes({3, 20, 65}, 8);
  const auto expected = at::bmm(a.to(at::kLong), b.to(at::kLong).transpose(1, 2)).to(at::kInt);
  expect_equal(tquant::int8_bmm_cuda_ref(a, b), expected, "bmm");
}

TEST(CudaInt8Ref, PerTensorQuantizerMatchesCpuPath) {
  for (int64_t seed : {1, 2, 3}) {
    const auto x = random_float({33, 65}, seed, at::kFloat);
    const double scale = 0.0137 * static_cast<double>(seed);
    expect_equal(tquant::quantize_per_tensor_int8_cuda_ref(x, scale),
                 tquant::detail::quantize_per_tensor_int8_ref(x, scale), "per tensor");
  }
}

TEST(CudaInt8Ref, PerTensorQuantizerRoundsHalfToEvenAndClamps) {
  const auto x = torch::tensor({0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 126.5f, 1e9f, -1e9f, -127.5f});
  const auto q = tquant::quantize_per_tensor_int8_cuda_ref(x, 1.0);
  const auto expected =
      torch::tensor({0, 2, 2, 0, -2, 126, 127, -127, -127}, at::TensorOptions().dtype(at::kChar));
  expect_equal(q, expected, "rounding");
}

TEST(CudaInt8Ref, PerTensorQuantizerTakesHalfPrecisionInputs) {
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    const auto x = random_float({5, 17, 9}, 4, dtype);
    const auto q = tquant::quantize_per_tensor_int8_cuda_ref(x, 0.05);
    EXPECT_EQ(q.sizes(), x.sizes());
    expect_equal(q, tquant::detail::quantize_per_tensor_int8_ref(x.to(at::kFloat), 0.05),
                 "half inputs are exactly representable in float32");
  }
}

TEST(CudaInt8Ref, PerTokenQuantizerMatchesCpuPath) {
  for (int64_t M : kMs) {
    auto x = random_float({M, 65}, M, at::kFloat);
    if (M > 2) x[1].zero_();  // an all-zero row takes the FLT_EPSILON floor
    const auto [q, s] = tquant::quantize_per_token_int8_cuda_ref(x);
    const auto [q_cpu, s_cpu] = tquant::detail::quantize_per_token_int8_ref(x);
    expect_equal(q, q_cpu, "codes");
    expect_equal(s, s_cpu.to(at::kFloat).reshape({-1}), "scales");
    EXPECT_EQ(q.abs().amax().item<int>(), 127);
  }
}

TEST(CudaInt8Ref, PerTokenQuantizerFlattensLeadingDims) {
  const auto x = random_float({2, 3, 40}, 9, at::kBFloat16);
  const auto [q, s] = tquant::quantize_per_token_int8_cuda_ref(x);
  EXPECT_EQ(q.sizes(), x.sizes());
  EXPECT_EQ(s.sizes(), (std::vector<int64_t>{6}));
  const auto [q2, s2] = tquant::quantize_per_token_int8_cuda_ref(x.reshape({6, 40}));
  expect_equal(q.reshape({6, 40}), q2, "codes");
  expect_equal(s, s2, "scales");
}

TEST(CudaInt8Ref, DequantizeMatchesFloat64) {
  torch::manual_seed(3);
  const int64_t M = 17, N = 20;
  const auto acc = at::matmul(random_codes({M, 64}, 1).to(at::kLong),
                              random_codes({N, 64}, 2).to(at::kLong).t()).to(at::kInt);
  const auto ws = at::rand({N}, at::kFloat) * 0.01 + 1e-3;
  const auto bias = at::randn({N}, at::kFloat);
  const auto per_row = at::rand({M}, at::kFloat) * 0.02 + 1e-3;
  const auto per_tensor = at::full({1}, 0.0123f, at::kFloat);
  for (const auto& xs : {per_tensor, per_row}) {
    for (bool gelu : {false, true}) {
      for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
        auto y = acc.to(at::kDouble) * xs.to(at::kDouble).reshape({-1, 1}) *
                     ws.to(at::kDouble) +
                 bias.to(at::kDouble);
        if (gelu) y = 0.5 * y * (1 + at::erf(y / std::sqrt(2.0)));
        const auto out = tquant::dequantize_int32_cuda_ref(acc, xs, ws, bias, gelu, dt);
        EXPECT_EQ(out.scalar_type(), dt);
        // float32 arithmetic against float64: a few float32 roundings (amplified where y
        // cancels against the bias), then the output's.
        expect_close(out, y, std::max(tol_of(dt), 1e-4),
                     std::string("gelu=") + (gelu ? "1" : "0") + " " + c10::toString(dt));
      }
    }
  }
}

TEST(CudaInt8Ref, DequantizeWithoutBiasAndWithCpuScalarScale) {
  const auto acc = random_codes({3, 8}, 3).to(at::kInt) * 1000;
  const auto ws = at::full({8}, 0.5f);
  const auto y = tquant::dequantize_int32_cuda_ref(acc, at::full({1}, 0.25f), ws, std::nullopt,
                                                   false, at::kFloat);
  expect_equal(y, acc.to(at::kFloat) * 0.125f, "power-of-two scales are exact");
}

TEST(CudaInt8Ref, EmptyKGivesEpsilonScalesAndTheBias) {
  // An empty dot product is 0, so y = bias (exactly: 0 * s_x * s_w + b).
  const auto [q, s] = tquant::quantize_per_token_int8_cuda_ref(at::zeros({2, 3, 0}));
  EXPECT_EQ(q.sizes(), (std::vector<int64_t>{2, 3, 0}));
  EXPECT_TRUE(s.eq(FLT_EPSILON).all().item<bool>());
  EXPECT_EQ(s.numel(), 6);
  const auto bias = at::tensor({1.5f, -2.0f, 0.25f, 3.0f});
  const auto w_q = at::empty({4, 0}, at::kChar);
  const auto w_s = at::full({4}, 0.01f);
  for (std::optional<double> scale : {std::optional<double>(0.1), std::optional<double>()}) {
    const auto y = tquant::int8_linear_cuda_ref(at::zeros({2, 3, 0}), scale, w_q, w_s, bias);
    expect_equal(y, bias.expand({2, 3, 4}).contiguous(), scale ? "static" : "dynamic");
  }
}

TEST(CudaInt8Ref, PerTokenNanGivesANanScaleAndANanOutputRow) {
  auto x = random_float({4, 16}, 21, at::kFloat);
  x[2][5] = std::nanf("");
  const auto [q, s] = tquant::quantize_per_token_int8_cuda_ref(x);
  EXPECT_TRUE(std::isnan(s[2].item<float>()));
  const auto [q_rest, s_rest] = tquant::quantize_per_token_int8_cuda_ref(x.index({at::indexing::Slice(0, 2)}));
  expect_equal(s.narrow(0, 0, 2), s_rest, "rows without NaN keep their scales");
  expect_equal(q.narrow(0, 0, 2), q_rest, "and their codes");
  const auto w_q = random_codes({8, 16}, 22).clamp(-127, 127);
  const auto y = tquant::int8_linear_cuda_ref(x, std::nullopt, w_q, at::full({8}, 0.01f),
                                              at::zeros({8}));
  EXPECT_TRUE(y[2].isnan().all().item<bool>()) << y[2];
  EXPECT_TRUE(y.narrow(0, 0, 2).isfinite().all().item<bool>());
  EXPECT_TRUE(y[3].isfinite().all().item<bool>());
}

TEST(CudaInt8Ref, RequantizeMatchesFloat64WithinOneCode) {
  torch::manual_seed(4);
  const int64_t M = 33, N = 12;
  const auto acc = at::matmul(random_codes({M, 128}, 5).to(at::kLong),
                              random_codes({N, 128}, 6).to(at::kLong).t()).to(at::kInt);
  const auto ws = at::rand({N}, at::kFloat) * 0.01 + 1e-3;
  const auto xs = at::rand({M}, at::kFloat) * 0.02 + 1e-3;
  const auto bias = at::randn({N}, at::kFloat);
  for (bool gelu : {false, true}) {
    auto y = acc.to(at::kDouble) * xs.to(at::kDouble).unsqueeze(1) * ws.to(at::kDouble) +
             bias.to(at::kDouble);
    if (gelu) y = 0.5 * y * (1 + at::erf(y / std::sqrt(2.0)));
    const double out_scale = y.abs().max().item<double>() / 100;
    const auto expected = at::round(y / out_scale).clamp(-127, 127);
    const auto q = tquant::requantize_int32_cuda_ref(acc, xs, ws, bias, out_scale, gelu);
    EXPECT_EQ(q.scalar_type(), at::kChar);
    EXPECT_LE((q.to(at::kDouble) - expected).abs().max().item<double>(), 1.0);
  }
}

TEST(CudaInt8Ref, LinearMatchesCpuInt8Linear) {
  // The CPU path of tquant/gemm.h (its own reference twin) computes the same function.
  const int64_t K = 65, N = 20;
  const auto w_q = random_codes({N, K}, 11).clamp(-127, 127);
  torch::manual_seed(13);
  const auto w_s = at::rand({N}, at::kFloat) * 0.01 + 1e-3;
  const auto bias = at::randn({N}, at::kFloat);
  const auto weight = tquant::prepare_int8_weight(w_q, w_s, tquant::Int8GemmPath::kInt16Madd);
  const auto x = random_float({2, 17, K}, 12, at::kFloat);
  const auto rel = [](const at::Tensor& a, const at::Tensor& b) {
    return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
  };
  auto y = tquant::int8_linear_cuda_ref(x, 0.03, w_q, w_s, bias);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 17, N}));
  EXPECT_LE(rel(y, tquant::int8_linear_static_ref(x, 0.03, weight, bias)), 1e-5);
  y = tquant::int8_linear_cuda_ref(x, std::nullopt, w_q, w_s, bias);
  EXPECT_LE(rel(y, tquant::int8_linear_dynamic_ref(x, weight, bias)), 1e-5);
  // GELU applies after bias; output dtype follows x.
  const auto yg = tquant::int8_linear_cuda_ref(x.to(at::kBFloat16), 0.03, w_q, w_s, bias, true);
  EXPECT_EQ(yg.scalar_type(), at::kBFloat16);
  const auto expected = at::gelu(tquant::int8_linear_cuda_ref(x.to(at::kBFloat16).to(at::kFloat),
                                                              0.03, w_q, w_s, bias));
  expect_close(yg, expected, tquant::kCudaDequantBf16Tol + 1e-5, "gelu bf16");
}

// ---- validation -------------------------------------------------------------------------------

TEST(CudaInt8Validation, RefsNameTheTensorAndWhatWasExpected) {
  const auto x = random_codes({4, 8}, 1);
  const auto w = random_codes({4, 8}, 2);
  expect_error([&] { tquant::int8_gemm_cuda_ref(x.to(at::kFloat), w); },
               {"int8_gemm_cuda_ref", "x_q", "Char", "Float"});
  expect_error([&] { tquant::int8_gemm_cuda_ref(x, random_codes({4, 9}, 3)); },
               {"int8_gemm_cuda_ref", "K mismatch", "[4, 8]", "[4, 9]"});
  expect_error([&] { tquant::int8_gemm_cuda_ref(x.reshape({32}), w); },
               {"x_q of shape [M, K]", "[32]"});
  expect_error([&] { tquant::int8_bmm_cuda_ref(random_codes({2, 3, 8}, 1), random_codes({3, 4, 8}, 2)); },
               {"int8_bmm_cuda_ref", "batch mismatch"});
  expect_error([&] { tquant::quantize_per_tensor_int8_cuda_ref(at::ones({3}, at::kDouble), 1.0); },
               {"quantize_per_tensor_int8_cuda_ref", "float32, bfloat16 or float16", "Double"});
  expect_error([&] { tquant::quantize_per_tensor_int8_cuda_ref(at::ones({3}), 0.0); },
               {"scale", "> 0"});
  expect_error([&] { tquant::quantize_per_tensor_int8_cuda_ref(at::ones({3}), 1e-60); },
               {"float32 reciprocal"});
  const auto acc = at::zeros({3, 4}, at::kInt);
  expect_error([&] {
    tquant::dequantize_int32_cuda_ref(acc, at::ones({2}), at::ones({4}), std::nullopt, false,
                                      at::kFloat);
  }, {"dequantize_int32_cuda_ref", "x_scale", "[M] = [3]", "[2]"});
  expect_error([&] {
    tquant::dequantize_int32_cuda_ref(acc, at::ones({1}), at::ones({5}), std::nullopt, false,
                                      at::kFloat);
  }, {"w_scale", "[N] = [4]", "[5]"});
  expect_error([&] {
    tquant::dequantize_int32_cuda_ref(acc, at::ones({1}), at::ones({4}), at::ones({3}), false,
                                      at::kFloat);
  }, {"bias", "[N] = [4]"});
  expect_error([&] {
    tquant::dequantize_int32_cuda_ref(acc.to(at::kLong), at::ones({1}), at::ones({4}),
                                      std::nullopt, false, at::kFloat);
  }, {"acc", "Int", "Long"});
  expect_error([&] {
    tquant::dequantize_int32_cuda_ref(acc, at::ones({1}), at::ones({4}), std::nullopt, false,
                                      at::kInt);
  }, {"out_dtype"});
  expect_error([&] {
    tquant::int8_linear_cuda_ref(at::ones({2, 7}), 0.1, random_codes({4, 8}, 1), at::ones({4}),
                                 std::nullopt);
  }, {"int8_linear_cuda_ref", "K mismatch", "[2, 7]", "[4, 8]"});
  expect_error([&] {
    tquant::int8_gemm_cuda_ref(random_codes({2, tquant::kInt8GemmMaxK + 1}, 1),
                               random_codes({4, tquant::kInt8GemmMaxK + 1}, 2));
  }, {"kInt8GemmMaxK"});
}

TEST(CudaInt8Validation, KernelsRejectCpuTensorsOrSayTheyWereNotBuilt) {
  const auto x = random_codes({4, 8}, 1);
  const auto w = random_codes({4, 8}, 2);
  const auto f = at::ones({4, 8});
  const auto acc = at::zeros({4, 4}, at::kInt);
  const auto ones4 = at::ones({4});
  const bool built = tquant::cuda_int8_built();
  const auto expect = [&](const std::function<void()>& call, const char* op, const char* what) {
    if (built) {
      expect_error(call, {op, what, "CUDA device", "cpu"});
    } else {
      expect_error(call, {op, "tquant was built without CUDA kernels"});
    }
  };
  expect([&] { tquant::int8_gemm_cuda(x, w); }, "int8_gemm_cuda", "x_q");
  expect([&] { tquant::int8_bmm_cuda(x.unsqueeze(0), w.unsqueeze(0)); }, "int8_bmm_cuda", "a_q");
  expect([&] { tquant::quantize_per_tensor_int8_cuda(f, 0.1); }, "quantize_per_tensor_int8_cuda",
         "x");
  expect([&] { tquant::quantize_per_token_int8_cuda(f); }, "quantize_per_token_int8_cuda", "x");
  expect([&] { tquant::dequantize_int32_cuda(acc, ones4, ones4, std::nullopt, false, at::kFloat); },
         "dequantize_int32_cuda", "acc");
  expect([&] { tquant::requantize_int32_cuda(acc, ones4, ones4, std::nullopt, 0.1); },
         "requantize_int32_cuda", "acc");
  expect([&] { tquant::int8_linear_cuda(f, std::nullopt, w, ones4, std::nullopt); },
         "int8_linear_cuda", "x");
}

TEST(CudaInt8Validation, KernelsNeedNMultipleOfFour) {
  if (!tquant::cuda_int8_built()) GTEST_SKIP() << "tquant was built without CUDA kernels";
  // Checked before the device, so this runs without a GPU.
  expect_error([&] { tquant::int8_gemm_cuda(random_codes({4, 8}, 1), random_codes({6, 8}, 2)); },
               {"int8_gemm_cuda", "multiple of 4", "N=6"});
  expect_error([&] {
    tquant::int8_bmm_cuda(random_codes({2, 4, 8}, 1), random_codes({2, 6, 8}, 2));
  }, {"int8_bmm_cuda", "multiple of 4", "N=6"});
}

TEST(CudaInt8Validation, WithoutCudaKernelsEveryEntryPointSaysSo) {
  if (tquant::cuda_int8_built()) GTEST_SKIP() << "tquant was built with CUDA kernels";
  expect_error([] { tquant::int8_gemm_cuda(at::Tensor(), at::Tensor()); },
               {"int8_gemm_cuda", "tquant was built without CUDA kernels"});
  EXPECT_FALSE(tquant::cuda_int8_available());
}

// ---- kernels against their twins (GPU) -------------------------------------------------------

const at::Device kCuda(at::kCUDA, 0);

TEST(CudaInt8Kernels, GemmIsBitExact_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  int64_t seed = 100;
  std::vector<int64_t> ms = kMs;
  ms.push_back(128);
  ms.push_back(1024);
  auto kns = kKNs;
  kns.push_back({768, 2304});
  kns.push_back({3072, 768});
  for (int64_t M : ms) {
    for (auto [K, N] : kns) {
      const auto x = random_codes({M, K}, seed++, kCuda);
      const auto w = random_codes({N, K}, seed++, kCuda);
      expect_equal(tquant::int8_gemm_cuda(x, w), tquant::int8_gemm_cuda_ref(x, w),
                   "M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" +
                       std::to_string(N));
    }
  }
}

TEST(CudaInt8Kernels, GemmTakesStridedAndMisalignedOperands_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  const auto big = random_codes({65, 130}, 1, kCuda);
  const auto x = big.narrow(1, 1, 64);  // rows 130 apart, data 1 byte off: copied first
  const auto w = random_codes({64, 64}, 2, kCuda).t();  // non-contiguous
  expect_equal(tquant::int8_gemm_cuda(x, w), tquant::int8_gemm_cuda_ref(x, w), "strided");
  const auto flat = random_codes({1 + 33 * 64}, 3, kCuda);
  const auto xm = flat.narrow(0, 1, 33 * 64).view({33, 64});  // contiguous, 1-byte aligned
  expect_equal(tquant::int8_gemm_cuda(xm, w.contiguous()),
               tquant::int8_gemm_cuda_ref(xm, w.contiguous()), "misaligned");
}

TEST(CudaInt8Kernels, GemmHeuristicIsQueriedOncePerShape_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  const auto x = random_codes({40, 96}, 1, kCuda);
  const auto w = random_codes({52, 96}, 2, kCuda);
  tquant::int8_gemm_cuda(x, w);
  const size_t after_first = tquant::detail::int8_gemm_heuristic_queries();
  for (int i = 0; i < 3; ++i) tquant::int8_gemm_cuda(x, w);
  EXPECT_EQ(tquant::detail::int8_gemm_heuristic_queries(), after_first);
  tquant::int8_gemm_cuda(random_codes({41, 96}, 3, kCuda), w);
  EXPECT_EQ(tquant::detail::int8_gemm_heuristic_queries(), after_first + 1);
}

#if defined(TQUANT_TEST_HAS_CUDA_HEADERS)
TEST(CudaInt8Kernels, GemmRunsOnTheCurrentStream_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  const auto x = random_codes({256, 768}, 1, kCuda);
  const auto w = random_codes({768, 768}, 2, kCuda);
  const auto expected = tquant::int8_gemm_cuda_ref(x, w);
  auto stream = c10::cuda::getStreamFromPool();
  at::Tensor y;
  {
    c10::cuda::CUDAStreamGuard guard(stream);
    y = tquant::int8_gemm_cuda(x, w);
  }
  stream.synchronize();
  expect_equal(y, expected, "side stream");
}
#endif

TEST(CudaInt8Kernels, BmmIsBitExact_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  for (auto [B, M, N, K] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>{
           {1, 3, 4, 5}, {12, 128, 128, 64}, {7, 17, 20, 65},
           {5, 3, 8, 4}}) {  // B's batch stride 3 * 4 = 12 bytes: 4-byte alignment declared
    const auto a = random_codes({B, M, K}, B, kCuda);
    const auto b = random_codes({B, N, K}, B + 1, kCuda);
    expect_equal(tquant::int8_bmm_cuda(a, b), tquant::int8_bmm_cuda_ref(a, b),
                 "B=" + std::to_string(B));
  }
}

TEST(CudaInt8Kernels, QuantizersAreBitExact_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  int64_t seed = 1;
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (std::vector<int64_t> shape : std::vector<std::vector<int64_t>>{
             {1, 1}, {3, 5}, {17, 33}, {65, 768}, {4096, 768}, {2, 9, 3072}, {33, 65}}) {
      const auto x = random_float(shape, seed++, dt, 3.0, kCuda);
      const std::string what = std::string(c10::toString(dt)) + " " + c10::str(x.sizes());
      expect_equal(tquant::quantize_per_tensor_int8_cuda(x, 0.021),
                   tquant::quantize_per_tensor_int8_cuda_ref(x, 0.021), "per tensor " + what);
      const auto [q, s] = tquant::quantize_per_token_int8_cuda(x);
      const auto [q_ref, s_ref] = tquant::quantize_per_token_int8_cuda_ref(x);
      expect_equal(q, q_ref, "per token codes " + what);
      expect_equal(s, s_ref, "per token scales " + what);
    }
  }
  // Ties, clamping and zero rows.
  const auto ties = torch::tensor({0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 1e9f, -1e9f}).to(kCuda);
  expect_equal(tquant::quantize_per_tensor_int8_cuda(ties, 1.0),
               tquant::quantize_per_tensor_int8_cuda_ref(ties, 1.0), "ties");
  const auto zeros = at::zeros({3, 64}, at::TensorOptions().device(kCuda));
  const auto [qz, sz] = tquant::quantize_per_token_int8_cuda(zeros);
  EXPECT_TRUE(sz.eq(FLT_EPSILON).all().item<bool>());
  EXPECT_TRUE(qz.eq(0).all().item<bool>());
}

TEST(CudaInt8Kernels, EpiloguesMatchTheirTwins_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  for (auto [M, N] : std::vector<std::pair<int64_t, int64_t>>{{1, 4}, {17, 20}, {33, 6},
                                                             {4096, 3072}}) {
    const auto acc = (random_codes({M, N}, M, kCuda).to(at::kInt) * 997);
    const auto ws = (at::rand({N}) * 0.01 + 1e-3).to(kCuda);
    const auto bias = at::randn({N}).to(kCuda);
    const auto per_row = (at::rand({M}) * 0.02 + 1e-3).to(kCuda);
    for (const auto& xs : {at::full({1}, 0.013f), at::full({1}, 0.013f).to(kCuda), per_row}) {
      for (bool gelu : {false, true}) {
        for (bool with_bias : {false, true}) {
          const std::optional<at::Tensor> b =
              with_bias ? std::optional<at::Tensor>(bias) : std::nullopt;
          const std::string what = "M=" + std::to_string(M) + " N=" + std::to_string(N) +
                                   " gelu=" + std::to_string(gelu) +
                                   " bias=" + std::to_string(with_bias) +
                                   " xs=" + c10::str(xs.sizes()) + xs.device().str();
          for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
            const auto out = tquant::dequantize_int32_cuda(acc, xs, ws, b, gelu, dt);
            const auto ref = tquant::dequantize_int32_cuda_ref(acc, xs, ws, b, gelu, dt);
            if (gelu) {
              expect_close(out, ref, tol_of(dt), what + " " + c10::toString(dt));
            } else {  // the same float32 operations: bit-identical (cuda_int8.h)
              expect_equal(out, ref, what + " " + c10::toString(dt));
            }
          }
          const auto q = tquant::requantize_int32_cuda(acc, xs, ws, b, 0.05, gelu);
          const auto q_ref = tquant::requantize_int32_cuda_ref(acc, xs, ws, b, 0.05, gelu);
          if (gelu) {
            EXPECT_LE((q.to(at::kInt) - q_ref.to(at::kInt)).abs().max().item<int>(),
                      tquant::kCudaRequantGeluCodeTol) << what;
          } else {
            expect_equal(q, q_ref, "requantize " + what);
          }
        }
      }
    }
  }
}

TEST(CudaInt8Kernels, LinearMatchesItsTwin_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  for (auto [K, N] : std::vector<std::pair<int64_t, int64_t>>{{768, 2304}, {3072, 768}, {65, 20}}) {
    const auto w_q = random_codes({N, K}, K, kCuda).clamp(-127, 127);
    const auto w_s = (at::rand({N}) * 0.01 + 1e-3).to(kCuda);
    const auto bias = at::randn({N}).to(kCuda);
    for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
      const auto x = random_float({2, 33, K}, N, dt, 1.0, kCuda);
      for (bool gelu : {false, true}) {
        for (std::optional<double> s : {std::optional<double>(0.02), std::optional<double>()}) {
          const auto y = tquant::int8_linear_cuda(x, s, w_q, w_s, bias, gelu);
          EXPECT_EQ(y.scalar_type(), dt);
          EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 33, N}));
          const auto ref = tquant::int8_linear_cuda_ref(x, s, w_q, w_s, bias, gelu);
          const std::string what = std::string(s ? "static " : "dynamic ") + c10::toString(dt) +
                                   " K=" + std::to_string(K) + " gelu=" + std::to_string(gelu);
          if (gelu) {
            expect_close(y, ref, tol_of(dt), what);
          } else {  // bit-identical codes, scales and epilogue
            expect_equal(y, ref, what);
          }
        }
      }
    }
  }
}

TEST(CudaInt8Kernels, GemmAtSmallMIsBitExact_CUDA) {
  // PyTorch's _int_mm refuses M <= 16 and pytorch#107671 saw wrong TN results at m = 17: every
  // M from 1 to 33, plain and batched (TQUANT_INT8_GEMM_PAD_SMALL_M=1 forces the padded path).
  SKIP_WITHOUT_CUDA_INT8();
  for (auto [K, N] : std::vector<std::pair<int64_t, int64_t>>{{64, 48}, {768, 2304}, {65, 20}}) {
    const auto w = random_codes({N, K}, K + N, kCuda);
    for (int64_t M = 1; M <= 33; ++M) {
      const auto x = random_codes({M, K}, M, kCuda);
      expect_equal(tquant::int8_gemm_cuda(x, w), tquant::int8_gemm_cuda_ref(x, w),
                   "M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" +
                       std::to_string(N));
    }
  }
  for (int64_t M : {1, 2, 3, 16, 17, 31, 33}) {
    const auto a = random_codes({6, M, 32}, M, kCuda);
    const auto b = random_codes({6, 32, 32}, M + 1, kCuda);
    expect_equal(tquant::int8_bmm_cuda(a, b), tquant::int8_bmm_cuda_ref(a, b),
                 "bmm M=" + std::to_string(M));
  }
}

TEST(CudaInt8Kernels, PerTokenNanMatchesTheTwin_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  for (int64_t K : {16, 65, 3072}) {  // vectorized and scalar loads
    auto x = random_float({5, K}, K, at::kFloat, 3.0, kCuda);
    x[1][K - 1] = std::nanf("");
    x[3][0] = std::nanf("");
    const auto [q, s] = tquant::quantize_per_token_int8_cuda(x);
    const auto [q_ref, s_ref] = tquant::quantize_per_token_int8_cuda_ref(x);
    const auto nan_rows = s.isnan().cpu();
    EXPECT_TRUE(nan_rows.equal(s_ref.isnan().cpu())) << s << s_ref;
    EXPECT_TRUE(nan_rows.equal(at::tensor({false, true, false, true, false})));
    for (int64_t row : {0, 2, 4}) {
      expect_equal(q[row], q_ref[row], "codes of row " + std::to_string(row));
      expect_equal(s[row], s_ref[row], "scale of row " + std::to_string(row));
    }
    const auto w_q = random_codes({8, K}, 3, kCuda).clamp(-127, 127);
    const auto y = tquant::int8_linear_cuda(x, std::nullopt, w_q, at::full({8}, 0.01f).to(kCuda),
                                            std::nullopt);
    EXPECT_TRUE(y[1].isnan().all().item<bool>() && y[3].isnan().all().item<bool>()) << y;
    EXPECT_TRUE(y[0].isfinite().all().item<bool>() && y[4].isfinite().all().item<bool>());
  }
}

TEST(CudaInt8Kernels, EmptyKMatchesTheTwin_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  const auto x = at::zeros({2, 3, 0}, at::TensorOptions().device(kCuda));
  const auto w_q = at::empty({4, 0}, at::TensorOptions().dtype(at::kChar).device(kCuda));
  const auto w_s = at::full({4}, 0.01f).to(kCuda);
  const auto bias = at::tensor({1.5f, -2.0f, 0.25f, 3.0f}).to(kCuda);
  expect_equal(tquant::int8_gemm_cuda(x[0].to(at::kChar), w_q),
               at::zeros({3, 4}, at::kInt), "gemm");
  const auto [q, s] = tquant::quantize_per_token_int8_cuda(x);
  expect_equal(s, tquant::quantize_per_token_int8_cuda_ref(x).second, "scales");
  for (std::optional<double> scale : {std::optional<double>(0.1), std::optional<double>()}) {
    expect_equal(tquant::int8_linear_cuda(x, scale, w_q, w_s, bias),
                 tquant::int8_linear_cuda_ref(x, scale, w_q, w_s, bias),
                 scale ? "static" : "dynamic");
  }
}

TEST(CudaInt8Kernels, ValidationOnTheGpu_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  const auto x = random_codes({4, 8}, 1, kCuda);
  expect_error([&] { tquant::int8_gemm_cuda(x, random_codes({4, 8}, 2)); },
               {"int8_gemm_cuda", "w_q", "CUDA device"});
  expect_error([&] { tquant::int8_gemm_cuda(x, random_codes({4, 12}, 2, kCuda)); },
               {"K mismatch"});
  const auto acc = at::zeros({4, 4}, at::TensorOptions().dtype(at::kInt).device(kCuda));
  expect_error([&] {
    tquant::dequantize_int32_cuda(acc, at::ones({4}), at::ones({4}).to(kCuda), std::nullopt,
                                  false, at::kFloat);
  }, {"x_scale", "same device"});
}

}  // namespace
