#include "tquant/nn/quant_linear.h"

#include <cmath>
#include <string>

#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>
#include <torch/utils.h>

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
  weight = register_parameter("weight",
                              torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty(options.out_features()));
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  reset_parameters();
  if (qconfig_) {
    install_quantizers();
    apply_mode();
  }
}

void QuantLinearImpl::reset_parameters() {
  // torch::nn::LinearImpl::reset_parameters (and Python's nn.Linear): the same calls in the
  // same order, so equal seeds give equal weights.
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5));  // NOLINT(*-magic-numbers)
  if (bias.defined()) {
    auto [fan_in, fan_out] = torch::nn::init::_calculate_fan_in_and_fan_out(weight);
    (void)fan_out;
    const auto bound = 1 / std::sqrt(fan_in);
    torch::nn::init::uniform_(bias, -bound, bound);
  }
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
  // kObserve: the quantizers record and return their inputs unchanged.
  // kFakeQuant: they return QDQ(x) with straight-through gradients.
  const at::Tensor x = input_quantizer.is_empty() ? input : input_quantizer(input);
  const at::Tensor w = weight_quantizer.is_empty() ? weight : weight_quantizer(weight);
  return F::linear(x, w, bias);
}

}  // namespace tquant
