#pragma once

#include <ATen/core/Tensor.h>

namespace tquant {

/// LayerNorm of a residual sum over the last dimension, in one pass over memory (ONNX Runtime's
/// SkipLayerNormalization; the "add & norm" of a post-LN transformer block):
///   s = x + residual,  out = (s - mean(s)) / sqrt(var(s) + eps) * weight + bias,
/// mean and the biased variance over the last dimension H, as torch::nn::LayerNorm computes them.
/// x, residual: [..., H] of the same shape and dtype; weight, bias: [H] (undefined = 1 and 0).
/// Float32 contiguous CPU tensors on an AVX-512 CPU run one fused kernel (each row read once
/// from memory and written once); anything else runs add_layer_norm_ref. A NaN or Inf in a
/// row makes that row NaN, as in ATen.
///
/// Example (a BERT output block):
///   at::Tensor y = tquant::add_layer_norm(dense(hidden), input, norm->weight, norm->bias,
///                                         norm->options.eps());
at::Tensor add_layer_norm(const at::Tensor& x, const at::Tensor& residual,
                          const at::Tensor& weight, const at::Tensor& bias, double eps);

/// Reference twin: at::layer_norm(x + residual, {H}, weight, bias, eps).
at::Tensor add_layer_norm_ref(const at::Tensor& x, const at::Tensor& residual,
                              const at::Tensor& weight, const at::Tensor& bias, double eps);

}  // namespace tquant
