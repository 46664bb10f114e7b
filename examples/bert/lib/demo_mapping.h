#pragma once

#include <cstdint>
#include <string>

#include "tquant/qconfig_mapping.h"

namespace bert {

/// The BERT demo's INT8 mapping (docs/bert.md, step 2) for a model whose BertModel is named
/// `prefix` ("bert." inside BertClassifier, "" for a bare BertModel):
///   <prefix>encoder.*                            int8_static_qconfig(): every encoder
///                                                QuantLinear and QuantAttention;
///   <prefix>embeddings.word_embeddings           weight_only_int8_qconfig();
///   <prefix>encoder.layer.*.attention.self.key   int8_dynamic_qconfig() (one scale per token).
/// With float_attention the QuantAttention of every layer is skipped (stays float).
tquant::QConfigMapping demo_int8_mapping(const std::string& prefix, bool float_attention = false);

/// The W4A8 scenario's mapping: demo_int8_mapping, then every encoder QuantLinear (query, key,
/// value, attention output, FFN in, FFN out) -> tquant::w4a8_qconfig(block_size) (int4
/// weights, one scale per output channel when block_size is 0, static int8 input, the keys
/// included); the attention products and the word embeddings stay as in the INT8 mapping.
/// learned_scales: the encoder QuantLinears get tquant::w4a8_lsq_qat_qconfig() instead (LSQ:
/// learnable per-channel int4 weight scales and input scale; block_size must be 0).
tquant::QConfigMapping demo_w4a8_mapping(const std::string& prefix, bool float_attention = false,
                                         int64_t block_size = 0, bool learned_scales = false);

}  // namespace bert
