#pragma once

#include <cstdint>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "bert_config.h"
#include "tquant/nn/quant_embedding.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/nn/quant_attention.h"

namespace bert {

// A BERT encoder (Devlin et al. 2019) built from tquant's quantizable modules, structured and
// named exactly as Hugging Face's BertModel, so that named_parameters() equals the keys of a
// Hugging Face checkpoint (see bert_checkpoint.h) and tquant's passes (prepare, calibrate,
// convert) reach every Linear and the attention products by their names, e.g.
// "encoder.layer.3.attention.self.query" (Hugging Face's) or "encoder.layer.3.attention.self.sdpa"
// (tquant's QuantAttention, which has no parameters).
//
// Inputs everywhere: int64 tensors [B, L] on the model's device. Dropout follows train()/eval().

/// Word + position + token-type embeddings, then LayerNorm and dropout:
///   x = LayerNorm((W_word[input_ids] + W_type[token_type_ids]) + W_pos[0..L-1]).
/// Parameters: word_embeddings, position_embeddings, token_type_embeddings (QuantEmbedding,
/// "weight" each) and LayerNorm.{weight,bias}.
class BertEmbeddingsImpl : public torch::nn::Cloneable<BertEmbeddingsImpl> {
 public:
  explicit BertEmbeddingsImpl(const BertConfig& config);
  void reset() override;

  /// input_ids, token_type_ids: [B, L] -> [B, L, hidden_size]. L <= max_position_embeddings.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& token_type_ids);

  BertConfig config;
  tquant::QuantEmbedding word_embeddings{nullptr};
  tquant::QuantEmbedding position_embeddings{nullptr};
  tquant::QuantEmbedding token_type_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};  // Hugging Face's name
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(BertEmbeddings);

/// Multi-head self-attention, as Hugging Face's eager BertSelfAttention:
///   q, k, v = query(x), key(x), value(x), split into heads [B, heads, L, head_dim];
///   context = sdpa(q, k, v, additive_mask)
///           = dropout(softmax(q k^T / sqrt(head_dim) + additive_mask)) v,
/// heads merged back to [B, L, hidden]. sdpa is a tquant::QuantAttention child: in float mode
/// LibTorch's fused at::scaled_dot_product_attention, and prepare/calibrate/convert quantize
/// its q, k, probabilities and v (converted: one fused INT8 kernel per head on CPU).
class BertSelfAttentionImpl : public torch::nn::Cloneable<BertSelfAttentionImpl> {
 public:
  explicit BertSelfAttentionImpl(const BertConfig& config);
  void reset() override;

  /// hidden: [B, L, hidden]; additive_mask: [B, 1, 1, L] (0 on tokens, a large negative number
  /// on padding; see make_additive_mask) or undefined. Returns the context [B, L, hidden].
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& additive_mask);

  BertConfig config;
  tquant::QuantLinear query{nullptr};
  tquant::QuantLinear key{nullptr};
  tquant::QuantLinear value{nullptr};
  tquant::QuantAttention sdpa{nullptr};
};
TORCH_MODULE(BertSelfAttention);

/// LayerNorm(dropout(dense(hidden)) + input): the projection after attention.
class BertSelfOutputImpl : public torch::nn::Cloneable<BertSelfOutputImpl> {
 public:
  explicit BertSelfOutputImpl(const BertConfig& config);
  void reset() override;
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& input);

  BertConfig config;
  tquant::QuantLinear dense{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(BertSelfOutput);

/// Self-attention and its output projection; children "self" and "output" as in Hugging Face.
class BertAttentionImpl : public torch::nn::Cloneable<BertAttentionImpl> {
 public:
  explicit BertAttentionImpl(const BertConfig& config);
  void reset() override;
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& additive_mask);

  BertConfig config;
  BertSelfAttention self{nullptr};
  BertSelfOutput output{nullptr};
};
TORCH_MODULE(BertAttention);

/// gelu(dense(hidden)), dense: hidden -> intermediate, GELU exact (erf) as hidden_act "gelu".
class BertIntermediateImpl : public torch::nn::Cloneable<BertIntermediateImpl> {
 public:
  explicit BertIntermediateImpl(const BertConfig& config);
  void reset() override;
  at::Tensor forward(const at::Tensor& hidden);

  BertConfig config;
  tquant::QuantLinear dense{nullptr};
};
TORCH_MODULE(BertIntermediate);

/// LayerNorm(dropout(dense(hidden)) + input), dense: intermediate -> hidden.
class BertOutputImpl : public torch::nn::Cloneable<BertOutputImpl> {
 public:
  explicit BertOutputImpl(const BertConfig& config);
  void reset() override;
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& input);

  BertConfig config;
  tquant::QuantLinear dense{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(BertOutput);

/// One transformer block (post-LayerNorm): attention, then the feed-forward network.
class BertLayerImpl : public torch::nn::Cloneable<BertLayerImpl> {
 public:
  explicit BertLayerImpl(const BertConfig& config);
  void reset() override;
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& additive_mask);

  BertConfig config;
  BertAttention attention{nullptr};
  BertIntermediate intermediate{nullptr};
  BertOutput output{nullptr};
};
TORCH_MODULE(BertLayer);

/// num_hidden_layers BertLayers in a ModuleList named "layer" (keys "encoder.layer.N....").
class BertEncoderImpl : public torch::nn::Cloneable<BertEncoderImpl> {
 public:
  explicit BertEncoderImpl(const BertConfig& config);
  void reset() override;
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& additive_mask);

  BertConfig config;
  torch::nn::ModuleList layer{nullptr};
};
TORCH_MODULE(BertEncoder);

/// tanh(dense(hidden[:, 0])): Hugging Face's pooler (the [CLS] vector through a Linear).
class BertPoolerImpl : public torch::nn::Cloneable<BertPoolerImpl> {
 public:
  explicit BertPoolerImpl(const BertConfig& config);
  void reset() override;
  /// hidden: [B, L, hidden] -> [B, hidden].
  at::Tensor forward(const at::Tensor& hidden);

  BertConfig config;
  tquant::QuantLinear dense{nullptr};
};
TORCH_MODULE(BertPooler);

/// The encoder: embeddings, encoder and (when add_pooler, as Hugging Face's default) pooler.
/// Sentence embeddings of all-MiniLM-L6-v2 do not use the pooler: they are
/// mean_pool_normalize(model(ids, types, mask), mask).
///
/// Example:
///   auto config = bert::read_bert_config(model_dir);
///   bert::BertModel model(config, /*add_pooler=*/false);
///   bert::load_bert_checkpoint(*model, model_dir);
///   model->eval();
///   torch::NoGradGuard no_grad;
///   at::Tensor hidden = model(batch.input_ids, batch.token_type_ids, batch.attention_mask);
///   at::Tensor embedding = bert::mean_pool_normalize(hidden, batch.attention_mask);  // [B, 384]
class BertModelImpl : public torch::nn::Cloneable<BertModelImpl> {
 public:
  explicit BertModelImpl(const BertConfig& config, bool add_pooler = true);
  void reset() override;

  /// The last hidden state [B, L, hidden]. input_ids: int64 [B, L]; token_type_ids: [B, L] or
  /// undefined (all type 0); attention_mask: [B, L] of 0/1 or undefined (no padding).
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& token_type_ids = {},
                     const at::Tensor& attention_mask = {});

  /// The pooler's output for a last hidden state; the model must have a pooler.
  at::Tensor pooled(const at::Tensor& hidden);

  BertConfig config;
  bool add_pooler;
  BertEmbeddings embeddings{nullptr};
  BertEncoder encoder{nullptr};
  /// Empty unless add_pooler.
  BertPooler pooler{nullptr};
};
TORCH_MODULE(BertModel);

/// Sentence classifier for fine-tuning: logits = classifier(dropout(mean_pool(bert(...)))),
/// where mean_pool is the masked mean of the last hidden state (not normalized).
/// Children: "bert" (a BertModel without pooler), "dropout", "classifier" (QuantLinear
/// hidden -> num_labels).
///
/// Example:
///   bert::BertClassifier classifier(config, /*num_labels=*/2);
///   bert::load_bert_checkpoint(*classifier, model_dir);   // the encoder; the head stays random
///   auto logits = classifier(ids, types, mask);           // [B, 2]
///   auto loss = torch::nn::functional::cross_entropy(logits, labels);
class BertClassifierImpl : public torch::nn::Cloneable<BertClassifierImpl> {
 public:
  BertClassifierImpl(const BertConfig& config, int64_t num_labels);
  void reset() override;

  /// Logits [B, num_labels]; inputs as BertModel::forward.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& token_type_ids = {},
                     const at::Tensor& attention_mask = {});

  BertConfig config;
  int64_t num_labels;
  BertModel bert{nullptr};
  torch::nn::Dropout dropout{nullptr};
  tquant::QuantLinear classifier{nullptr};
};
TORCH_MODULE(BertClassifier);

/// [B, 1, 1, L] additive attention mask in `dtype`: 0 where attention_mask is 1 and the lowest
/// finite value of dtype where it is 0 (Hugging Face's (1 - mask) * finfo(dtype).min).
at::Tensor make_additive_mask(const at::Tensor& attention_mask, c10::ScalarType dtype);

/// Masked mean over the sequence: sum_l mask[b, l] h[b, l, :] / max(sum_l mask[b, l], 1e-9).
/// hidden: [B, L, H]; attention_mask: [B, L] (0/1, any numeric dtype). Returns [B, H].
at::Tensor mean_pool(const at::Tensor& hidden, const at::Tensor& attention_mask);

/// mean_pool, then L2-normalized rows (eps 1e-12): the sentence embedding of
/// sentence-transformers models such as all-MiniLM-L6-v2 (Pooling(mean) then Normalize).
///
/// Example:
///   at::Tensor e = bert::mean_pool_normalize(model(ids, types, mask), mask);   // [B, 384]
///   at::Tensor similarity = e.matmul(e.t());                                 // cosines
at::Tensor mean_pool_normalize(const at::Tensor& hidden, const at::Tensor& attention_mask);

}  // namespace bert
