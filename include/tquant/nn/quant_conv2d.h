#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <torch/expanding_array.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/options/conv.h>
#include <torch/nn/pimpl.h>

#include "tquant/fake_quantize.h"
#include "tquant/nn/derived_cache.h"
#include "tquant/nn/quant_mode.h"
#include "tquant/nn/quantizable.h"
#include "tquant/qconfig.h"

namespace tquant {

namespace detail {
struct Conv2dInt8Weight;  // src/nn/conv2d_int8_onednn.h
}  // namespace detail

class QuantConv2d;

/// Quantizable twin of torch::nn::Conv2d:  y = conv2d(x, W) + b.
///
/// Same options (torch::nn::Conv2dOptions: stride, padding including kValid / kSame, dilation,
/// groups, bias, padding_mode), same parameters ("weight" [out, in / groups, kh, kw] and
/// "bias" [out], bias registered undefined when options.bias() is false) and the same
/// initialization as LibTorch's ConvNdImpl::reset_parameters (kaiming_uniform_(weight,
/// a = sqrt(5)); bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))), so a torch::nn::Conv2d's
/// parameters or serialized state load into it unchanged.
///
/// The mode (see QuantMode) decides what forward computes, as in QuantLinear:
///   kFloat:     torch::nn::Conv2d's computation;
///   kObserve:   the same output, while input_quantizer records x and weight_quantizer the
///               weight;
///   kFakeQuant: conv2d(fq_in(x), fq_w(W)) + b, straight-through gradients;
///   kConverted: after convert(): the weight is stored as int8 codes "weight_int8"
///               [out, in / groups, kh, kw] with float32 scales "weight_scale" [out] and the
///               calibrated input scale "input_scale" [] (the float "weight" parameter is
///               removed and the quantizers are unregistered; "bias" stays float), and forward
///               runs oneDNN's INT8 convolution (see convert() and docs/backends.md).
/// With fused_relu() (set by set_fused_relu, or by a converted scheme ending in "+relu") every
/// mode returns relu(...) of the above, as torch.ao's ConvReLU2d; converted, the ReLU is
/// oneDNN's post-op and costs no extra pass.
/// Non-zero padding modes (reflect, replicate, circular) pad after the input QDQ, as
/// torch.ao's QAT Conv2d pads its already fake-quantized input; padding copies values, so the
/// padded tensor holds only representable values.
///
/// The weight quantizer must be per-tensor, per-block or per-channel along axis 0 (one scale
/// per output channel, as the int8 presets give); set_qconfig rejects other channel axes.
/// Switching to kFakeQuant freezes calibrated quantizers exactly as QuantLinear does.
///
/// Difference from LibTorch kept on purpose: for padding = kSame with a non-zero padding mode
/// LibTorch 2.x lays the per-dimension pads out in the wrong order (height pads on the width),
/// which only matters for non-square kernels; QuantConv2d pads as Python's nn.Conv2d does, so
/// the output keeps the input's size.
///
/// Example:
///   tquant::QuantConv2d conv(torch::nn::Conv2dOptions(3, 16, 3).padding(1));
///   conv->set_qconfig(tquant::int8_static_qconfig());
///   conv->set_mode(tquant::QuantMode::kObserve);
///   for (const auto& batch : calibration_batches) conv(batch);
///   conv->set_mode(tquant::QuantMode::kFakeQuant);
class QuantConv2dImpl : public torch::nn::Cloneable<QuantConv2dImpl>, public QuantizableBase {
 public:
  QuantConv2dImpl(int64_t in_channels, int64_t out_channels,
                  torch::ExpandingArray<2> kernel_size)
      : QuantConv2dImpl(torch::nn::Conv2dOptions(in_channels, out_channels, kernel_size)) {}
  explicit QuantConv2dImpl(const torch::nn::Conv2dOptions& options_);

  /// A float-mode QuantConv2d with the options, training flag and a copy of the parameters
  /// (same dtype, device and requires_grad) of `conv`.
  static QuantConv2d from_float(const torch::nn::Conv2d& conv);

  /// Checks the options as LibTorch does, registers weight, bias and, when a QConfig is set,
  /// the quantizers.
  void reset() override;
  /// torch::nn::Conv2d's initialization of weight and bias.
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// x: [N, in_channels, H, W] or unbatched [in_channels, H, W].
  at::Tensor forward(const at::Tensor& input);

  // set_qconfig (quantizers built on the weight's device), qconfig(), set_mode (kObserve and
  // kFakeQuant need a QConfig) and mode() come from QuantizableBase.
  std::string quant_type_name() const override { return "QuantConv2d"; }

  /// Applies ReLU to the output in every mode (the conv then stands for Conv2d + ReLU, as
  /// torch.ao's ConvReLU2d). Use it after tquant::fuse folded Conv2d + BatchNorm2d + ReLU: the
  /// separate ReLU module may stay (ReLU of a ReLU output changes nothing) or be dropped from
  /// forward. Not possible once converted (the scheme fixes it).
  void set_fused_relu(bool fused);
  bool fused_relu() const { return fused_relu_; }

  /// Lowers to oneDNN's INT8 convolution on CPU (see kConverted above), scheme "int8_static"
  /// ("int8_static+relu" with fused_relu()), when the input quantizer is static per-tensor int8
  /// narrow-range symmetric (int8_static_qconfig's) and the weight's is int8 symmetric per
  /// tensor or per output channel. Anything else is not converted (the reason is given) and
  /// stays in its mode. Converting an uncalibrated input quantizer is refused; an unobserved
  /// weight quantizer observes the weight first. The weight is prepacked here, not in forward.
  ///
  /// Converted forward takes float input on CPU ([N, in_channels, H, W] or unbatched; other
  /// float dtypes are computed in float32 and cast back) and returns float32-computed output
  /// in channels-last memory layout (the same values and shape as the other modes; call
  /// .contiguous() if the layout matters). Input codes equal those of fake quantization, so
  /// the output equals the kFakeQuant output up to float32 rounding of the accumulation's
  /// scaling. An empty batch gives an empty output. A sample whose input holds a NaN or +-Inf
  /// gives an all-NaN output for that sample (fake quantization makes them NaN; float
  /// convolution would spread the NaN only to the outputs that see it); the other samples of
  /// the batch are unaffected. The check rides on the quantization pass, so it costs nothing.
  ConvertResult convert() override;
  std::string converted_scheme() const override { return converted_scheme_; }
  void make_converted(const std::string& scheme) override;
  /// Prepacks the weight for oneDNN if the codes or scales changed since (load_state calls it
  /// after copying the saved tensors), so no forward packs.
  void prepare_converted() override;

  torch::nn::Conv2dOptions options;
  /// [out_channels, in_channels / groups, kernel_h, kernel_w].
  at::Tensor weight;
  /// [out_channels], undefined when options.bias() is false.
  at::Tensor bias;
  /// Quantizer of the input; empty without a QConfig and for weight-only configs.
  FakeQuantize input_quantizer{nullptr};
  /// Quantizer of the weight; empty without a QConfig or a weight factory.
  FakeQuantize weight_quantizer{nullptr};
  /// Converted state (kConverted only, undefined otherwise): int8 codes
  /// [out, in / groups, kh, kw], float32 scales [out], static input scale [].
  at::Tensor weight_int8;
  at::Tensor weight_scale;
  at::Tensor input_scale;

 private:
  // ---- QuantizableBase hooks ----
  std::string error_name() const override;
  std::vector<FakeQuantize*> quantizers() override { return {&input_quantizer, &weight_quantizer}; }
  void install_quantizers() override;
  /// A per-channel weight spec must be along axis 0 (output channels).
  void check_module_qconfig(const QConfig& qconfig) const override;

  void check_input(const at::Tensor& input) const;
  at::Tensor conv_forward(const at::Tensor& input, const at::Tensor& weight) const;
  /// The input padded by reversed_padding_repeated_twice_ in the padding mode (zeros: 0).
  at::Tensor pad_explicitly(const at::Tensor& input) const;

  void install_converted(const std::string& scheme, at::Tensor codes, at::Tensor scale,
                         at::Tensor static_input_scale);
  /// Prepacks the converted weight for oneDNN (CPU tensors only).
  void pack_converted();
  detail::Conv2dInt8Weight pack_now() const;
  at::Tensor converted_forward(const at::Tensor& input);
  void check_converted_input(const at::Tensor& input) const;
  /// Explicit padding before quantization (non-zero padding modes, asymmetric kSame) instead of
  /// oneDNN's symmetric zero padding.
  bool pads_before_conv() const;

  /// Pads for F::pad with non-zero padding modes: [w_left, w_right, h_left, h_right].
  std::vector<int64_t> reversed_padding_repeated_twice_;
  bool fused_relu_ = false;
  std::string converted_scheme_;
  /// oneDNN's prepacked weight, built from weight_int8, weight_scale and input_scale.
  detail::DerivedCache<detail::Conv2dInt8Weight> packed_;
};
TORCH_MODULE(QuantConv2d);

}  // namespace tquant
