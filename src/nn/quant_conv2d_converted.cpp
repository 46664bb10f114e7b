// QuantConv2d's converted mode: int8 weight codes and scales, oneDNN's INT8 convolution on CPU
// (see quant_conv2d.h, kConverted, and conv2d_int8_onednn.h).
#include <limits>
#include <string>
#include <variant>

#include <ATen/ATen.h>
#include <torch/utils.h>

#include "tquant/nn/quant_conv2d.h"

#include "conv2d_int8_onednn.h"
#include "converted_weight.h"
#include "quant_module_detail.h"

namespace tquant {

namespace {

constexpr const char* kStatic = "int8_static";
constexpr const char* kStaticRelu = "int8_static+relu";

/// The int8 narrow-range codes [-127, 127] shifted into oneDNN's uint8 input: zero point 128.
constexpr int64_t kInputZeroPoint = 128;
constexpr int64_t kInputCodeMin = 1;
constexpr int64_t kInputCodeMax = 255;

std::vector<int64_t> as_vector(const torch::ExpandingArray<2>& values) {
  return {(*values)[0], (*values)[1]};
}

}  // namespace

bool QuantConv2dImpl::pads_before_conv() const {
  if (!std::holds_alternative<torch::enumtype::kZeros>(options.padding_mode())) {
    return !std::holds_alternative<torch::enumtype::kValid>(options.padding());
  }
  if (!std::holds_alternative<torch::enumtype::kSame>(options.padding())) return false;
  const auto& pad = reversed_padding_repeated_twice_;  // [w_left, w_right, h_left, h_right]
  return pad[0] != pad[1] || pad[2] != pad[3];
}

detail::Conv2dInt8Weight QuantConv2dImpl::pack_now() const {
  std::vector<int64_t> padding = {0, 0};
  if (!pads_before_conv()) {
    if (const auto* pad = std::get_if<torch::ExpandingArray<2>>(&options.padding())) {
      padding = as_vector(*pad);
    } else if (std::holds_alternative<torch::enumtype::kSame>(options.padding())) {
      padding = {reversed_padding_repeated_twice_[2], reversed_padding_repeated_twice_[0]};
    }
  }
  return detail::pack_conv2d_int8(weight_int8, weight_scale, input_scale.item<double>(),
                                  kInputZeroPoint, as_vector(options.stride()), padding,
                                  as_vector(options.dilation()), options.groups(), fused_relu_);
}

void QuantConv2dImpl::pack_converted() {
  if (!weight_int8.is_cpu()) {  // oneDNN runs on CPU; forward names the device
    packed_.clear();
    return;
  }
  packed_.get({&weight_int8, &weight_scale, &input_scale}, [this] { return pack_now(); });
}

void QuantConv2dImpl::prepare_converted() {
  if (mode_ == QuantMode::kConverted) pack_converted();
}

ConvertResult QuantConv2dImpl::convert() {
  if (mode_ == QuantMode::kConverted) return {true, converted_scheme_, ""};
  if (!qconfig_ || mode_ == QuantMode::kFloat) {
    return {false, "", "in float mode (not prepared, or disabled)"};
  }
  const std::string stays = "; stays " + to_string(mode_);
  if (weight_quantizer.is_empty() || input_quantizer.is_empty()) {
    return {false, "", "oneDNN's INT8 convolution needs both an input and a weight quantizer "
                       "(weight-only convolution has no integer kernel)" + stays};
  }
  const QuantSpec& input_spec = input_quantizer->observer_ref().quant_spec();
  const QuantSpec& weight_spec = weight_quantizer->observer_ref().quant_spec();
  if (!detail::is_int8_gemm_spec(input_spec) ||
      input_spec.granularity() != Granularity::kPerTensor ||
      input_quantizer->options.dynamic()) {
    return {false, "", "oneDNN's INT8 convolution takes static per-tensor int8 narrow-range "
                       "symmetric input, got " + to_string(input_spec) +
                       (input_quantizer->options.dynamic() ? " (dynamic)" : "") + stays};
  }
  if (weight_spec.dtype() != QuantDtype::kInt8 || !weight_spec.symmetric() ||
      weight_spec.granularity() == Granularity::kPerBlock) {
    return {false, "", "oneDNN's INT8 convolution takes int8 symmetric per-tensor or "
                       "per-output-channel weights, got " + to_string(weight_spec) + stays};
  }
  if (!detail::conv2d_int8_onednn_available()) {
    return {false, "", "this LibTorch has no oneDNN INT8 convolution (onednn::qconv2d_pointwise)" +
                           stays};
  }
  if (!weight.is_cpu()) {
    return {false, "", "oneDNN's INT8 convolution runs on CPU, the weight is on " +
                           weight.device().str() + stays};
  }
  QParams qparams = input_quantizer->qparams();
  if (!qparams.defined() && input_quantizer->observer_ref().has_data()) {
    qparams = input_quantizer->update_qparams();
  }
  if (!qparams.defined()) {
    return {false, "", "its input quantizer has no scale (not calibrated); run "
                       "tquant::calibrate before convert"};
  }
  const at::Tensor static_scale = qparams.scale.detach().to(at::kCPU, at::kFloat).reshape({});
  std::string reason;
  auto codes = detail::weight_codes(*weight_quantizer, weight.reshape({weight.size(0), -1}),
                                    &reason);
  if (!codes) return {false, "", reason + stays};
  install_converted(fused_relu_ ? kStaticRelu : kStatic, codes->codes.reshape(weight.sizes()),
                    codes->scale, static_scale);
  return {true, converted_scheme_, ""};
}

void QuantConv2dImpl::make_converted(const std::string& scheme) {
  TORCH_CHECK_VALUE(mode_ != QuantMode::kConverted || scheme == converted_scheme_ ||
                        !weight_int8.defined(),
                    error_name(), ": already converted with scheme '", converted_scheme_,
                    "', cannot change to '", scheme, "'");
  const auto parsed = detail::parse_scheme(scheme, {kStatic, kStaticRelu}, error_name());
  TORCH_CHECK_VALUE(parsed.block == 0, error_name(), ": oneDNN's INT8 convolution takes one weight "
                    "scale per output channel, got scheme '", scheme, "'");
  const auto device = bias.defined() ? bias.device()
                                     : (weight.defined() ? weight.device() : at::Device(at::kCPU));
  const auto o = options.out_channels();
  const at::TensorOptions on(device);
  fused_relu_ = parsed.kind == kStaticRelu;
  install_converted(scheme,
                    at::zeros({o, options.in_channels() / options.groups(),
                               (*options.kernel_size())[0], (*options.kernel_size())[1]},
                              on.dtype(at::kChar)),
                    at::ones({o}, on), at::ones({}, on));
}

void QuantConv2dImpl::install_converted(const std::string& scheme, at::Tensor codes,
                                        at::Tensor scale, at::Tensor static_input_scale) {
  if (parameters_.contains("weight")) parameters_.erase("weight");
  weight = at::Tensor();
  detail::unregister_quantizer(*this, "input_quantizer", input_quantizer);
  detail::unregister_quantizer(*this, "weight_quantizer", weight_quantizer);
  weight_int8 = detail::set_buffer(*this, "weight_int8", std::move(codes));
  weight_scale = detail::set_buffer(*this, "weight_scale", std::move(scale));
  input_scale = detail::set_buffer(*this, "input_scale", std::move(static_input_scale));
  mode_ = QuantMode::kConverted;
  converted_scheme_ = scheme;
  pack_converted();
}

void QuantConv2dImpl::check_converted_input(const at::Tensor& input) const {
  TORCH_CHECK_VALUE(at::isFloatingType(input.scalar_type()), error_name(), ": converted ('",
                    converted_scheme_, "') expects a floating-point input, got ",
                    input.scalar_type());
  TORCH_CHECK_NOT_IMPLEMENTED(input.is_cpu() && weight_int8.is_cpu(), error_name(),
                              ": converted ('", converted_scheme_,
                              "') runs oneDNN's INT8 convolution on CPU "
                              "only; expected CPU input and module, got input on ",
                              input.device(), " and the module on ", weight_int8.device());
}

at::Tensor QuantConv2dImpl::converted_forward(const at::Tensor& input) {
  check_converted_input(input);
  torch::NoGradGuard no_grad;
  const bool batched = input.dim() == 4;
  at::Tensor x = (batched ? input : input.unsqueeze(0)).to(at::kFloat);
  const bool pad_first = pads_before_conv();
  if (pad_first) x = pad_explicitly(x);
  // The packed weight was built when converting or loading; it is built again (under a lock)
  // only when the codes or scales were replaced since.
  const auto packed =
      packed_.get({&weight_int8, &weight_scale, &input_scale}, [this] { return pack_now(); });

  int64_t out_size[2];
  for (int64_t i = 0; i < 2; ++i) {
    const int64_t extent = x.size(2 + i) + 2 * packed->padding[i];
    const int64_t span = packed->dilation[i] * ((*options.kernel_size())[i] - 1) + 1;
    TORCH_CHECK_VALUE(extent >= span, error_name(), ": expected input height and width (after "
                      "padding) of at least the dilated kernel size ", span, ", got input shape ",
                      input.sizes());
    out_size[i] = (extent - span) / packed->stride[i] + 1;
  }
  at::Tensor y;
  if (x.size(0) == 0) {
    y = at::empty({0, options.out_channels(), out_size[0], out_size[1]}, x.options());
  } else {
    const auto codes = detail::quantize_conv2d_input(
        x, static_cast<float>(packed->input_scale), kInputZeroPoint, kInputCodeMin,
        kInputCodeMax);
    y = detail::conv2d_int8_onednn(codes.codes, *packed,
                                   bias.defined() ? bias.to(at::kFloat) : at::Tensor());
    for (size_t n = 0; n < codes.nonfinite_in_sample.size(); ++n) {
      if (codes.nonfinite_in_sample[n] != 0) {
        y[static_cast<int64_t>(n)].fill_(std::numeric_limits<float>::quiet_NaN());
      }
    }
  }
  y = y.to(input.scalar_type());
  return batched ? y : y.squeeze(0);
}

}  // namespace tquant
