#pragma once

#include <cstdint>
#include <string>

namespace bert {

/// Hyper-parameters of a BERT encoder, named as in Hugging Face's BertConfig (config.json).
/// The defaults are those of all-MiniLM-L6-v2; `read_bert_config` fills every field from a
/// config.json.
struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 384;
  int64_t num_hidden_layers = 6;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 1536;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  int64_t pad_token_id = 0;
  /// Only "gelu" (exact, erf-based: x * Phi(x)) is supported.
  std::string hidden_act = "gelu";
  /// Only "absolute" (learned position embeddings) is supported.
  std::string position_embedding_type = "absolute";

  /// hidden_size / num_attention_heads.
  int64_t head_dim() const { return hidden_size / num_attention_heads; }

  /// Checks that sizes are positive, hidden_size is a multiple of num_attention_heads, dropout
  /// probabilities lie in [0, 1) and hidden_act / position_embedding_type are supported;
  /// errors name the field and its value.
  void validate() const;
};

/// Parses a Hugging Face config.json text (`what` names it in errors). Required: vocab_size,
/// hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
/// max_position_embeddings, type_vocab_size, layer_norm_eps, hidden_act. Optional, with Hugging
/// Face's defaults: hidden_dropout_prob and attention_probs_dropout_prob (0.1), pad_token_id
/// (0), position_embedding_type ("absolute"); model_type, when present, must be "bert". A
/// missing or mistyped field is an error naming it; the result is validated.
///
/// Example:
///   bert::BertConfig config = bert::parse_bert_config(R"({"vocab_size": 30522, ...})", "inline");
BertConfig parse_bert_config(const std::string& json_text, const std::string& what);

/// Reads `path`: a config.json, or a model directory that holds one.
///
/// Example:
///   bert::BertConfig config = bert::read_bert_config("/models/all-MiniLM-L6-v2");
///   bert::BertModel model(config);
BertConfig read_bert_config(const std::string& path);

}  // namespace bert
