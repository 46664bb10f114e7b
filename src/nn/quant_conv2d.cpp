#include "tquant/nn/quant_conv2d.h"

#include <cmath>
#include <sstream>
#include <string>
#include <variant>

#include <c10/util/overloaded.h>
#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/padding.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/utils.h>
#include <torch/utils.h>

#include "quant_module_detail.h"

namespace tquant {

namespace {

namespace F = torch::nn::functional;

/// F::pad's mode for a convolution's non-zero padding mode.
F::PadFuncOptions::mode_t pad_mode(const torch::nn::Conv2dOptions::padding_mode_t& mode) {
  if (std::holds_alternative<torch::enumtype::kReflect>(mode)) return torch::kReflect;
  if (std::holds_alternative<torch::enumtype::kReplicate>(mode)) return torch::kReplicate;
  TORCH_INTERNAL_ASSERT(std::holds_alternative<torch::enumtype::kCircular>(mode),
                        "unexpected conv padding mode");
  return torch::kCircular;
}

}  // namespace

QuantConv2dImpl::QuantConv2dImpl(const torch::nn::Conv2dOptions& options_) : options(options_) {
  // NOLINTNEXTLINE(clang-analyzer-optin.cplusplus.VirtualCall): as torch::nn::ConvNdImpl.
  QuantConv2dImpl::reset();
}

std::string QuantConv2dImpl::error_name() const {
  std::ostringstream stream;
  stream << "QuantConv2d(in_channels=" << options.in_channels()
         << ", out_channels=" << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ")";
  return stream.str();
}

QuantConv2d QuantConv2dImpl::from_float(const torch::nn::Conv2d& conv) {
  TORCH_CHECK_VALUE(!conv.is_empty(),
                    "QuantConv2d::from_float: expected a torch::nn::Conv2d, got an empty holder");
  const auto& o = conv->options;
  QuantConv2d result(torch::nn::Conv2dOptions(o.in_channels(), o.out_channels(), o.kernel_size())
                         .stride(o.stride())
                         .padding(o.padding())
                         .dilation(o.dilation())
                         .groups(o.groups())
                         .bias(o.bias())
                         .padding_mode(o.padding_mode()));
  torch::NoGradGuard no_grad;
  result->weight.set_data(conv->weight.detach().clone());
  result->weight.set_requires_grad(conv->weight.requires_grad());
  if (conv->bias.defined()) {
    result->bias.set_data(conv->bias.detach().clone());
    result->bias.set_requires_grad(conv->bias.requires_grad());
  }
  result->train(conv->is_training());
  return result;
}

void QuantConv2dImpl::reset() {
  // The checks and registration of torch::nn::ConvNdImpl::reset, so parameter names, order and
  // the undefined bias match.
  TORCH_CHECK_VALUE(options.in_channels() > 0 && options.groups() > 0 &&
                        options.out_channels() > 0,
                    "QuantConv2d: expected positive in_channels, out_channels and groups, got ",
                    options.in_channels(), ", ", options.out_channels(), " and ",
                    options.groups());
  TORCH_CHECK_VALUE(options.in_channels() % options.groups() == 0 &&
                        options.out_channels() % options.groups() == 0,
                    error_name(), ": expected in_channels and out_channels divisible by groups = ",
                    options.groups());
  std::visit(
      c10::overloaded(
          [&](torch::enumtype::kValid) { reversed_padding_repeated_twice_.assign(4, 0); },
          [&](torch::enumtype::kSame) {
            for (int64_t i = 0; i < 2; ++i) {
              TORCH_CHECK_VALUE((*options.stride())[i] == 1, error_name(),
                                ": padding = kSame needs stride 1, got stride ",
                                options.stride());
            }
            // F::pad lists the last dimension first: [w_left, w_right, h_left, h_right].
            reversed_padding_repeated_twice_.assign(4, 0);
            for (int64_t i = 0; i < 2; ++i) {
              const int64_t total = (*options.dilation())[i] * ((*options.kernel_size())[i] - 1);
              const int64_t left = total / 2;
              const int64_t slot = 2 * (1 - i);
              reversed_padding_repeated_twice_[slot] = left;
              reversed_padding_repeated_twice_[slot + 1] = total - left;
            }
          },
          [&](const torch::ExpandingArray<2>& pad) {
            reversed_padding_repeated_twice_ =
                torch::nn::modules::utils::_reverse_repeat_vector(pad, 2);
          }),
      options.padding());

  if (mode_ != QuantMode::kConverted) {
    weight = register_parameter(
        "weight", torch::empty({options.out_channels(), options.in_channels() / options.groups(),
                                (*options.kernel_size())[0], (*options.kernel_size())[1]}));
  }
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty({options.out_channels()}));
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  if (mode_ == QuantMode::kConverted) {  // clone() of a converted module: its layout again
    make_converted(converted_scheme_);
    return;
  }
  reset_parameters();
  restore_quantizers();
}

void QuantConv2dImpl::reset_parameters() {
  // torch::nn::ConvNdImpl::reset_parameters.
  detail::reset_weight_and_bias(weight, bias);
}

void QuantConv2dImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "tquant::QuantConv2d(" << options.in_channels() << ", "
         << options.out_channels() << ", kernel_size=" << options.kernel_size()
         << ", stride=" << options.stride();
  std::visit(c10::overloaded(
                 [&](torch::enumtype::kValid) { stream << ", padding='valid'"; },
                 [&](torch::enumtype::kSame) { stream << ", padding='same'"; },
                 [&](const torch::ExpandingArray<2>& pad) {
                   if (*pad != *torch::ExpandingArray<2>(0)) stream << ", padding=" << pad;
                 }),
             options.padding());
  if (*options.dilation() != *torch::ExpandingArray<2>(1)) {
    stream << ", dilation=" << options.dilation();
  }
  if (options.groups() != 1) stream << ", groups=" << options.groups();
  if (!options.bias()) stream << ", bias=false";
  if (!std::holds_alternative<torch::enumtype::kZeros>(options.padding_mode())) {
    stream << ", padding_mode=" << torch::enumtype::get_enum_name(options.padding_mode());
  }
  if (fused_relu_) stream << ", fused_relu=true";
  stream << ", mode=" << to_string(mode_) << ")";
}

void QuantConv2dImpl::check_module_qconfig(const QConfig& qconfig) const {
  // Checks a quantizer built from the factory (set_qconfig calls this before anything changes).
  if (qconfig.weight) detail::check_weight_axis0(qconfig.weight(), error_name(), "output channel");
}

void QuantConv2dImpl::install_quantizers() {
  const auto device = weight.device();
  const std::string what = error_name();
  input_quantizer =
      detail::install_quantizer(*this, "input_quantizer", qconfig_->activation, device, what);
  weight_quantizer =
      detail::install_quantizer(*this, "weight_quantizer", qconfig_->weight, device, what);
}


void QuantConv2dImpl::check_input(const at::Tensor& input) const {
  TORCH_CHECK(input.defined(), error_name(), ": expected an input tensor, got an undefined one");
  TORCH_CHECK((input.dim() == 3 || input.dim() == 4) && input.size(-3) == options.in_channels(),
              error_name(), ": expected input of shape [N, ", options.in_channels(), ", H, W] or [",
              options.in_channels(), ", H, W] (channels = in_channels), got shape ",
              input.sizes());
}

at::Tensor QuantConv2dImpl::pad_explicitly(const at::Tensor& input) const {
  F::PadFuncOptions pad(reversed_padding_repeated_twice_);  // zeros: constant 0
  if (!std::holds_alternative<torch::enumtype::kZeros>(options.padding_mode())) {
    pad.mode(pad_mode(options.padding_mode()));
  }
  return F::pad(input, pad);
}

at::Tensor QuantConv2dImpl::conv_forward(const at::Tensor& input, const at::Tensor& w) const {
  // torch::nn::Conv2dImpl::_conv_forward.
  if (!std::holds_alternative<torch::enumtype::kZeros>(options.padding_mode())) {
    return F::detail::conv2d(pad_explicitly(input), w, bias, options.stride(),
                             /*padding=*/torch::ExpandingArray<2>(0), options.dilation(),
                             options.groups());
  }
  return F::detail::conv2d(input, w, bias, options.stride(), options.padding(),
                           options.dilation(), options.groups());
}

void QuantConv2dImpl::set_fused_relu(bool fused) {
  TORCH_CHECK_VALUE(mode_ != QuantMode::kConverted || fused == fused_relu_, error_name(),
                    ": is converted with scheme '", converted_scheme_,
                    "', which fixes whether the ReLU is fused");
  fused_relu_ = fused;
}

at::Tensor QuantConv2dImpl::forward(const at::Tensor& input) {
  check_input(input);
  if (mode_ == QuantMode::kConverted) return converted_forward(input);
  at::Tensor y;
  if (mode_ == QuantMode::kFloat) {
    y = conv_forward(input, weight);
  } else {
    // kObserve: the quantizers record and return their inputs unchanged.
    // kFakeQuant: they return QDQ(x) with straight-through gradients.
    const at::Tensor x = input_quantizer.is_empty() ? input : input_quantizer(input);
    const at::Tensor w = weight_quantizer.is_empty() ? weight : weight_quantizer(weight);
    y = conv_forward(x, w);
  }
  return fused_relu_ ? at::relu(y) : y;
}

}  // namespace tquant
