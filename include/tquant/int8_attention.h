#pragma once

// CPU INT8 products of two activations: the fused INT8 attention kernel behind a converted
// QuantAttention, and the batched INT8 product behind a converted QuantMatMul. LibTorch 2.11
// has no batched integer GEMM on CPU (at::_int_mm is 2-D, bmm.dtype is CUDA-only), and oneDNN's
// per-call cost dominates products as small as one attention head, so these run tquant's own
// AVX-512 VNNI kernel (vpdpbusd), one head per task under at::parallel_for
// (docs/backends.md, "INT8 attention on CPU"). Every function has a `_ref` twin of plain ATen
// ops that the tests compare against.
//
// Codes: per-tensor symmetric int8, narrow range, as tquant::quantize rounds them:
//   code(x) = clamp(round(x * (1 / scale)), -127, 127)   (1 / scale in float32, half-to-even)

#include <ATen/core/Tensor.h>

namespace tquant {

/// True when this CPU has AVX-512 VNNI, which the int8_*_cpu kernels need; without it they run
/// their `_ref` twins (exact, slower than float).
bool int8_cpu_kernels_available();

/// Per-tensor scales of the four operands of int8 attention (all > 0).
struct AttentionScales {
  double query = 1.0;
  double key = 1.0;
  double probs = 1.0;
  double value = 1.0;
};

/// Fused INT8 scaled dot-product attention, per batch b and head h (eval: no dropout):
///   scores = (code(q) . code(k)^T) * s_q * s_k * softmax_scale + attn_mask      (exact int32)
///   probs  = softmax(scores, -1)
///   out    = (code(probs) . code(v)) * s_p * s_v                                (exact int32)
/// q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv] (float32, bfloat16 or float16; computed
/// in float32, returned in q's dtype); attn_mask undefined, additive float, or bool (true =
/// attend), broadcastable to [B, H, Lq, Lk]. softmax_scale <= 0 means 1 / sqrt(D).
/// Returns [B, H, Lq, Dv], a view of a contiguous [B, Lq, H, Dv] tensor, so
/// `out.transpose(1, 2).reshape({B, Lq, H * Dv})` merges the heads without a copy.
/// Non-finite input never comes out as a number: a NaN / Inf in a row of q makes that output
/// row NaN; in k or v, the whole head's output NaN (float attention mixes every key into every
/// row). A row whose scores are all -inf (fully masked: it attends to nothing) is 0 in every
/// mode, as LibTorch's SDPA gives on CPU; a NaN or +inf score (e.g. +inf in an additive mask)
/// makes its row NaN. attn_mask must be on the CPU. D must be > 0; other empty dimensions give
/// empty or zero outputs (Lk = 0: no key, output 0). D and Lk are at most kMaxInt8GemmK
/// (tquant/gemm.h). QuantAttention calls it once converted.
///
/// Example:
///   tquant::AttentionScales scales{/*query=*/0.05, /*key=*/0.05, /*probs=*/1.0 / 127,
///                                  /*value=*/0.04};
///   at::Tensor out = tquant::int8_attention_cpu(q, k, v, /*attn_mask=*/{}, scales);
at::Tensor int8_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& attn_mask, const AttentionScales& scales,
                              double softmax_scale = 0.0);

/// Reference twin of int8_attention_cpu: the same formula with ATen ops (codes as floats in a
/// type that sums them exactly: float32 while D, Lk <= 1040, float64 beyond; at::softmax). The kernel's softmax rounds differently (its own exp), so a
/// probability code may differ by one where it lies on a rounding boundary: outputs agree
/// within a few s_p * s_v * max|code(v)| (tests bound it).
at::Tensor int8_attention_ref(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& attn_mask, const AttentionScales& scales,
                              double softmax_scale = 0.0);

/// Batched INT8 product of two activations: a [..., M, K], b [..., K, N] (float32, bfloat16 or
/// float16; batch dimensions broadcast as in at::matmul, both at least 2-D)
///   out = (code(a) . code(b)) * (s_a * s_b)      exact int32 sums, one float32 rounding
/// in a's dtype. A non-finite element of a makes its output row NaN, of b its output column NaN.
///
/// Example:
///   at::Tensor scores = tquant::int8_bmm_cpu(q, k.transpose(-2, -1), s_q, s_k);
at::Tensor int8_bmm_cpu(const at::Tensor& a, const at::Tensor& b, double a_scale,
                        double b_scale);

/// Reference twin of int8_bmm_cpu (codes as float32, or float64 for K > 1040, at::matmul):
/// bit-equal results.
at::Tensor int8_bmm_ref(const at::Tensor& a, const at::Tensor& b, double a_scale,
                        double b_scale);

}  // namespace tquant
