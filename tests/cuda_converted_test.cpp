// Converted QuantLinear on a GPU (tquant/nn/quant_linear.h, CUDA branch): the same converted
// module, cloned to the GPU, must give the CPU converted result (the same integer codes; float32
// epilogues that differ only in rounding order). Tests ending in _CUDA skip without a GPU; the
// others check the host copy of the static input scale on the CPU.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cuda_test_util.h"
#include "tquant/cuda_int8.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/nn/quant_mode.h"
#include "tquant/qconfig.h"

#if __has_include(<ATen/cuda/CUDAGraph.h>) && __has_include(<cuda_runtime_api.h>)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define TQUANT_TEST_HAS_CUDA_GRAPHS 1
#endif

namespace {

using tquant::QuantLinear;
using tquant::QuantLinearImpl;
using tquant::QuantMode;

// Converted INT8 Linear [K -> N], calibrated on 64 rows of N(0, 2^2) (static) or observing the
// weight only (dynamic).
QuantLinear converted_linear(int64_t K, int64_t N, bool dynamic, int64_t seed) {
  torch::manual_seed(seed);
  QuantLinear fc(K, N);
  fc->set_qconfig(dynamic ? tquant::int8_dynamic_qconfig() : tquant::int8_static_qconfig());
  fc->set_mode(QuantMode::kObserve);
  torch::NoGradGuard no_grad;
  fc(torch::randn({64, K}) * 2);
  fc->set_mode(QuantMode::kFakeQuant);
  const auto result = fc->convert();
  EXPECT_TRUE(result.converted) << result.reason;
  EXPECT_EQ(fc->converted_scheme(), dynamic ? "int8_dynamic" : "int8_static");
  return fc;
}

// max|a - b| <= tol * max|b|: the CPU path (oneDNN: float(acc) * (s_x * s_w) + b) and the CUDA
// epilogue ((float(acc) * s_x) * s_w + b) round in a different order, on the same integer codes.
void expect_close_to_max(const at::Tensor& a, const at::Tensor& b, double tol,
                         const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  ASSERT_EQ(a.scalar_type(), b.scalar_type()) << what;
  const auto ad = a.cpu().to(at::kDouble);
  const auto bd = b.cpu().to(at::kDouble);
  ASSERT_TRUE(ad.isfinite().all().item<bool>()) << what << ": non-finite output";
  const double max_b = bd.abs().max().item<double>();
  const double worst = (ad - bd).abs().max().item<double>();
  EXPECT_LE(worst, tol * max_b) << what << ": max|b| " << max_b;
}

double tol_for(at::ScalarType dtype) {
  // float32: 1e-5 of max|y| (as CudaInt8Ref.LinearMatchesCpuInt8Linear); bf16 / fp16: the two
  // float32 results may round to neighbouring values, one ulp of the format.
  if (dtype == at::kBFloat16) return tquant::kCudaDequantBf16Tol;
  if (dtype == at::kHalf) return tquant::kCudaDequantF16Tol;
  return 1e-5;
}

// ---- host copy of the static input scale (CPU) -------------------------------------------------

TEST(ConvertedLinearScale, ForwardFollowsAWriteIntoTheInputScaleBuffer) {
  // load_state copies the saved scale into the buffer; forward must use the new value.
  auto fc = converted_linear(65, 20, /*dynamic=*/false, 1);
  torch::manual_seed(2);
  const auto x = torch::randn({7, 65});
  const double s = fc->input_scale.item<double>();
  const auto before = fc(x);
  {
    torch::NoGradGuard no_grad;
    fc->input_scale.fill_(2 * s);
  }
  const auto after = fc(x);
  const std::optional<at::Tensor> bias(fc->bias);
  expect_close_to_max(after,
                      tquant::int8_linear_cuda_ref(x, 2 * s, fc->weight_int8, fc->weight_scale,
                                                   bias),
                      1e-5, "after the write");
  EXPECT_GT((after - before).abs().max().item<double>(), 1e-3 * before.abs().max().item<double>())
      << "the forward kept the old scale";
}

TEST(ConvertedLinearScale, CloneKeepsTheScaleAndFollowsItsOwnBuffer) {
  auto fc = converted_linear(16, 8, /*dynamic=*/false, 3);
  auto copy = std::dynamic_pointer_cast<QuantLinearImpl>(fc->clone());
  ASSERT_NE(copy, nullptr);
  torch::manual_seed(4);
  const auto x = torch::randn({5, 16});
  EXPECT_TRUE(torch::equal(copy->forward(x), fc(x)));
  {
    torch::NoGradGuard no_grad;
    copy->input_scale.mul_(4);
  }
  EXPECT_FALSE(torch::equal(copy->forward(x), fc(x))) << "the clone shares the original's copy";
}

// ---- GPU against CPU ---------------------------------------------------------------------------

const at::Device kCuda(at::kCUDA, 0);

// The converted module on the GPU (a clone moved there) against the CPU module, for every M in
// 1..33 (2-d input) and a few 3-d inputs, in float32 and bfloat16.
void expect_gpu_matches_cpu(int64_t K, int64_t N, bool dynamic) {
  auto fc = converted_linear(K, N, dynamic, K * 1000 + N);
  auto gpu = std::dynamic_pointer_cast<QuantLinearImpl>(fc->clone());
  ASSERT_NE(gpu, nullptr);
  gpu->to(kCuda);
  const std::string shape = (dynamic ? "dynamic K=" : "static K=") + std::to_string(K) +
                            " N=" + std::to_string(N);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t M = 1; M <= 33; ++M) {
      torch::manual_seed(M);
      const auto x = (torch::randn({M, K}) * 2).to(dtype);
      const auto y_cpu = fc(x);
      const auto y_gpu = gpu->forward(x.to(kCuda));
      ASSERT_TRUE(y_gpu.is_cuda());
      expect_close_to_max(y_gpu, y_cpu, tol_for(dtype),
                          shape + " M=" + std::to_string(M) + " " + c10::toString(dtype));
    }
    torch::manual_seed(5);
    const auto x3 = (torch::randn({3, 17, K}) * 2).to(dtype);
    expect_close_to_max(gpu->forward(x3.to(kCuda)), fc(x3), tol_for(dtype),
                        shape + " [3, 17, K] " + c10::toString(dtype));
  }
}

TEST(ConvertedLinearOnGpu, StaticMatchesCpu_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  // K % 4 == 0, odd K (padded per call), BERT-like width, N % 4 != 0 (the reference twin).
  for (auto [K, N] : std::vector<std::pair<int64_t, int64_t>>{
           {64, 48}, {65, 20}, {384, 1536}, {33, 6}}) {
    expect_gpu_matches_cpu(K, N, /*dynamic=*/false);
  }
}

TEST(ConvertedLinearOnGpu, DynamicMatchesCpu_CUDA) {
  SKIP_WITHOUT_CUDA_INT8();
  for (auto [K, N] : std::vector<std::pair<int64_t, int64_t>>{
           {64, 48}, {65, 20}, {384, 1536}, {33, 6}}) {
    expect_gpu_matches_cpu(K, N, /*dynamic=*/true);
  }
}

#if defined(TQUANT_TEST_HAS_CUDA_GRAPHS)
TEST(ConvertedLinearOnGpu, StaticForwardIsCapturedInACudaGraph_CUDA) {
  // A forward that read the input scale with .item() on the GPU would fail inside the capture.
  SKIP_WITHOUT_CUDA_INT8();
  auto fc = converted_linear(768, 768, /*dynamic=*/false, 7);
  fc->to(kCuda);
  torch::manual_seed(8);
  const auto x = torch::randn({128, 768}).to(kCuda);
  const auto eager = fc(x);  // warm-up: heuristic query and workspace outside the capture
  auto stream = c10::cuda::getStreamFromPool();
  at::cuda::CUDAGraph graph;
  at::Tensor captured;
  {
    c10::cuda::CUDAStreamGuard guard(stream);
    graph.capture_begin();
    captured = fc(x);
    graph.capture_end();
  }
  graph.replay();
  torch::cuda::synchronize();
  EXPECT_TRUE(torch::equal(captured, eager));
}
#endif

}  // namespace
