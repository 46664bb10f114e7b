#include "tquant/nn/quant_linear.h"

#include <cmath>
#include <string>
#include <utility>

#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>
#include <torch/utils.h>

#include "tquant/int4_pack.h"

#include "converted_weight.h"
#include "linear_int8_gemm.h"
#include "quant_module_detail.h"

namespace tquant {

namespace {

namespace F = torch::nn::functional;

std::string module_name(const torch::nn::LinearOptions& options) {
  return "QuantLinear(in_features=" + std::to_string(options.in_features()) +
         ", out_features=" + std::to_string(options.out_features()) + ")";
}

using detail::LinearScheme;

/// Scheme kinds as converted_scheme() spells them (before an optional ":block=B").
constexpr std::pair<LinearScheme, const char*> kSchemeNames[] = {
    {LinearScheme::kInt8Static, "int8_static"},
    {LinearScheme::kInt8Dynamic, "int8_dynamic"},
    {LinearScheme::kWeightOnly, "weight_only"},
    {LinearScheme::kW4A8, "w4a8"}};

std::string scheme_name(LinearScheme kind) {
  for (const auto& [k, name] : kSchemeNames) {
    if (k == kind) return name;
  }
  TORCH_INTERNAL_ASSERT(false, "QuantLinear: no name for converted scheme ",
                        static_cast<int>(kind));
}

LinearScheme scheme_kind(const std::string& name) {
  for (const auto& [kind, n] : kSchemeNames) {
    if (name == n) return kind;
  }
  TORCH_INTERNAL_ASSERT(false, "QuantLinear: unknown converted scheme kind '", name, "'");
}

/// The int4 weights W4A8 stores packed: symmetric, narrow range (codes in [-7, 7]).
bool is_int4_gemm_weight_spec(const QuantSpec& spec) {
  return spec.dtype() == QuantDtype::kInt4 && spec.symmetric() && spec.narrow_range();
}

}  // namespace

QuantLinearImpl::QuantLinearImpl(const torch::nn::LinearOptions& options_) : options(options_) {
  // NOLINTNEXTLINE(clang-analyzer-optin.cplusplus.VirtualCall): as torch::nn::LinearImpl.
  QuantLinearImpl::reset();
}

QuantLinear QuantLinearImpl::from_float(const torch::nn::Linear& linear) {
  TORCH_CHECK_VALUE(!linear.is_empty(),
                    "QuantLinear::from_float: expected a torch::nn::Linear, got an empty holder");
  QuantLinear result(linear->options);
  torch::NoGradGuard no_grad;
  result->weight.set_data(linear->weight.detach().clone());
  result->weight.set_requires_grad(linear->weight.requires_grad());
  if (linear->bias.defined()) {
    result->bias.set_data(linear->bias.detach().clone());
    result->bias.set_requires_grad(linear->bias.requires_grad());
  }
  result->train(linear->is_training());
  return result;
}

void QuantLinearImpl::reset() {
  // Registration exactly as torch::nn::LinearImpl::reset, so parameter names, order and the
  // undefined bias match.
  if (mode_ != QuantMode::kConverted) {
    weight = register_parameter("weight",
                                torch::empty({options.out_features(), options.in_features()}));
  }
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty(options.out_features()));
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  // SmoothQuant: clone() registers the factors again (Cloneable then copies their values).
  if (smooth_factor.defined()) {
    smooth_factor = register_buffer("smooth_factor", smooth_factor.clone());
  }
  if (mode_ == QuantMode::kConverted) {  // clone() of a converted module: its layout again
    make_converted(converted_scheme_);
    return;
  }
  reset_parameters();
  restore_quantizers();
}

void QuantLinearImpl::reset_parameters() {
  // torch::nn::LinearImpl::reset_parameters (and Python's nn.Linear).
  detail::reset_weight_and_bias(weight, bias);
}

void QuantLinearImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "tquant::QuantLinear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << options.bias()
         << ", mode=" << to_string(mode_) << ")";
}

std::string QuantLinearImpl::error_name() const { return module_name(options); }

void QuantLinearImpl::install_quantizers() {
  const auto device = weight.device();
  const auto what = module_name(options);
  input_quantizer =
      detail::install_quantizer(*this, "input_quantizer", qconfig_->activation, device, what);
  weight_quantizer =
      detail::install_quantizer(*this, "weight_quantizer", qconfig_->weight, device, what);
}

void QuantLinearImpl::check_input(const at::Tensor& input) const {
  TORCH_CHECK(input.defined(), module_name(options), ": expected an input tensor, got an "
              "undefined one");
  TORCH_CHECK(input.dim() >= 1 && input.size(-1) == options.in_features(), module_name(options),
              ": expected input of shape [..., ", options.in_features(),
              "] (last dimension = in_features), got shape ", input.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(input.scalar_type()), module_name(options),
                    ": expected a floating-point input, got ", input.scalar_type());
}

at::Tensor QuantLinearImpl::forward(const at::Tensor& input) {
  check_input(input);
  if (input_tap_) input_tap_(input);
  // Converted: the GEMM applies the fused GELU itself.
  if (mode_ == QuantMode::kConverted) return converted_forward(input);
  const at::Tensor y = forward_linear(input);
  return fused_gelu_ ? at::gelu(y) : y;
}

// The float, observe and fake-quant product (without the fused GELU).
at::Tensor QuantLinearImpl::forward_linear(const at::Tensor& input) {
  if (mode_ == QuantMode::kFloat) return F::linear(input, weight, bias);
  // SmoothQuant: x * (1 / s) and W * s reach the quantizers (the float product is unchanged).
  const at::Tensor x_in = smooth_factor.defined() ? input * *smooth_multiplier() : input;
  const at::Tensor w_in = smoothed_weight();
  // kObserve: the quantizers record and return their inputs unchanged.
  // kFakeQuant: they return QDQ(x) with straight-through gradients.
  const at::Tensor x = input_quantizer.is_empty() ? x_in : input_quantizer(x_in);
  const at::Tensor w = weight_quantizer.is_empty() ? w_in : weight_quantizer(w_in);
  return F::linear(x, w, bias);
}

// Why the quantizers' formats have no integer kernel, or "". The INT8 GEMMs take narrow-range
// int8 codes only: a -128 weight code would break the 1040-term exact float32 route
// (127 * 128 * 1040 > 2^24) and the saturation bounds the CPU paths are checked against.
std::string QuantLinearImpl::spec_blocker() const {
  // Weight-only: detail::weight_codes names the storage it lacks.
  if (weight_quantizer.is_empty() || input_quantizer.is_empty()) return "";
  const QuantSpec& weight_spec = weight_quantizer->observer_ref().quant_spec();
  const QuantSpec& input_spec = input_quantizer->observer_ref().quant_spec();
  const bool dynamic = input_quantizer->options.dynamic();
  const bool int8_weight = detail::is_int8_gemm_spec(weight_spec) &&
                           weight_spec.granularity() != Granularity::kPerBlock;
  const bool int4_weight = is_int4_gemm_weight_spec(weight_spec) && !dynamic;
  if (detail::is_int8_gemm_spec(input_spec) &&
      input_spec.granularity() == Granularity::kPerTensor && (int8_weight || int4_weight)) {
    return "";
  }
  std::string hint;
  for (const QuantSpec* spec : {&input_spec, &weight_spec}) {
    if (spec->dtype() == QuantDtype::kInt8 && spec->symmetric() && !spec->narrow_range()) {
      hint = " (" + std::string(spec == &input_spec ? "input" : "weight") +
             " spec without narrow_range(true): QuantSpec defaults to false, every preset sets "
             "it)";
      break;
    }
  }
  return "no INT8 GEMM for input " + to_string(input_spec) + (dynamic ? " (dynamic)" : "") +
         " with weight " + to_string(weight_spec) + hint + "; it needs int8 narrow-range "
         "symmetric per-tensor input and an int8 narrow symmetric per-tensor or per-channel "
         "weight, or a static input and an int4 narrow symmetric weight";
}

std::string QuantLinearImpl::convert_note() const {
  if (mode_ == QuantMode::kConverted || !qconfig_) return "";
  return spec_blocker();
}

ConvertResult QuantLinearImpl::convert() {
  if (mode_ == QuantMode::kConverted) return {true, converted_scheme_, ""};
  if (!qconfig_ || mode_ == QuantMode::kFloat) {
    return {false, "", "in float mode (not prepared, or disabled)"};
  }
  if (weight_quantizer.is_empty()) {
    return {false, "", "no weight quantizer: nothing to store as integers"};
  }
  const std::string blocker = spec_blocker();
  if (!blocker.empty()) return {false, "", blocker + "; stays " + to_string(mode_)};
  const QuantSpec& weight_spec = weight_quantizer->observer_ref().quant_spec();
  LinearScheme kind = LinearScheme::kWeightOnly;
  at::Tensor static_scale;
  if (!input_quantizer.is_empty()) {
    const bool dynamic = input_quantizer->options.dynamic();
    const bool int4_weight = is_int4_gemm_weight_spec(weight_spec) && !dynamic;
    if (dynamic) {
      kind = LinearScheme::kInt8Dynamic;
    } else {
      QParams qparams = input_quantizer->qparams();
      if (!qparams.defined() && input_quantizer->observer_ref().has_data()) {
        qparams = input_quantizer->update_qparams();
      }
      if (!qparams.defined()) {
        return {false, "", "its input quantizer has no scale (not calibrated); run "
                           "tquant::calibrate before convert"};
      }
      kind = int4_weight ? LinearScheme::kW4A8 : LinearScheme::kInt8Static;
      static_scale = qparams.scale.detach().to(at::kCPU, at::kFloat).reshape({});
    }
  }
  std::string reason;
  auto codes = detail::weight_codes(*weight_quantizer, smoothed_weight(), &reason);
  if (!codes) return {false, "", reason};
  const auto device = weight.device();
  install_converted(kind, codes->block, codes->codes, codes->scale,
                    static_scale.defined() ? static_scale.to(device) : static_scale);
  return {true, converted_scheme_, ""};
}

void QuantLinearImpl::make_converted(const std::string& scheme) {
  const std::string what = module_name(options);
  TORCH_CHECK_VALUE(mode_ != QuantMode::kConverted || scheme == converted_scheme_ ||
                        !(weight_int8.defined() || weight_int4.defined()),
                    what, ": already converted with scheme '", converted_scheme_,
                    "', cannot change to '", scheme, "'");
  const auto parsed = detail::parse_scheme(
      scheme, {"int8_static", "int8_dynamic", "weight_only", "w4a8"}, what);
  const LinearScheme kind = scheme_kind(parsed.kind);
  TORCH_CHECK_VALUE(parsed.block == 0 || kind == LinearScheme::kWeightOnly ||
                        kind == LinearScheme::kW4A8,
                    what, ": the INT8 GEMM schemes take one weight scale per output channel, got '",
                    scheme, "'");
  auto codes = detail::placeholder_codes(options.out_features(), options.in_features(),
                                         parsed.block, what);
  const auto device = bias.defined() ? bias.device()
                                     : (weight.defined() ? weight.device() : at::Device(at::kCPU));
  const bool static_input = kind == LinearScheme::kInt8Static || kind == LinearScheme::kW4A8;
  install_converted(kind, parsed.block, codes.codes.to(device), codes.scale.to(device),
                    static_input ? at::ones({}, at::TensorOptions(device)) : at::Tensor());
}

void QuantLinearImpl::install_converted(LinearScheme kind, int64_t block, at::Tensor codes,
                                        at::Tensor scale, at::Tensor static_input_scale) {
  if (parameters_.contains("weight")) parameters_.erase("weight");
  weight = at::Tensor();
  detail::unregister_quantizer(*this, "input_quantizer", input_quantizer);
  detail::unregister_quantizer(*this, "weight_quantizer", weight_quantizer);
  // W4A8 keeps only the packed codes (two per byte); the int8 form the GEMM needs is derived
  // from them once (gemm_weights).
  if (kind == LinearScheme::kW4A8) {
    weight_int4 = detail::set_buffer(*this, "weight_int4", pack_int4(codes));
  } else {
    weight_int8 = detail::set_buffer(*this, "weight_int8", std::move(codes));
  }
  weight_scale = detail::set_buffer(*this, "weight_scale", std::move(scale));
  input_scale = static_input_scale.defined()
                    ? detail::set_buffer(*this, "input_scale", std::move(static_input_scale))
                    : at::Tensor();
  // prepare_converted (below) reads the scale once, not .item() in every forward; a load's
  // copy_ into the buffer is picked up by load_state's prepare_converted call.
  if (!input_scale.defined()) input_scale_host_.reset();
  mode_ = QuantMode::kConverted;
  converted_kind_ = kind;
  converted_scheme_ = detail::format_scheme(scheme_name(kind), block);
  gemm_weights_.clear();
  prepare_converted();
}

void QuantLinearImpl::prepare_converted() {
  if (mode_ != QuantMode::kConverted) return;
  if (input_scale.defined()) input_scale_host_.set(input_scale);
  if (converted_kind_ != LinearScheme::kWeightOnly) gemm_weights();
  if (smooth_factor.defined()) smooth_multiplier();  // SmoothQuant's 1 / s, not in forward
}

std::shared_ptr<const detail::LinearGemmWeights> QuantLinearImpl::gemm_weights() {
  return gemm_weights_.get({&weight_int8, &weight_int4, &weight_scale}, [&] {
    const at::Tensor codes = converted_kind_ == LinearScheme::kW4A8
                                 ? unpack_int4(weight_int4, options.in_features())
                                 : weight_int8;
    return detail::linear_gemm_weights(codes, weight_scale);
  });
}

at::Tensor QuantLinearImpl::converted_forward(const at::Tensor& input) {
  // SmoothQuant: the codes hold W * s; x is multiplied by 1 / s (in the quantize pass).
  const at::Tensor multiplier = smooth_factor.defined() ? *smooth_multiplier() : at::Tensor();
  if (converted_kind_ == LinearScheme::kWeightOnly) {
    const at::Tensor w = detail::dequantize_codes(weight_int8, weight_scale);
    const at::Tensor x = multiplier.defined() ? (input * multiplier).to(input.scalar_type()) : input;
    const at::Tensor y = F::linear(x, w.to(input.scalar_type()), bias);
    return fused_gelu_ ? at::gelu(y) : y;
  }
  torch::NoGradGuard no_grad;
  const std::optional<double> static_scale =
      converted_kind_ == LinearScheme::kInt8Dynamic
          ? std::nullopt
          : std::optional<double>(input_scale_host_.get(input_scale));
  return detail::linear_int8_gemm(
      input, static_scale, *gemm_weights(), bias,
      [&] { return module_name(options) + ": converted '" + converted_scheme_ + "'"; },
      multiplier, fused_gelu_);
}

// ---- SmoothQuant (tquant/smooth_quant.h) ----

void QuantLinearImpl::set_smooth_factor(const at::Tensor& factor) {
  const std::string what = module_name(options);
  TORCH_CHECK_VALUE(mode_ != QuantMode::kConverted, what, ": cannot set SmoothQuant factors of "
                    "a converted module (its integer weight was computed with the factors it "
                    "had)");
  // LibTorch cannot unregister a buffer: factors of ones undo the smoothing instead.
  TORCH_CHECK_VALUE(factor.defined() || !smooth_factor.defined(), what, ": cannot remove the "
                    "SmoothQuant buffer 'smooth_factor' (LibTorch cannot unregister buffers); set "
                    "factors of ones to undo the smoothing, or build the module again");
  if (!factor.defined()) return;
  TORCH_CHECK_VALUE(factor.dim() == 1 && factor.size(0) == options.in_features(), what,
                    ": expected SmoothQuant factors of shape [", options.in_features(),
                    "] (in_features), got ", factor.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(factor.scalar_type()), what,
                    ": expected floating-point SmoothQuant factors, got ", factor.scalar_type());
  TORCH_CHECK_VALUE((at::isfinite(factor) & factor.gt(0)).all().item<bool>(), what,
                    ": expected finite SmoothQuant factors > 0, got min ",
                    factor.min().item<double>(), ", max ", factor.max().item<double>());
  const auto device = bias.defined() ? bias.device()
                                     : (weight.defined() ? weight.device() : factor.device());
  smooth_factor = detail::set_buffer(*this, "smooth_factor",
                                     factor.detach().to(device, at::kFloat).contiguous().clone());
  smooth_multiplier_.clear();
}

std::shared_ptr<const at::Tensor> QuantLinearImpl::smooth_multiplier() {
  return smooth_multiplier_.get({&smooth_factor}, [&] { return at::reciprocal(smooth_factor); });
}

at::Tensor QuantLinearImpl::smoothed_weight() const {
  return smooth_factor.defined() ? weight * smooth_factor : weight;
}

}  // namespace tquant
