// CPU INT8 Linear (tquant/gemm.h) against LibTorch's fp32 linear (at::linear, MKL).
// Prints, per shape, the median time of fp32, INT8 static and INT8 dynamic Linear (input
// quantization and output dequantization included), and the ratio fp32 / int8.
//
//   tquant_int8_linear_bench [--reps N] [--warmup N] [--threads N]
//
// Not a test: run it by hand on a quiet machine (docs/backends.md).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "tquant/gemm.h"

#include "bench_util.h"

int main(int argc, char** argv) {
  const tquant::bench::Args a = tquant::bench::parse_args(argc, argv, {20, 3, 2});
  at::set_num_threads(a.threads);
  at::manual_seed(0);

  tquant::bench::print_machine();
  std::printf("threads: %d   reps: %d (median; the four variants timed interleaved)   warmup: %d\n",
              at::get_num_threads(), a.reps, a.warmup);
  std::printf("int8 path: %s\n  (%s)\n", tquant::to_string(tquant::int8_gemm_path()).c_str(),
              tquant::int8_gemm_path_reason().c_str());
  std::printf("fp32 baseline: at::linear (%s)\n\n",
              at::hasMKL() ? "MKL sgemm" : "no MKL in this LibTorch");

  std::printf("median times; 'min' columns: ratios of the fastest repetitions\n");
  std::printf("%6s %6s %6s | %9s %9s %9s | %8s %8s | %9s %9s %9s | %12s | %10s %10s\n", "M", "K",
              "N", "fp32 ms", "static ms", "dyn ms", "x static", "x dyn", "fp32 GF/s", "st GOP/s",
              "dy GOP/s", "int16 st ms", "x st (min)", "x dy (min)");
  const std::vector<int64_t> ms = {128, 1024};
  const std::vector<std::pair<int64_t, int64_t>> kns = {{768, 3072}, {3072, 768}, {768, 768}};
  for (int64_t m : ms) {
    for (auto [k, n] : kns) {
      auto x = at::randn({m, k});
      auto w = at::randn({n, k}) * 0.05;
      auto b = at::randn({n});
      auto weight = tquant::prepare_int8_weight(w);
      const double sx = x.abs().max().item<double>() / 127;
      // tquant's own int16 multiply-add kernel (the path of CPUs without VNNI) on the same
      // data, for comparison (docs/backends.md).
      auto weight_mm = tquant::prepare_int8_weight(w, tquant::Int8GemmPath::kInt16Madd);
      at::Tensor sink;
      const auto t = tquant::bench::median_ms({[&] { sink = at::linear(x, w, b); },
                                [&] { sink = tquant::int8_linear_static(x, sx, weight, b); },
                                [&] { sink = tquant::int8_linear_dynamic(x, weight, b); },
                                [&] { sink = tquant::int8_linear_static(x, sx, weight_mm, b); }},
                               a.reps, a.warmup);
      const double t_fp = t.median[0], t_st = t.median[1], t_dy = t.median[2], t_mm = t.median[3];
      const double ops = 2.0 * m * k * n;
      std::printf(
          "%6lld %6lld %6lld | %9.3f %9.3f %9.3f | %8.2f %8.2f | %9.1f %9.1f %9.1f | "
          "%12.3f | %10.2f %10.2f\n",
          static_cast<long long>(m), static_cast<long long>(k), static_cast<long long>(n), t_fp,
          t_st, t_dy, t_fp / t_st, t_fp / t_dy, ops / t_fp * 1e-6, ops / t_st * 1e-6,
          ops / t_dy * 1e-6, t_mm, t.min[0] / t.min[1], t.min[0] / t.min[2]);
      std::fflush(stdout);
    }
  }
  tquant::bench::print_load_at_end();
  return 0;
}
