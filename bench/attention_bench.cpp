// CPU attention at BERT shapes: the converted INT8 products (tquant/int8_attention.h) against
// the float products they replace, timed interleaved in one run. Prints median ms and ratios:
//   scores  q k^T:     float at::matmul            vs  int8_bmm_cpu (quantize + product + scale)
//   context probs v:   float at::matmul            vs  int8_bmm_cpu
//   attention:         float matmul-softmax-matmul, at::scaled_dot_product_attention (fused)
//                      vs  int8_attention_cpu (fused INT8 kernel)
//
//   tquant_attention_bench [--reps N] [--warmup N] [--threads N]
//
// Not a test: run it by hand on a quiet machine (docs/backends.md, "INT8 attention on CPU").

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tquant/int8_attention.h"

#include "bench_util.h"

namespace {

struct Shape {
  int64_t batch, heads, length, head_dim;
};

void bench_shape(const Shape& s, const tquant::bench::Args& a) {
  const at::Tensor q = at::randn({s.batch, s.length, s.heads, s.head_dim}).transpose(1, 2);
  const at::Tensor k = at::randn({s.batch, s.length, s.heads, s.head_dim}).transpose(1, 2);
  const at::Tensor v = at::randn({s.batch, s.length, s.heads, s.head_dim}).transpose(1, 2);
  // BERT's padding mask: the last quarter of the second sequence is padding.
  at::Tensor mask = at::zeros({s.batch, 1, 1, s.length});
  if (s.batch > 1) mask[1].narrow(-1, s.length * 3 / 4, s.length / 4).fill_(-1e30);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  tquant::AttentionScales scales;
  scales.query = q.abs().max().item<double>() / 127;
  scales.key = k.abs().max().item<double>() / 127;
  scales.probs = 1.0 / 127;
  scales.value = v.abs().max().item<double>() / 127;
  const at::Tensor probs = at::softmax(at::matmul(q, k.transpose(-2, -1)) * scale + mask, -1);

  at::Tensor sink;
  const auto t = tquant::bench::median_ms(
      {[&] { sink = at::matmul(q, k.transpose(-2, -1)); },
       [&] { sink = tquant::int8_bmm_cpu(q, k.transpose(-2, -1), scales.query, scales.key); },
       [&] { sink = at::matmul(probs, v); },
       [&] { sink = tquant::int8_bmm_cpu(probs, v, scales.probs, scales.value); },
       [&] {
         sink = at::matmul(at::softmax(at::matmul(q, k.transpose(-2, -1)).mul_(scale).add_(mask),
                                       -1),
                           v);
       },
       [&] { sink = at::scaled_dot_product_attention(q, k, v, mask); },
       [&] { sink = tquant::int8_attention_cpu(q, k, v, mask, scales); }},
      a.reps, a.warmup);
  std::printf(
      "%5lld %5lld %5lld %5lld | %8.2f %8.2f %6.2fx | %8.2f %8.2f %6.2fx | %8.2f %8.2f %8.2f "
      "%6.2fx %6.2fx\n",
      static_cast<long long>(s.batch), static_cast<long long>(s.heads),
      static_cast<long long>(s.length), static_cast<long long>(s.head_dim), t.median[0],
      t.median[1], t.median[0] / t.median[1], t.median[2], t.median[3], t.median[2] / t.median[3],
      t.median[4], t.median[5], t.median[6], t.median[4] / t.median[6], t.median[5] / t.median[6]);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const tquant::bench::Args a = tquant::bench::parse_args(argc, argv, {15, 3, 2});
  at::set_num_threads(a.threads);
  at::manual_seed(0);
  tquant::bench::print_machine();
  std::printf("threads: %d   reps: %d (median, all variants interleaved)   warmup: %d\n",
              at::get_num_threads(), a.reps, a.warmup);
  std::printf("int8 kernels: %s\n\n", tquant::int8_cpu_kernels_available()
                                          ? "AVX-512 VNNI"
                                          : "reference twins (no AVX-512 VNNI)");
  std::printf("%5s %5s %5s %5s | %8s %8s %7s | %8s %8s %7s | %8s %8s %8s %7s %7s\n", "B", "H",
              "L", "D", "qk f32", "qk int8", "x", "pv f32", "pv int8", "x", "attn f32", "sdpa",
              "int8", "x f32", "x sdpa");
  for (const Shape& s : std::vector<Shape>{{32, 12, 128, 32}, {1, 12, 128, 32}, {32, 12, 128, 64},
                                           {1, 12, 128, 64}}) {
    bench_shape(s, a);
  }
  std::printf("\nload average (1 min) at end: %s\n", tquant::bench::load_average().c_str());
  return 0;
}
