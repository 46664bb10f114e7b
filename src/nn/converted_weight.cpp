#include "converted_weight.h"

#include <ATen/ATen.h>

#include "tquant/functional.h"

namespace tquant::detail {

std::optional<WeightCodes> weight_codes(FakeQuantizeImpl& quantizer, const at::Tensor& weight,
                                        std::string* reason) {
  const QuantSpec& spec = quantizer.observer_ref().quant_spec();
  const bool row_scales = spec.granularity() == Granularity::kPerTensor ||
                          (spec.granularity() == Granularity::kPerChannel && spec.axis() == 0);
  const bool block_scales = spec.granularity() == Granularity::kPerBlock && spec.axis() == 1;
  if (!is_integer(spec.dtype()) || !spec.symmetric() || !(row_scales || block_scales) ||
      weight.dim() != 2) {
    *reason = "no integer weight storage for weight spec " + to_string(spec) +
              " (symmetric integer per-tensor, per-channel axis 0 or per-block axis 1 only)";
    return std::nullopt;
  }
  at::NoGradGuard no_grad;
  if (!quantizer.observer_ref().has_data()) quantizer.observer_ref().observe(weight.detach());
  if (!quantizer.qparams().defined() || quantizer.observer_enabled()) quantizer.update_qparams();
  const QParams qparams = quantizer.qparams();
  WeightCodes result;
  result.codes = quantize(weight.detach(), qparams).to(at::kChar).contiguous();
  at::Tensor scale = qparams.scale.detach().to(at::kFloat);
  if (block_scales) {
    result.block = spec.block_size();
    result.scale = scale.reshape({weight.size(0), weight.size(1) / result.block}).contiguous();
  } else {
    result.scale = scale.reshape({-1}).expand({weight.size(0)}).contiguous();
  }
  return result;
}

at::Tensor dequantize_codes(const at::Tensor& codes, const at::Tensor& scale) {
  const at::Tensor real = codes.to(at::kFloat);
  if (scale.dim() == 0) return real * scale;
  if (scale.dim() == 1) return real * scale.unsqueeze(-1);
  const int64_t blocks = scale.size(-1);
  const int64_t cols = codes.size(-1);
  auto shape = codes.sizes().vec();
  shape.back() = blocks;
  shape.push_back(cols / blocks);
  return (real.reshape(shape) * scale.unsqueeze(-1)).reshape(codes.sizes());
}

at::Tensor int8_codes_as_float(const at::Tensor& x, const at::Tensor& scale) {
  const at::Tensor inverse = at::reciprocal(scale.to(x.device(), at::kFloat));
  return (x.to(at::kFloat) * inverse).round_().clamp_(-127, 127);
}

bool is_int8_gemm_spec(const QuantSpec& spec) {
  return spec.dtype() == QuantDtype::kInt8 && spec.symmetric() && spec.narrow_range();
}

std::string format_scheme(const std::string& kind, int64_t block) {
  return block > 0 ? kind + ":block=" + std::to_string(block) : kind;
}

ParsedScheme parse_scheme(const std::string& scheme, std::initializer_list<const char*> kinds,
                          const std::string& what) {
  ParsedScheme parsed;
  const auto colon = scheme.find(':');
  parsed.kind = scheme.substr(0, colon);
  bool known = false;
  std::string expected;
  for (const char* kind : kinds) {
    known = known || parsed.kind == kind;
    expected += expected.empty() ? kind : std::string(", ") + kind;
  }
  TORCH_CHECK_VALUE(known, what, ": unknown converted scheme '", scheme, "' (expected one of ",
                    expected, ")");
  if (colon != std::string::npos) {
    const std::string rest = scheme.substr(colon + 1);
    const std::string prefix = "block=";
    TORCH_CHECK_VALUE(rest.rfind(prefix, 0) == 0 && rest.size() > prefix.size(), what,
                      ": malformed converted scheme '", scheme, "' (expected '",
                      parsed.kind, ":block=<B>')");
    try {
      parsed.block = std::stoll(rest.substr(prefix.size()));
    } catch (const std::exception&) {
      TORCH_CHECK_VALUE(false, what, ": malformed block size in scheme '", scheme, "'");
    }
    TORCH_CHECK_VALUE(parsed.block > 0, what, ": expected a block size > 0 in scheme '",
                      scheme, "'");
  }
  return parsed;
}

WeightCodes placeholder_codes(int64_t rows, int64_t cols, int64_t block, const std::string& what) {
  TORCH_CHECK_VALUE(block == 0 || cols % block == 0, what, ": block size ", block,
                    " does not divide the ", cols, " columns of the weight");
  WeightCodes result;
  result.codes = at::zeros({rows, cols}, at::kChar);
  result.scale = block > 0 ? at::ones({rows, cols / block}) : at::ones({rows});
  result.block = block;
  return result;
}

}  // namespace tquant::detail
