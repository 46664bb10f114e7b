// convert and quantize_dynamic (include/tquant/quantize.h).
#include <string>

#include "tquant/gemm.h"
#include "tquant/int8_attention.h"
#include "tquant/nn/quantizable.h"
#include "tquant/qconfig.h"
#include "tquant/quantize.h"
#include "error_context.h"
#include "module_walk.h"

namespace tquant {

namespace {

/// How a converted module computes on CPU, for the report.
std::string backend_of(const std::string& type, const std::string& scheme) {
  if (scheme.rfind("weight_only", 0) == 0) {
    return type == "QuantEmbedding" ? "int codes, rows dequantized per lookup"
                                    : "int codes dequantized per call + float GEMM";
  }
  if (type == "QuantMatMul" || type == "QuantAttention") {
    const std::string what = type == "QuantMatMul" ? "batched int8 product" : "fused int8 attention";
    return int8_cpu_kernels_available()
               ? what + " (AVX-512 VNNI kernel, one head per task)"
               : what + " as its exact reference (no AVX-512 VNNI for tquant's kernels here: "
                        "float GEMMs of the int8 codes, whose sums are exact)";
  }
  if (type == "QuantConv2d") {
    const std::string relu = scheme == "int8_static+relu" ? ", ReLU fused" : "";
    return detail::onednn_int8_sums_exact()
               ? "oneDNN int8 convolution" + relu + " (qconv2d_pointwise)"
               : "float convolution of the int8 codes" + relu +
                     " (exact sums; oneDNN's int8 kernels would saturate on this CPU)";
  }
  const std::string gemm = "int8 GEMM (" + to_string(int8_gemm_path()) + ")";
  // W4A8: the packed int4 codes are unpacked to int8 once, at convert / load.
  const std::string per_block = "w4a8:block=";
  if (scheme.rfind(per_block, 0) == 0) {
    return "one " + gemm + " per block of " + scheme.substr(per_block.size()) +
           " inputs on the int4 codes, the blocks summed in float";
  }
  if (scheme == "w4a8") return gemm + " on the int4 codes";
  return gemm;
}

/// convert's precondition: every static activation quantizer of a module about to be
/// converted has seen data, so no module is converted with a made-up scale.
void check_calibrated(const std::string& name, torch::nn::Module& module) {
  for (const auto& [quantizer_name, quantizer] : detail::quantizers_of(module)) {
    if (quantizer_name == "weight_quantizer" || quantizer->options.dynamic()) continue;
    TORCH_CHECK_VALUE(quantizer->observer_ref().has_data() || quantizer->qparams().defined(),
                      "convert: ", detail::join_name(name, quantizer_name),
                      " has seen no data, so it has no scale; run tquant::calibrate before "
                      "convert, or switch the module off with enable_quantizers");
  }
}

}  // namespace

ConvertReport convert(torch::nn::Module& model) {
  const auto modules = detail::quantizable_modules(model);
  bool any_prepared = false;
  for (const auto& [name, module] : modules) {
    Quantizable& quantizable = *as_quantizable(*module);
    if (!quantizable.qconfig() && quantizable.mode() != QuantMode::kConverted) continue;
    any_prepared = true;
    if (quantizable.mode() == QuantMode::kObserve ||
        quantizable.mode() == QuantMode::kFakeQuant) {
      check_calibrated(name, *module);
    }
  }
  detail::name_quantizers(model);
  TORCH_CHECK_VALUE(any_prepared, "convert: expected a prepared model (tquant modules with a "
                    "QConfig), got none; call tquant::prepare and tquant::calibrate first");

  ConvertReport report;
  for (const auto& [name, module] : modules) {
    Quantizable& quantizable = *as_quantizable(*module);
    if (!quantizable.qconfig() && quantizable.mode() != QuantMode::kConverted) continue;
    const std::string type = quantizable.quant_type_name();
    if (quantizable.mode() == QuantMode::kFloat) {
      report.unconverted.push_back({name, type, QuantMode::kFloat,
                                    "disabled (float mode): enable_quantizers(..., false) or "
                                    "not calibrated"});
      continue;
    }
    if (quantizable.mode() == QuantMode::kConverted) {
      const std::string scheme = quantizable.converted_scheme();
      report.already_converted.push_back({name, type, scheme, backend_of(type, scheme)});
      continue;
    }
    const ConvertResult result =
        detail::named_errors(name.empty() ? "<root>" : name, [&] { return quantizable.convert(); });
    if (result.converted) {
      report.converted.push_back({name, type, result.scheme, backend_of(type, result.scheme)});
    } else {
      report.unconverted.push_back({name, type, quantizable.mode(), result.reason});
    }
  }
  return report;
}

ConvertReport quantize_dynamic(torch::nn::Module& model) {
  return quantize_dynamic(model,
                          QConfigMapping().set_module_type("QuantLinear", int8_dynamic_qconfig()));
}

ConvertReport quantize_dynamic(torch::nn::Module& model, const QConfigMapping& mapping) {
  PrepareReport prepared = prepare(model, mapping);
  ConvertReport report = convert(model);
  report.left_float = std::move(prepared.left_float);
  return report;
}

}  // namespace tquant
