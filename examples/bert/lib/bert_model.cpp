#include "bert_model.h"

#include <cmath>
#include <limits>

#include <ATen/Dispatch.h>
#include <torch/nn/functional/normalization.h>

#include "tquant/add_layer_norm.h"

namespace bert {
namespace {

namespace nn = torch::nn;

nn::LayerNorm make_layer_norm(const BertConfig& config) {
  return nn::LayerNorm(
      nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps));
}

// LayerNorm(x + residual) in one fused pass (Hugging Face's BertSelfOutput / BertOutput).
at::Tensor add_and_norm(const at::Tensor& x, const at::Tensor& residual, nn::LayerNorm& norm) {
  return tquant::add_layer_norm(x, residual, norm->weight, norm->bias, norm->options.eps());
}

tquant::QuantLinear make_linear(int64_t in_features, int64_t out_features) {
  return tquant::QuantLinear(nn::LinearOptions(in_features, out_features));
}

void check_ids(const at::Tensor& tensor, const char* name, at::IntArrayRef sizes) {
  TORCH_CHECK_VALUE(tensor.sizes() == sizes, "BertModel: expected ", name, " of shape ", sizes,
                    " (that of input_ids), got ", tensor.sizes());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
BertEmbeddingsImpl::BertEmbeddingsImpl(const BertConfig& config_) : config(config_) { reset(); }

void BertEmbeddingsImpl::reset() {
  config.validate();
  const int64_t hidden = config.hidden_size;
  word_embeddings = register_module(
      "word_embeddings",
      tquant::QuantEmbedding(
          nn::EmbeddingOptions(config.vocab_size, hidden).padding_idx(config.pad_token_id)));
  position_embeddings = register_module(
      "position_embeddings", tquant::QuantEmbedding(config.max_position_embeddings, hidden));
  token_type_embeddings = register_module(
      "token_type_embeddings", tquant::QuantEmbedding(config.type_vocab_size, hidden));
  LayerNorm = register_module("LayerNorm", make_layer_norm(config));
  dropout = register_module("dropout", nn::Dropout(config.hidden_dropout_prob));
}

at::Tensor BertEmbeddingsImpl::forward(const at::Tensor& input_ids,
                                       const at::Tensor& token_type_ids) {
  const int64_t length = input_ids.size(-1);
  TORCH_CHECK_VALUE(length <= config.max_position_embeddings,
                    "BertEmbeddings: expected at most max_position_embeddings = ",
                    config.max_position_embeddings, " tokens, got ", length);
  at::Tensor types = token_type_ids.defined() ? token_type_ids : at::zeros_like(input_ids);
  at::Tensor positions =
      at::arange(length, at::TensorOptions().dtype(at::kLong).device(input_ids.device()));
  // Hugging Face's order of the sums: (word + token type) + position; [L, H] broadcasts.
  at::Tensor x = word_embeddings(input_ids) + token_type_embeddings(types);
  x.add_(position_embeddings(positions));
  return dropout(LayerNorm(x));
}

// ---------------------------------------------------------------------------------------------
BertSelfAttentionImpl::BertSelfAttentionImpl(const BertConfig& config_) : config(config_) {
  reset();
}

void BertSelfAttentionImpl::reset() {
  config.validate();
  const int64_t hidden = config.hidden_size;
  query = register_module("query", make_linear(hidden, hidden));
  key = register_module("key", make_linear(hidden, hidden));
  value = register_module("value", make_linear(hidden, hidden));
  sdpa = register_module(
      "sdpa", tquant::QuantAttention(
                  tquant::QuantAttentionOptions().dropout(config.attention_probs_dropout_prob)));
}

at::Tensor BertSelfAttentionImpl::forward(const at::Tensor& hidden,
                                          const at::Tensor& additive_mask) {
  const int64_t batch = hidden.size(0);
  const int64_t length = hidden.size(1);
  const int64_t heads = config.num_attention_heads;
  const int64_t head_dim = config.head_dim();
  // [B, L, hidden] -> [B, heads, L, head_dim] as a view (no copy).
  auto split_heads = [&](const at::Tensor& x) {
    return x.view({batch, length, heads, head_dim}).transpose(1, 2);
  };
  const at::Tensor q = split_heads(query(hidden));
  const at::Tensor k = split_heads(key(hidden));
  const at::Tensor v = split_heads(value(hidden));
  const at::Tensor context = sdpa(q, k, v, additive_mask);  // [B, heads, L, head_dim]
  return context.transpose(1, 2).reshape({batch, length, config.hidden_size});
}

// ---------------------------------------------------------------------------------------------
BertSelfOutputImpl::BertSelfOutputImpl(const BertConfig& config_) : config(config_) { reset(); }

void BertSelfOutputImpl::reset() {
  dense = register_module("dense", make_linear(config.hidden_size, config.hidden_size));
  LayerNorm = register_module("LayerNorm", make_layer_norm(config));
  dropout = register_module("dropout", nn::Dropout(config.hidden_dropout_prob));
}

at::Tensor BertSelfOutputImpl::forward(const at::Tensor& hidden, const at::Tensor& input) {
  return add_and_norm(dropout(dense(hidden)), input, LayerNorm);
}

// ---------------------------------------------------------------------------------------------
BertAttentionImpl::BertAttentionImpl(const BertConfig& config_) : config(config_) { reset(); }

void BertAttentionImpl::reset() {
  self = register_module("self", BertSelfAttention(config));
  output = register_module("output", BertSelfOutput(config));
}

at::Tensor BertAttentionImpl::forward(const at::Tensor& hidden, const at::Tensor& additive_mask) {
  return output(self(hidden, additive_mask), hidden);
}

// ---------------------------------------------------------------------------------------------
BertIntermediateImpl::BertIntermediateImpl(const BertConfig& config_) : config(config_) {
  reset();
}

void BertIntermediateImpl::reset() {
  config.validate();
  dense = register_module("dense", make_linear(config.hidden_size, config.intermediate_size));
  // GELU (exact: x * Phi(x), Hugging Face's "gelu") belongs to dense, so that the converted
  // INT8 GEMM applies it in its epilogue.
  dense->set_fused_gelu(true);
}

at::Tensor BertIntermediateImpl::forward(const at::Tensor& hidden) { return dense(hidden); }

// ---------------------------------------------------------------------------------------------
BertOutputImpl::BertOutputImpl(const BertConfig& config_) : config(config_) { reset(); }

void BertOutputImpl::reset() {
  dense = register_module("dense", make_linear(config.intermediate_size, config.hidden_size));
  LayerNorm = register_module("LayerNorm", make_layer_norm(config));
  dropout = register_module("dropout", nn::Dropout(config.hidden_dropout_prob));
}

at::Tensor BertOutputImpl::forward(const at::Tensor& hidden, const at::Tensor& input) {
  return add_and_norm(dropout(dense(hidden)), input, LayerNorm);
}

// ---------------------------------------------------------------------------------------------
BertLayerImpl::BertLayerImpl(const BertConfig& config_) : config(config_) { reset(); }

void BertLayerImpl::reset() {
  attention = register_module("attention", BertAttention(config));
  intermediate = register_module("intermediate", BertIntermediate(config));
  output = register_module("output", BertOutput(config));
}

at::Tensor BertLayerImpl::forward(const at::Tensor& hidden, const at::Tensor& additive_mask) {
  const at::Tensor attended = attention(hidden, additive_mask);
  return output(intermediate(attended), attended);
}

// ---------------------------------------------------------------------------------------------
BertEncoderImpl::BertEncoderImpl(const BertConfig& config_) : config(config_) { reset(); }

void BertEncoderImpl::reset() {
  config.validate();
  layer = register_module("layer", nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) layer->push_back(BertLayer(config));
}

at::Tensor BertEncoderImpl::forward(const at::Tensor& hidden, const at::Tensor& additive_mask) {
  at::Tensor x = hidden;
  for (const auto& block : *layer) x = block->as<BertLayerImpl>()->forward(x, additive_mask);
  return x;
}

// ---------------------------------------------------------------------------------------------
BertPoolerImpl::BertPoolerImpl(const BertConfig& config_) : config(config_) { reset(); }

void BertPoolerImpl::reset() {
  dense = register_module("dense", make_linear(config.hidden_size, config.hidden_size));
}

at::Tensor BertPoolerImpl::forward(const at::Tensor& hidden) {
  return at::tanh(dense(hidden.select(1, 0)));
}

// ---------------------------------------------------------------------------------------------
BertModelImpl::BertModelImpl(const BertConfig& config_, bool add_pooler_)
    : config(config_), add_pooler(add_pooler_) {
  reset();
}

void BertModelImpl::reset() {
  config.validate();
  embeddings = register_module("embeddings", BertEmbeddings(config));
  encoder = register_module("encoder", BertEncoder(config));
  if (add_pooler) pooler = register_module("pooler", BertPooler(config));
}

at::Tensor BertModelImpl::forward(const at::Tensor& input_ids, const at::Tensor& token_type_ids,
                                  const at::Tensor& attention_mask) {
  TORCH_CHECK_VALUE(input_ids.defined() && input_ids.dim() == 2 && input_ids.size(1) > 0,
                    "BertModel: expected input_ids of shape [batch, length >= 1], got ",
                    input_ids.defined() ? input_ids.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(input_ids.scalar_type() == at::kLong || input_ids.scalar_type() == at::kInt,
                    "BertModel: expected int64 or int32 input_ids, got ",
                    input_ids.scalar_type());
  if (token_type_ids.defined()) check_ids(token_type_ids, "token_type_ids", input_ids.sizes());
  if (attention_mask.defined()) check_ids(attention_mask, "attention_mask", input_ids.sizes());

  at::Tensor hidden = embeddings(input_ids, token_type_ids);
  const at::Tensor additive_mask = attention_mask.defined()
                                       ? make_additive_mask(attention_mask, hidden.scalar_type())
                                       : at::Tensor();
  return encoder(hidden, additive_mask);
}

at::Tensor BertModelImpl::pooled(const at::Tensor& hidden) {
  TORCH_CHECK(!pooler.is_empty(), "BertModel: pooled() needs a model built with add_pooler");
  return pooler(hidden);
}

// ---------------------------------------------------------------------------------------------
BertClassifierImpl::BertClassifierImpl(const BertConfig& config_, int64_t num_labels_)
    : config(config_), num_labels(num_labels_) {
  reset();
}

void BertClassifierImpl::reset() {
  TORCH_CHECK_VALUE(num_labels > 0, "BertClassifier: expected num_labels > 0, got ", num_labels);
  bert = register_module("bert", BertModel(config, /*add_pooler=*/false));
  dropout = register_module("dropout", nn::Dropout(config.hidden_dropout_prob));
  classifier = register_module("classifier", make_linear(config.hidden_size, num_labels));
}

at::Tensor BertClassifierImpl::forward(const at::Tensor& input_ids,
                                       const at::Tensor& token_type_ids,
                                       const at::Tensor& attention_mask) {
  const at::Tensor hidden = bert(input_ids, token_type_ids, attention_mask);
  const at::Tensor pooled =
      attention_mask.defined() ? mean_pool(hidden, attention_mask) : hidden.mean(1);
  return classifier(dropout(pooled));
}

// ---------------------------------------------------------------------------------------------
at::Tensor make_additive_mask(const at::Tensor& attention_mask, c10::ScalarType dtype) {
  TORCH_CHECK_VALUE(attention_mask.dim() == 2, "make_additive_mask: expected attention_mask of "
                    "shape [batch, length], got ", attention_mask.sizes());
  const double lowest = AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, dtype, "make_additive_mask",
      [] { return static_cast<double>(std::numeric_limits<scalar_t>::lowest()); });
  const at::Tensor keep = attention_mask.to(dtype);
  return (1 - keep).mul_(lowest).view({attention_mask.size(0), 1, 1, attention_mask.size(1)});
}

at::Tensor mean_pool(const at::Tensor& hidden, const at::Tensor& attention_mask) {
  TORCH_CHECK_VALUE(hidden.dim() == 3 && attention_mask.dim() == 2 &&
                        attention_mask.size(0) == hidden.size(0) &&
                        attention_mask.size(1) == hidden.size(1),
                    "mean_pool: expected hidden [B, L, H] and attention_mask [B, L], got ",
                    hidden.sizes(), " and ", attention_mask.sizes());
  const at::Tensor weights = attention_mask.to(hidden.scalar_type()).unsqueeze(1);  // [B, 1, L]
  const at::Tensor summed = at::bmm(weights, hidden).squeeze(1);                  // [B, H]
  return summed / weights.sum(-1).clamp_min(1e-9);
}

at::Tensor mean_pool_normalize(const at::Tensor& hidden, const at::Tensor& attention_mask) {
  namespace F = torch::nn::functional;
  return F::normalize(mean_pool(hidden, attention_mask),
                      F::NormalizeFuncOptions().p(2).dim(1).eps(1e-12));
}

}  // namespace bert
