// W4A8 Linear on CPU: converted QuantLinear modules with int4 weights (per output channel, and per
// block of 128 input features) against the same layer converted to INT8 static and against
// LibTorch's FP32 linear (MKL), at the BERT FFN shapes of MiniLM (384 -> 1536 -> 384).
// Prints the median time of each (input quantization and output dequantization included), the
// ratio FP32 / variant, and the same ratio of the fastest repetitions.
//
//   tquant_w4a8_linear_bench [--reps N] [--warmup N] [--threads N]
//
// Not a test: run it by hand on a quiet machine (docs/backends.md, "W4A8").

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <utility>
#include <vector>

#include "tquant/gemm.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/qconfig.h"

#include "bench_util.h"

namespace {

/// A copy of `layer` calibrated on `x` with `qconfig` and converted.
tquant::QuantLinear converted(const tquant::QuantLinear& layer, const tquant::QConfig& qconfig,
                              const at::Tensor& x) {
  auto copy = std::dynamic_pointer_cast<tquant::QuantLinearImpl>(layer->clone());
  copy->set_qconfig(qconfig);
  copy->set_mode(tquant::QuantMode::kObserve);
  copy->forward(x);
  copy->set_mode(tquant::QuantMode::kFakeQuant);
  const tquant::ConvertResult result = copy->convert();
  TORCH_CHECK(result.converted, "w4a8 bench: convert failed: ", result.reason);
  return tquant::QuantLinear(copy);
}

}  // namespace

int main(int argc, char** argv) {
  const tquant::bench::Args a = tquant::bench::parse_args(argc, argv, {20, 3, 2});
  at::set_num_threads(a.threads);
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;

  tquant::bench::print_machine();
  std::printf("threads: %d   reps: %d (median; the variants timed interleaved)   warmup: %d\n",
              at::get_num_threads(), a.reps, a.warmup);
  std::printf("int8 path: %s\n", tquant::to_string(tquant::int8_gemm_path()).c_str());
  std::printf("fp32 baseline: QuantLinear in float mode = at::linear (%s)\n\n",
              at::hasMKL() ? "MKL sgemm" : "no MKL in this LibTorch");

  std::printf("median times; 'min' columns: ratios of the fastest repetitions\n");
  std::printf("%6s %6s %6s | %9s %9s %9s %9s | %8s %8s %10s | %10s %10s %10s\n", "M", "K", "N",
              "fp32 ms", "int8 ms", "w4a8 ms", "w4a8/128", "x int8", "x w4a8", "x w4a8/128",
              "int8 (min)", "w4a8 (min)", "/128 (min)");
  const int64_t m = 1024;
  const std::vector<std::pair<int64_t, int64_t>> kns = {{384, 1536}, {1536, 384}};
  for (auto [k, n] : kns) {
    const at::Tensor x = torch::randn({m, k});
    tquant::QuantLinear fp32(k, n);
    tquant::QuantLinear int8 = converted(fp32, tquant::int8_static_qconfig(), x);
    tquant::QuantLinear w4a8 = converted(fp32, tquant::w4a8_qconfig(), x);
    tquant::QuantLinear w4a8_block = converted(fp32, tquant::w4a8_qconfig(128), x);
    at::Tensor sink;
    const auto t = tquant::bench::median_ms({[&] { sink = fp32(x); }, [&] { sink = int8(x); },
                                             [&] { sink = w4a8(x); },
                                             [&] { sink = w4a8_block(x); }},
                                            a.reps, a.warmup);
    std::printf(
        "%6lld %6lld %6lld | %9.3f %9.3f %9.3f %9.3f | %8.2f %8.2f %10.2f | %10.2f %10.2f %10.2f\n",
        static_cast<long long>(m), static_cast<long long>(k), static_cast<long long>(n),
        t.median[0], t.median[1], t.median[2], t.median[3], t.median[0] / t.median[1],
        t.median[0] / t.median[2], t.median[0] / t.median[3], t.min[0] / t.min[1],
        t.min[0] / t.min[2], t.min[0] / t.min[3]);
    std::fflush(stdout);
  }
  tquant::bench::print_load_at_end();
  return 0;
}
