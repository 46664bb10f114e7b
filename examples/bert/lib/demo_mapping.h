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

/// The W4A8 scenario's mapping (docs/bert.md, "Why this W4A8 setting"): demo_int8_mapping, then
/// every encoder QuantLinear gets int4 weights (symmetric, -7..7) with a static int8 input:
///   query, key, value, attention output, FFN out   tquant::w4a8_qconfig(): one int4 scale per
///                                                  output channel;
///   FFN in (intermediate.dense)                    one int4 scale for the whole weight
///                                                  (w4a8_per_tensor_qconfig).
/// The keys are static too (no converted scheme pairs int4 weights with per-token inputs); the
/// attention products and the word embeddings stay as in the INT8 mapping.
/// learned_scales: the same formats with learned scales (LSQ) for QAT:
/// tquant::w4a8_learnable_qat_qconfig() and w4a8_per_tensor_qconfig(true).
tquant::QConfigMapping demo_w4a8_mapping(const std::string& prefix, bool float_attention = false,
                                         bool learned_scales = false);

/// W4A8 with one int4 weight scale per tensor: the input exactly as tquant::w4a8_qconfig()
/// (or, learned, as tquant::w4a8_learnable_qat_qconfig()), the weight through a MinMaxObserver with
/// an int4 narrow symmetric per-tensor spec (scale = max |W| / 7), learnable when `learned`.
/// Converts to the scheme "w4a8" like the per-channel preset.
tquant::QConfig w4a8_per_tensor_qconfig(bool learned = false);

}  // namespace bert
