#pragma once

#include <optional>
#include <ostream>
#include <string>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "tquant/fake_quantize.h"
#include "tquant/nn/host_scalar.h"
#include "tquant/nn/quant_mode.h"
#include "tquant/nn/quantizable.h"
#include "tquant/qconfig.h"

namespace tquant {

/// Options of QuantAttention: those of at::scaled_dot_product_attention that a module keeps.
struct QuantAttentionOptions {
  /// Dropout probability on the attention probabilities, applied only while the module is
  /// training (as BERT's attention dropout); 0 disables it.
  TORCH_ARG(double, dropout) = 0.0;
  /// Softmax scale; unset means 1 / sqrt(head_dim), as at::scaled_dot_product_attention.
  TORCH_ARG(std::optional<double>, scale) = std::nullopt;
};

/// Quantizable twin of at::scaled_dot_product_attention (no causal flag):
///   out = softmax(q k^T * scale + attn_mask) v
/// with q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv]; attn_mask undefined, additive float,
/// or bool (true = attend), broadcastable to [B, H, Lq, Lk]; out [B, H, Lq, Dv].
///
/// set_qconfig registers four children built from the QConfig's activation factory (the weight
/// factory is not used): "query_quantizer" (q), "key_quantizer" (k), "probs_quantizer" (the
/// attention probabilities) and "value_quantizer" (v). A weight-only QConfig registers none and
/// every mode runs in float.
///
/// Modes:
///   kFloat:     at::scaled_dot_product_attention (LibTorch's fused CPU / CUDA kernels);
///   kObserve:   the same product written out (matmul, softmax, matmul) while the four
///               quantizers record their operands; equal to kFloat up to float rounding;
///   kFakeQuant: matmul(fq(q), fq(k)^T) * scale + mask, softmax, dropout, fq(probs), matmul
///               with fq(v); straight-through gradients to q, k and v;
///   kConverted: after convert() with static per-tensor int8 narrow symmetric quantizers: the
///               four calibrated scales are kept as buffers "query_scale", "key_scale",
///               "probs_scale", "value_scale", and forward runs tquant::int8_attention_cpu on
///               CPU tensors (one fused AVX-512 VNNI kernel per head: quantize, exact int8
///               products, softmax, dequantize; include/tquant/int8_attention.h) and its exact
///               reference on other devices or CPUs without AVX-512 VNNI. Inference only (no
///               dropout). A NaN or Inf in q makes its output row NaN, in k or v its head NaN.
///
/// Example (BERT-style self-attention, heads split as [B, H, L, head_dim]):
///   tquant::QuantAttention attention(tquant::QuantAttentionOptions().dropout(0.1));
///   at::Tensor context = attention(q, k, v, additive_mask);   // [B, H, L, head_dim]
///   context = context.transpose(1, 2).reshape({B, L, H * head_dim});
class QuantAttentionImpl : public torch::nn::Cloneable<QuantAttentionImpl>, public QuantizableBase {
 public:
  explicit QuantAttentionImpl(QuantAttentionOptions options_ = {});

  /// Registers the quantizers when a QConfig is set (used by clone()).
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  /// The attention as the mode says; see the class comment for shapes.
  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& attn_mask = {});

  // set_qconfig, qconfig(), set_mode (kObserve and kFakeQuant need a QConfig) and mode()
  // come from QuantizableBase.
  std::string quant_type_name() const override { return "QuantAttention"; }

  /// Converts when all four quantizers are static per-tensor int8 narrow symmetric and
  /// calibrated (scheme "int8_static"); otherwise returns the reason and stays as it is.
  ConvertResult convert() override;
  std::string converted_scheme() const override {
    return mode_ == QuantMode::kConverted ? "int8_static" : "";
  }
  void make_converted(const std::string& scheme) override;

  QuantAttentionOptions options;
  FakeQuantize query_quantizer{nullptr};
  FakeQuantize key_quantizer{nullptr};
  FakeQuantize probs_quantizer{nullptr};
  FakeQuantize value_quantizer{nullptr};
  /// Converted state (kConverted only): the per-tensor scales [] of q, k, probs and v.
  at::Tensor query_scale, key_scale, probs_scale, value_scale;

 private:
  // ---- QuantizableBase hooks ----
  std::vector<FakeQuantize*> quantizers() override {
    return {&query_quantizer, &key_quantizer, &probs_quantizer, &value_quantizer};
  }
  void install_quantizers() override;

  void install_converted(const at::Tensor scales[4]);
  at::Tensor quantized_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& attn_mask);
  at::Tensor converted_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& attn_mask) const;
  double softmax_scale(const at::Tensor& q) const;

  /// Host copies of the four scales: forward never waits for the GPU to read them.
  detail::HostScalar scale_host_[4];
};
TORCH_MODULE(QuantAttention);

}  // namespace tquant
