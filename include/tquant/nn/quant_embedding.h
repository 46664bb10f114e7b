#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/options/embedding.h>
#include <torch/nn/pimpl.h>

#include "tquant/fake_quantize.h"
#include "tquant/nn/quant_mode.h"
#include "tquant/nn/quantizable.h"
#include "tquant/qconfig.h"

namespace tquant {

class QuantEmbedding;

/// Quantizable twin of torch::nn::Embedding:  y[...] = W[indices[...]].
///
/// Same options (torch::nn::EmbeddingOptions: padding_idx, max_norm, norm_type,
/// scale_grad_by_freq, sparse, _weight), same parameter ("weight" [num_embeddings,
/// embedding_dim]) and the same initialization as LibTorch (normal_(0, 1), then the padding_idx
/// row zeroed; a negative padding_idx is stored as num_embeddings + padding_idx), so a
/// torch::nn::Embedding's parameters or serialized state load into it unchanged.
///
/// Weight-only: the indices are integers, so only the QConfig's weight factory is used and the
/// only child is "weight_quantizer". Its spec should give one scale per row (per-channel
/// along axis 0, as the int8 weight presets do); set_qconfig rejects a per-channel spec along
/// another axis. Per-tensor and per-block specs are accepted. A QConfig without a weight
/// factory leaves the table in floating point.
///
/// Modes, as QuantLinear:
///   kFloat:     F::embedding(indices, W, options), bit for bit torch::nn::Embedding;
///   kObserve:   the same output, while weight_quantizer records the whole table;
///   kFakeQuant: F::embedding(indices, fq_w(W), options), straight-through gradients to W.
/// With max_norm, the looked-up rows of the float table are renormalized in place first (as
/// LibTorch does to its weight), then the table is fake-quantized; a QDQ row may therefore
/// exceed max_norm by up to half a quantization step per element. sparse = true is rejected in
/// fake-quant mode (the fake-quantize gradient is dense).
///
/// kConverted (after convert(), scheme "weight_only" or "weight_only:block=B"): the table is
/// stored as int8 codes "weight_int8" with float32 scales "weight_scale" (one per row, or per
/// block of B columns); forward gathers the rows' codes and dequantizes only those, equal to
/// the kFakeQuant lookup. The float "weight" parameter is removed. max_norm tables are not
/// converted (renormalization rewrites the float table).
///
/// Example:
///   tquant::QuantEmbedding table(torch::nn::EmbeddingOptions(30522, 384));
///   table->set_qconfig(tquant::weight_only_int8_qconfig());
///   table->set_mode(tquant::QuantMode::kObserve);     // or let prepare do both
///   table(token_ids);                                  // the weight quantizer sees the table
///   table->convert();                                  // int8 rows, "weight_only"
///   at::Tensor rows = table(token_ids);
///
/// Indices on the CPU are checked to lie in [0, num_embeddings) with an error naming the
/// module; on other devices the check would synchronize, so the kernel's own check reports.
class QuantEmbeddingImpl : public torch::nn::Cloneable<QuantEmbeddingImpl>, public QuantizableBase {
 public:
  QuantEmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim)
      : QuantEmbeddingImpl(torch::nn::EmbeddingOptions(num_embeddings, embedding_dim)) {}
  explicit QuantEmbeddingImpl(const torch::nn::EmbeddingOptions& options_);

  /// A float-mode QuantEmbedding with the options, training flag and a copy of the table
  /// (same dtype, device and requires_grad) of `embedding`.
  static QuantEmbedding from_float(const torch::nn::Embedding& embedding);

  /// Checks padding_idx as LibTorch does, registers weight and, when a QConfig is set, the
  /// quantizer.
  void reset() override;
  /// torch::nn::Embedding's initialization: normal_(0, 1), padding_idx row zeroed.
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// indices: an integer (kLong or kInt) tensor of any shape; returns [*indices.shape,
  /// embedding_dim].
  at::Tensor forward(const at::Tensor& indices);

  // set_qconfig, qconfig(), set_mode (kObserve and kFakeQuant need a QConfig) and mode()
  // come from QuantizableBase.
  std::string quant_type_name() const override { return "QuantEmbedding"; }

  ConvertResult convert() override;
  std::string converted_scheme() const override { return converted_scheme_; }
  void make_converted(const std::string& scheme) override;

  torch::nn::EmbeddingOptions options;
  /// [num_embeddings, embedding_dim].
  at::Tensor weight;
  /// Quantizer of the table; empty without a QConfig or a weight factory.
  FakeQuantize weight_quantizer{nullptr};
  /// Converted state (kConverted only): int8 codes [num_embeddings, embedding_dim] and float32
  /// scales [num_embeddings] or [num_embeddings, embedding_dim / B].
  at::Tensor weight_int8;
  at::Tensor weight_scale;

 private:
  void install_converted(const std::string& scheme, at::Tensor codes, at::Tensor scale);
  // ---- QuantizableBase hooks ----
  std::string error_name() const override;
  std::vector<FakeQuantize*> quantizers() override { return {&weight_quantizer}; }
  void install_quantizers() override;
  /// A per-channel weight spec must be along axis 0 (embedding rows).
  void check_module_qconfig(const QConfig& qconfig) const override;
  /// kFakeQuant is refused with sparse = true.
  void check_module_mode(QuantMode mode) const override;

  void check_input(const at::Tensor& indices) const;

  std::string converted_scheme_;
};
TORCH_MODULE(QuantEmbedding);

}  // namespace tquant
