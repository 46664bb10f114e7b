#include "bert_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace bert {
namespace {

using nlohmann::json;

const json* find_field(const json& object, const char* key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

int64_t get_int(const json& object, const char* key, const std::string& what) {
  const json* value = find_field(object, key);
  TORCH_CHECK_VALUE(value != nullptr, what, ": missing field \"", key, "\"");
  TORCH_CHECK_VALUE(value->is_number_integer(), what, ": expected \"", key,
                    "\" to be an integer, got ", value->dump());
  return value->get<int64_t>();
}

double get_number(const json& object, const char* key, const std::string& what) {
  const json* value = find_field(object, key);
  TORCH_CHECK_VALUE(value != nullptr, what, ": missing field \"", key, "\"");
  TORCH_CHECK_VALUE(value->is_number(), what, ": expected \"", key, "\" to be a number, got ",
                    value->dump());
  return value->get<double>();
}

std::string get_string(const json& object, const char* key, const std::string& what) {
  const json* value = find_field(object, key);
  TORCH_CHECK_VALUE(value != nullptr, what, ": missing field \"", key, "\"");
  TORCH_CHECK_VALUE(value->is_string(), what, ": expected \"", key, "\" to be a string, got ",
                    value->dump());
  return value->get<std::string>();
}

}  // namespace

void BertConfig::validate() const {
  const std::pair<const char*, int64_t> sizes[] = {
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"intermediate_size", intermediate_size},
      {"max_position_embeddings", max_position_embeddings},
      {"type_vocab_size", type_vocab_size}};
  for (const auto& [name, value] : sizes) {
    TORCH_CHECK_VALUE(value > 0, "BertConfig: expected ", name, " > 0, got ", value);
  }
  TORCH_CHECK_VALUE(hidden_size % num_attention_heads == 0,
                    "BertConfig: expected hidden_size to be a multiple of num_attention_heads, "
                    "got hidden_size ", hidden_size, " and num_attention_heads ",
                    num_attention_heads);
  TORCH_CHECK_VALUE(layer_norm_eps > 0, "BertConfig: expected layer_norm_eps > 0, got ",
                    layer_norm_eps);
  TORCH_CHECK_VALUE(hidden_dropout_prob >= 0 && hidden_dropout_prob < 1,
                    "BertConfig: expected hidden_dropout_prob in [0, 1), got ",
                    hidden_dropout_prob);
  TORCH_CHECK_VALUE(attention_probs_dropout_prob >= 0 && attention_probs_dropout_prob < 1,
                    "BertConfig: expected attention_probs_dropout_prob in [0, 1), got ",
                    attention_probs_dropout_prob);
  TORCH_CHECK_VALUE(pad_token_id >= 0 && pad_token_id < vocab_size,
                    "BertConfig: expected pad_token_id in [0, vocab_size = ", vocab_size,
                    "), got ", pad_token_id);
  TORCH_CHECK_NOT_IMPLEMENTED(hidden_act == "gelu",
                              "BertConfig: unsupported hidden_act \"", hidden_act,
                              "\" (supported: \"gelu\", the exact erf form)");
  TORCH_CHECK_NOT_IMPLEMENTED(position_embedding_type == "absolute",
                              "BertConfig: unsupported position_embedding_type \"",
                              position_embedding_type, "\" (supported: \"absolute\")");
}

BertConfig parse_bert_config(const std::string& json_text, const std::string& what) {
  json object;
  try {
    object = json::parse(json_text);
  } catch (const json::exception& e) {
    TORCH_CHECK_VALUE(false, what, ": invalid JSON: ", e.what());
  }
  TORCH_CHECK_VALUE(object.is_object(), what, ": expected a JSON object, got ",
                    object.type_name());
  if (const json* model_type = find_field(object, "model_type")) {
    TORCH_CHECK_VALUE(model_type->is_string() && model_type->get<std::string>() == "bert", what,
                      ": expected model_type \"bert\", got ", model_type->dump());
  }
  BertConfig config;
  config.vocab_size = get_int(object, "vocab_size", what);
  config.hidden_size = get_int(object, "hidden_size", what);
  config.num_hidden_layers = get_int(object, "num_hidden_layers", what);
  config.num_attention_heads = get_int(object, "num_attention_heads", what);
  config.intermediate_size = get_int(object, "intermediate_size", what);
  config.max_position_embeddings = get_int(object, "max_position_embeddings", what);
  config.type_vocab_size = get_int(object, "type_vocab_size", what);
  config.layer_norm_eps = get_number(object, "layer_norm_eps", what);
  config.hidden_act = get_string(object, "hidden_act", what);
  // Optional fields take Hugging Face BertConfig's defaults.
  if (find_field(object, "hidden_dropout_prob")) {
    config.hidden_dropout_prob = get_number(object, "hidden_dropout_prob", what);
  }
  if (find_field(object, "attention_probs_dropout_prob")) {
    config.attention_probs_dropout_prob = get_number(object, "attention_probs_dropout_prob", what);
  }
  if (find_field(object, "pad_token_id")) {
    config.pad_token_id = get_int(object, "pad_token_id", what);
  }
  if (find_field(object, "position_embedding_type")) {
    config.position_embedding_type = get_string(object, "position_embedding_type", what);
  }
  try {
    config.validate();
  } catch (const c10::Error& e) {
    TORCH_CHECK_VALUE(false, what, ": ", e.what_without_backtrace());
  }
  return config;
}

BertConfig read_bert_config(const std::string& path) {
  std::filesystem::path file(path);
  if (std::filesystem::is_directory(file)) file /= "config.json";
  std::ifstream in(file, std::ios::binary);
  TORCH_CHECK(in, "read_bert_config: cannot open ", file.string());
  std::ostringstream text;
  text << in.rdbuf();
  return parse_bert_config(text.str(), file.string());
}

}  // namespace bert
