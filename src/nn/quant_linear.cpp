#include "tquant/nn/quant_linear.h"

#include <cmath>
#include <string>

#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>
#include <torch/utils.h>

#include "tquant/cuda_int8.h"

#include "converted_weight.h"
#include "quant_module_detail.h"

namespace tquant {

namespace {

namespace F = torch::nn::functional;

std::string module_name(const torch::nn::LinearOptions& options) {
  return "QuantLinear(in_features=" + std::to_string(options.in_features()) +
         ", out_features=" + std::to_string(options.out_features()) + ")";
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
  if (mode_ == QuantMode::kConverted) {  // clone() of a converted module: its layout again
    make_converted(converted_scheme_);
    return;
  }
  reset_parameters();
  if (qconfig_) {
    install_quantizers();
    apply_mode();
  }
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

void QuantLinearImpl::set_qconfig(const QConfig& qconfig) {
  check_qconfig(qconfig, module_name(options));
  qconfig_ = qconfig;
  install_quantizers();
  apply_mode();
}

void QuantLinearImpl::install_quantizers() {
  const auto device = weight.device();
  const auto what = module_name(options);
  input_quantizer =
      detail::install_quantizer(*this, "input_quantizer", qconfig_->activation, device, what);
  weight_quantizer =
      detail::install_quantizer(*this, "weight_quantizer", qconfig_->weight, device, what);
}

void QuantLinearImpl::set_mode(QuantMode mode) {
  detail::check_mode_change(mode_, mode, module_name(options));
  TORCH_CHECK_VALUE(mode == QuantMode::kFloat || qconfig_.has_value(), module_name(options),
                    ": set_mode(", to_string(mode), ") needs quantizers; call set_qconfig first");
  mode_ = mode;
  apply_mode();
}

void QuantLinearImpl::apply_mode() {
  detail::configure_quantizer(input_quantizer, mode_);
  detail::configure_quantizer(weight_quantizer, mode_);
}

void QuantLinearImpl::check_input(const at::Tensor& input) const {
  TORCH_CHECK(input.defined(), module_name(options), ": expected an input tensor, got an "
              "undefined one");
  TORCH_CHECK(input.dim() >= 1 && input.size(-1) == options.in_features(), module_name(options),
              ": expected input of shape [..., ", options.in_features(),
              "] (last dimension = in_features), got shape ", input.sizes());
}

at::Tensor QuantLinearImpl::forward(const at::Tensor& input) {
  check_input(input);
  if (mode_ == QuantMode::kFloat) return F::linear(input, weight, bias);
  if (mode_ == QuantMode::kConverted) return converted_forward(input);
  // kObserve: the quantizers record and return their inputs unchanged.
  // kFakeQuant: they return QDQ(x) with straight-through gradients.
  const at::Tensor x = input_quantizer.is_empty() ? input : input_quantizer(input);
  const at::Tensor w = weight_quantizer.is_empty() ? weight : weight_quantizer(weight);
  return F::linear(x, w, bias);
}

ConvertResult QuantLinearImpl::convert() {
  if (mode_ == QuantMode::kConverted) return {true, converted_scheme_, ""};
  if (!qconfig_ || mode_ == QuantMode::kFloat) {
    return {false, "", "in float mode (not prepared, or disabled)"};
  }
  if (weight_quantizer.is_empty()) {
    return {false, "", "no weight quantizer: nothing to store as integers"};
  }
  const QuantSpec& weight_spec = weight_quantizer->observer_ref().quant_spec();
  std::string kind = "weight_only";
  at::Tensor static_scale;
  if (!input_quantizer.is_empty()) {
    const QuantSpec& input_spec = input_quantizer->observer_ref().quant_spec();
    if (!detail::is_int8_gemm_spec(input_spec) || !detail::is_int8_gemm_spec(weight_spec) ||
        input_spec.granularity() != Granularity::kPerTensor ||
        weight_spec.granularity() == Granularity::kPerBlock) {
      return {false, "", "no INT8 GEMM for input " + to_string(input_spec) + " with weight " +
                             to_string(weight_spec) + " (it needs int8 narrow-range symmetric "
                             "per-tensor input and per-tensor or per-channel weight); stays " +
                             to_string(mode_)};
    }
    if (input_quantizer->options.dynamic()) {
      kind = "int8_dynamic";
    } else {
      QParams qparams = input_quantizer->qparams();
      if (!qparams.defined() && input_quantizer->observer_ref().has_data()) {
        qparams = input_quantizer->update_qparams();
      }
      if (!qparams.defined()) {
        return {false, "", "its input quantizer has no scale (not calibrated); run "
                           "tquant::calibrate before convert"};
      }
      kind = "int8_static";
      static_scale = qparams.scale.detach().to(at::kCPU, at::kFloat).reshape({});
    }
  }
  std::string reason;
  auto codes = detail::weight_codes(*weight_quantizer, weight, &reason);
  if (!codes) return {false, "", reason};
  const auto device = weight.device();
  install_converted(detail::format_scheme(kind, codes->block), codes->codes, codes->scale,
                    static_scale.defined() ? static_scale.to(device) : static_scale);
  return {true, converted_scheme_, ""};
}

void QuantLinearImpl::make_converted(const std::string& scheme) {
  const std::string what = module_name(options);
  TORCH_CHECK_VALUE(mode_ != QuantMode::kConverted || scheme == converted_scheme_ ||
                        !weight_int8.defined(),
                    what, ": already converted with scheme '", converted_scheme_,
                    "', cannot change to '", scheme, "'");
  const auto parsed =
      detail::parse_scheme(scheme, {"int8_static", "int8_dynamic", "weight_only"}, what);
  TORCH_CHECK_VALUE(parsed.kind == "weight_only" || parsed.block == 0, what,
                    ": the INT8 GEMM schemes take one weight scale per output channel, got '",
                    scheme, "'");
  auto codes = detail::placeholder_codes(options.out_features(), options.in_features(),
                                         parsed.block, what);
  const auto device = bias.defined() ? bias.device()
                                     : (weight.defined() ? weight.device() : at::Device(at::kCPU));
  install_converted(scheme, codes.codes.to(device), codes.scale.to(device),
                    parsed.kind == "int8_static" ? at::ones({}, at::TensorOptions(device))
                                                 : at::Tensor());
}

void QuantLinearImpl::install_converted(const std::string& scheme, at::Tensor codes,
                                        at::Tensor scale, at::Tensor static_input_scale) {
  if (parameters_.contains("weight")) parameters_.erase("weight");
  weight = at::Tensor();
  detail::unregister_quantizer(*this, "input_quantizer", input_quantizer);
  detail::unregister_quantizer(*this, "weight_quantizer", weight_quantizer);
  weight_int8 = detail::set_buffer(*this, "weight_int8", std::move(codes));
  weight_scale = detail::set_buffer(*this, "weight_scale", std::move(scale));
  input_scale = static_input_scale.defined()
                    ? detail::set_buffer(*this, "input_scale", std::move(static_input_scale))
                    : at::Tensor();
  // prepare_converted (below) reads the scale once, not .item() in every forward; a load's
  // copy_ into the buffer is picked up by load_state's prepare_converted call.
  if (!input_scale.defined()) input_scale_host_.reset();
  mode_ = QuantMode::kConverted;
  converted_scheme_ = scheme;
  packed_.clear();
  prepare_converted();
}

void QuantLinearImpl::prepare_converted() {
  if (mode_ != QuantMode::kConverted) return;
  if (input_scale.defined()) input_scale_host_.set(input_scale);
  if (converted_scheme_.rfind("int8_", 0) == 0 && weight_int8.device().is_cpu()) packed_weight();
}

std::shared_ptr<const Int8Weight> QuantLinearImpl::packed_weight() {
  return packed_.get({&weight_int8, &weight_scale},
                     [&] { return prepare_int8_weight(weight_int8, weight_scale); });
}

at::Tensor QuantLinearImpl::converted_forward(const at::Tensor& input) {
  if (converted_scheme_.rfind("weight_only", 0) == 0) {
    const at::Tensor w = detail::dequantize_codes(weight_int8, weight_scale);
    return F::linear(input, w.to(input.scalar_type()), bias);
  }
  torch::NoGradGuard no_grad;
  const std::optional<double> static_scale =
      converted_scheme_ == "int8_static"
          ? std::optional<double>(input_scale_host_.get(input_scale))
          : std::nullopt;
  if (input.is_cuda()) {
    const std::optional<at::Tensor> b = bias.defined() ? std::optional<at::Tensor>(bias)
                                                       : std::nullopt;
    // The fused kernels need a build with them and N % 4 == 0 (cuBLASLt's int8 regular
    // ordering); otherwise the exact ATen reference twin runs on the GPU.
    const bool built = cuda_int8_built();
    if (built && options.out_features() % kInt8GemmDimMultiple == 0) {
      return int8_linear_cuda(input, static_scale, weight_int8, weight_scale, b);
    }
    TORCH_WARN_ONCE(module_name(options), ": converted '", converted_scheme_, "' on CUDA runs "
                    "the ATen reference int8_linear_cuda_ref (slow) because ",
                    built ? "out_features is not a multiple of 4"
                          : "tquant was built without CUDA kernels",
                    " (warned once)");
    return int8_linear_cuda_ref(input, static_scale, weight_int8, weight_scale, b);
  }
  TORCH_CHECK_NOT_IMPLEMENTED(input.is_cpu(), module_name(options), ": converted '",
                              converted_scheme_, "' runs on CPU and CUDA tensors, got a ",
                              input.device(), " tensor");
  const at::Tensor x = input.to(at::kFloat);
  const c10::optional<at::Tensor> b =
      bias.defined() ? c10::optional<at::Tensor>(bias.to(at::kFloat)) : c10::nullopt;
  const std::shared_ptr<const Int8Weight> packed = packed_weight();
  const at::Tensor y = static_scale ? int8_linear_static(x, *static_scale, *packed, b)
                                     : int8_linear_dynamic(x, *packed, b);
  return y.to(input.scalar_type());
}

}  // namespace tquant
