#include "demo_mapping.h"

#include "tquant/observer.h"
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

tquant::QConfig w4a8_per_tensor_qconfig(bool learned) {
  const auto spec = tquant::QuantSpec(tquant::QuantDtype::kInt4)
                        .symmetric(true)
                        .narrow_range(true)
                        .granularity(tquant::Granularity::kPerTensor);
  tquant::FakeQuantizeOptions weight(tquant::observer_factory<tquant::MinMaxObserver>(
      tquant::MinMaxObserverOptions(spec)));
  if (learned) weight.learnable(tquant::LearnableScaleOptions());
  tquant::QConfig qconfig = learned ? tquant::w4a8_learnable_qat_qconfig() : tquant::w4a8_qconfig();
  qconfig.weight = tquant::fake_quantize_factory(weight);
  return qconfig;
}

tquant::QConfigMapping demo_w4a8_mapping(const std::string& prefix, bool float_attention,
                                         bool learned_scales) {
  tquant::QConfigMapping mapping = demo_int8_mapping(prefix, float_attention);
  // Added after the INT8 key rule with the same pattern, so it wins the tie (qconfig_mapping.h).
  const tquant::QConfig per_channel =
      learned_scales ? tquant::w4a8_learnable_qat_qconfig() : tquant::w4a8_qconfig();
  for (const char* linear : {"attention.self.query", "attention.self.key", "attention.self.value",
                             "attention.output.dense", "output.dense"}) {
    mapping.set_module_name_pattern(prefix + "encoder.layer.*." + linear, per_channel);
  }
  mapping.set_module_name_pattern(prefix + "encoder.layer.*.intermediate.dense",
                                  w4a8_per_tensor_qconfig(learned_scales));
  return mapping;
}

}  // namespace bert
