// CUDA INT8 bench (tquant/cuda_int8.h): per shape, the cuBLASLt int8 GEMM against bf16 cuBLAS
// (torch::matmul) and torch::_int_mm; the whole INT8 Linear (static and dynamic quantization)
// against the bf16 torch Linear; the quantize kernels' bandwidth against a device-to-device copy
// measured in the same run. CUDA events around each call, warm-up first, median of --reps.
// Inputs rotate among enough copies to exceed twice the L2 cache, so repeated calls do not read
// from cache what a real model would read from memory (METHOD.md).
//
// Usage: tquant_cuda_int8_bench [--reps N] [--warmup N] [--quick]
// Exits with status 1 and a message when no CUDA device is visible or tquant has no CUDA kernels.

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tquant/cuda_int8.h"

namespace {

struct Options {
  int reps = 50;
  int warmup = 10;
  bool quick = false;
};

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s failed: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// Median time of fn() in ms, each repetition bracketed by CUDA events on the current stream.
double median_ms(const std::function<void(int)>& fn, const Options& opt) {
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (int i = 0; i < opt.warmup; ++i) fn(i);
  cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  cudaEvent_t start, stop;
  cuda_check(cudaEventCreate(&start), "cudaEventCreate");
  cuda_check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<float> times;
  for (int i = 0; i < opt.reps; ++i) {
    cuda_check(cudaEventRecord(start, stream), "cudaEventRecord");
    fn(i);
    cuda_check(cudaEventRecord(stop, stream), "cudaEventRecord");
    cuda_check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// How many input sets to rotate so that they exceed twice the L2 cache (at most 16).
int copies_for(int64_t bytes_per_set) {
  const int64_t l2 = at::cuda::getCurrentDeviceProperties()->l2CacheSize;
  return static_cast<int>(std::clamp<int64_t>((2 * l2) / std::max<int64_t>(bytes_per_set, 1) + 1,
                                              1, 16));
}

struct Shape {
  int64_t M, K, N;
};

void print_header() {
  const auto* prop = at::cuda::getCurrentDeviceProperties();
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  std::printf("device: %s (sm_%d%d, %d SMs, %.1f GiB, L2 %.0f MiB)\n", prop->name, prop->major,
              prop->minor, prop->multiProcessorCount,
              static_cast<double>(prop->totalGlobalMem) / (1 << 30),
              static_cast<double>(prop->l2CacheSize) / (1 << 20));
  const auto libs = tquant::cuda_library_versions();
  std::printf("torch %d.%d.%d, CUDA runtime %d, driver %d, cuBLASLt %zu (compiled against %zu) "
              "from %s\n",
              TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH, runtime, driver,
              libs.cublaslt_loaded, libs.cublaslt_compiled, libs.cublaslt_path.c_str());
}

void bench_gemm(const std::vector<Shape>& shapes, const Options& opt) {
  std::printf("\nGEMM only (median ms; TOP/s = 2MNK / time)\n");
  std::printf("%6s %6s %6s | %9s %9s %9s | %8s %8s | %9s %9s\n", "M", "K", "N", "int8 ms",
              "bf16 ms", "int_mm ms", "int8 TOP", "bf16 TF", "bf16/int8", "intmm/int8");
  const auto dev = at::TensorOptions().device(at::kCUDA);
  for (const auto& s : shapes) {
    const int copies = copies_for(s.M * s.K * 3 + s.N * s.K * 3);
    std::vector<at::Tensor> xq, wq, xb, wb;
    for (int c = 0; c < copies; ++c) {
      xq.push_back(at::randint(-127, 128, {s.M, s.K}, dev.dtype(at::kChar)));
      wq.push_back(at::randint(-127, 128, {s.N, s.K}, dev.dtype(at::kChar)));
      xb.push_back(at::randn({s.M, s.K}, dev.dtype(at::kBFloat16)));
      wb.push_back(at::randn({s.N, s.K}, dev.dtype(at::kBFloat16)));
    }
    const double ops = 2.0 * s.M * s.N * s.K;
    const double t8 = median_ms([&](int i) { tquant::int8_gemm_cuda(xq[i % copies], wq[i % copies]); }, opt);
    const double tb = median_ms([&](int i) { at::matmul(xb[i % copies], wb[i % copies].t()); }, opt);
    double tm = -1;
    try {
      tm = median_ms([&](int i) { at::_int_mm(xq[i % copies], wq[i % copies].t()); }, opt);
    } catch (const c10::Error& e) {
      std::printf("  (_int_mm refused %ldx%ldx%ld: %s)\n", static_cast<long>(s.M),
                  static_cast<long>(s.K), static_cast<long>(s.N),
                  e.what_without_backtrace());
    }
    std::printf("%6ld %6ld %6ld | %9.4f %9.4f %9s | %8.1f %8.1f | %9.2f %9s\n",
                static_cast<long>(s.M), static_cast<long>(s.K), static_cast<long>(s.N), t8, tb,
                tm < 0 ? "n/a" : std::to_string(tm).substr(0, 9).c_str(), ops / t8 / 1e9,
                ops / tb / 1e9, tb / t8,
                tm < 0 ? "n/a" : std::to_string(tm / t8).substr(0, 6).c_str());
  }
}

void bench_linear(const std::vector<Shape>& shapes, const Options& opt) {
  std::printf("\nWhole Linear, bf16 in and out, with bias (median ms; x = bf16 time / int8 time)\n");
  std::printf("%6s %6s %6s | %9s %9s %9s %9s | %8s %8s %8s\n", "M", "K", "N", "bf16 ms",
              "int8 st", "int8 dyn", "st+gelu", "x static", "x dyn", "x st+gelu");
  const auto dev = at::TensorOptions().device(at::kCUDA);
  for (const auto& s : shapes) {
    const int copies = copies_for(s.M * s.K * 2 + s.N * s.K * 3 + s.M * s.N * 2);
    std::vector<at::Tensor> x, wb, wq;
    for (int c = 0; c < copies; ++c) {
      x.push_back(at::randn({s.M, s.K}, dev.dtype(at::kBFloat16)));
      wb.push_back(at::randn({s.N, s.K}, dev.dtype(at::kBFloat16)));
      wq.push_back(at::randint(-127, 128, {s.N, s.K}, dev.dtype(at::kChar)));
    }
    const auto ws = at::rand({s.N}, dev.dtype(at::kFloat)) * 0.01 + 1e-3;
    const auto bias = at::randn({s.N}, dev.dtype(at::kBFloat16));
    const double tb = median_ms([&](int i) { at::linear(x[i % copies], wb[i % copies], bias); }, opt);
    const double ts = median_ms([&](int i) {
      tquant::int8_linear_cuda(x[i % copies], 0.02, wq[i % copies], ws, bias);
    }, opt);
    const double td = median_ms([&](int i) {
      tquant::int8_linear_cuda(x[i % copies], std::nullopt, wq[i % copies], ws, bias);
    }, opt);
    const double tg = median_ms([&](int i) {
      tquant::int8_linear_cuda(x[i % copies], 0.02, wq[i % copies], ws, bias, true);
    }, opt);
    std::printf("%6ld %6ld %6ld | %9.4f %9.4f %9.4f %9.4f | %8.2f %8.2f %8.2f\n",
                static_cast<long>(s.M), static_cast<long>(s.K), static_cast<long>(s.N), tb, ts, td,
                tg, tb / ts, tb / td, tb / tg);
  }
}

void bench_quantize(const Options& opt) {
  std::printf("\nActivation quantization bandwidth (bytes read + written / time)\n");
  const auto dev = at::TensorOptions().device(at::kCUDA);
  const auto big_src = at::randn({1 << 27}, dev.dtype(at::kBFloat16));  // 256 MiB
  auto big_dst = at::empty_like(big_src);
  const double tc = median_ms([&](int) { big_dst.copy_(big_src); }, opt);
  const double copy_gbs = 2.0 * big_src.nbytes() / tc / 1e6;
  std::printf("  device-to-device copy, 256 MiB bf16: %.4f ms, %.0f GB/s\n", tc, copy_gbs);
  for (const auto& [M, K] : std::vector<std::pair<int64_t, int64_t>>{{8192, 8192}, {4096, 3072},
                                                                    {4096, 768}}) {
    for (auto dt : {at::kBFloat16, at::kFloat}) {
      const auto x = at::randn({M, K}, dev.dtype(dt));
      const double bytes = static_cast<double>(x.numel()) * (x.element_size() + 1);
      const double tt = median_ms([&](int) { tquant::quantize_per_tensor_int8_cuda(x, 0.02); }, opt);
      const double tk = median_ms([&](int) { tquant::quantize_per_token_int8_cuda(x); }, opt);
      std::printf("  [%ld, %ld] %-9s per tensor %.4f ms %5.0f GB/s (%3.0f%% of copy) | per token "
                  "%.4f ms %5.0f GB/s (%3.0f%%)\n",
                  static_cast<long>(M), static_cast<long>(K), c10::toString(dt), tt,
                  bytes / tt / 1e6, 100 * bytes / tt / 1e6 / copy_gbs, tk, bytes / tk / 1e6,
                  100 * bytes / tk / 1e6 / copy_gbs);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) {
      opt.reps = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--warmup") && i + 1 < argc) {
      opt.warmup = std::max(0, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--quick")) {
      opt.quick = true;
    } else {
      std::printf("usage: %s [--reps N] [--warmup N] [--quick]\n", argv[0]);
      return std::strcmp(argv[i], "--help") ? 2 : 0;
    }
  }
  if (!tquant::cuda_int8_built()) {
    std::fprintf(stderr, "tquant_cuda_int8_bench: tquant was built without CUDA kernels\n");
    return 1;
  }
  if (!tquant::cuda_int8_available()) {
    std::fprintf(stderr, "tquant_cuda_int8_bench: no CUDA device visible; nothing to measure "
                         "(run it on a GPU machine, see docs/benchmarks.md)\n");
    return 1;
  }
  torch::manual_seed(0);
  print_header();
  std::printf("reps %d (median), warm-up %d\n", opt.reps, opt.warmup);

  std::vector<Shape> shapes;
  if (!opt.quick) shapes.push_back({8192, 8192, 8192});
  const std::vector<std::pair<int64_t, int64_t>> bert = {{768, 2304}, {768, 768}, {768, 3072},
                                                         {3072, 768}};
  for (int64_t M : {int64_t{4096}, int64_t{1024}, int64_t{128}}) {
    for (const auto& [K, N] : bert) shapes.push_back({M, K, N});
  }
  bench_gemm(shapes, opt);
  bench_linear(shapes, opt);
  bench_quantize(opt);
  return 0;
}
