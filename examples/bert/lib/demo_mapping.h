#pragma once

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

}  // namespace bert
