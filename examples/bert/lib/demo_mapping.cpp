#include "demo_mapping.h"

#include <c10/util/Exception.h>

#include "tquant/qconfig.h"

namespace bert {

tquant::QConfigMapping demo_int8_mapping(const std::string& prefix, bool float_attention) {
  tquant::QConfigMapping mapping;
  mapping.set_module_name_pattern(prefix + "encoder.*", tquant::int8_static_qconfig());
  // The table is half the parameters; a lookup has no GEMM, so only the weight is quantized.
  mapping.set_module_name(prefix + "embeddings.word_embeddings",
                          tquant::weight_only_int8_qconfig());
  // Keys: int8 with a dynamic scale per token. Their input is a LayerNorm output in which a few
  // tokens carry activations far larger than the rest; one static scale either clips those
  // (the keys decide where attention goes) or rounds everything else coarsely. Measured on 160
  // validation reviews (docs/bert.md): embedding cosine against FP32 0.9867 with static keys,
  // 0.9945 with per-token keys; the query and value inputs matter much less.
  mapping.set_module_name_pattern(prefix + "encoder.layer.*.attention.self.key",
                                  tquant::int8_dynamic_qconfig());
  if (float_attention) mapping.skip(prefix + "encoder.layer.*.attention.self.sdpa");
  return mapping;
}

tquant::QConfigMapping demo_w4a8_mapping(const std::string& prefix, bool float_attention,
                                         int64_t block_size, bool learned_scales) {
  TORCH_CHECK_VALUE(!learned_scales || block_size == 0,
                    "demo_w4a8_mapping: learned scales need per-channel int4 (block_size 0), got "
                    "block_size ", block_size);
  tquant::QConfigMapping mapping = demo_int8_mapping(prefix, float_attention);
  // Added after the INT8 key rule with the same pattern, so it wins the tie (qconfig_mapping.h):
  // the keys are static too, as no converted scheme pairs int4 weights with per-token inputs.
  for (const char* linear : {"attention.self.query", "attention.self.key", "attention.self.value",
                             "attention.output.dense", "intermediate.dense", "output.dense"}) {
    mapping.set_module_name_pattern(prefix + "encoder.layer.*." + linear,
                                    learned_scales ? tquant::w4a8_lsq_qat_qconfig()
                                                   : tquant::w4a8_qconfig(block_size));
  }
  return mapping;
}

}  // namespace bert
