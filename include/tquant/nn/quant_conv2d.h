#pragma once

#include <cstdint>
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
#include "tquant/nn/quant_mode.h"
#include "tquant/nn/quantizable.h"
#include "tquant/qconfig.h"

namespace tquant {

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
///   kFakeQuant: conv2d(fq_in(x), fq_w(W)) + b, straight-through gradients.
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
class QuantConv2dImpl : public torch::nn::Cloneable<QuantConv2dImpl>, public Quantizable {
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

  /// Builds fresh quantizers from `qconfig` (on the weight's device), replacing earlier ones,
  /// and applies the current mode to them.
  void set_qconfig(const QConfig& qconfig) override;
  const std::optional<QConfig>& qconfig() const override { return qconfig_; }
  /// Changes what forward computes; kObserve and kFakeQuant need a QConfig.
  void set_mode(QuantMode mode) override;
  QuantMode mode() const override { return mode_; }
  std::string quant_type_name() const override { return "QuantConv2d"; }

  torch::nn::Conv2dOptions options;
  /// [out_channels, in_channels / groups, kernel_h, kernel_w].
  at::Tensor weight;
  /// [out_channels], undefined when options.bias() is false.
  at::Tensor bias;
  /// Quantizer of the input; empty without a QConfig and for weight-only configs.
  FakeQuantize input_quantizer{nullptr};
  /// Quantizer of the weight; empty without a QConfig or a weight factory.
  FakeQuantize weight_quantizer{nullptr};

 private:
  void install_quantizers();
  void apply_mode();
  void check_input(const at::Tensor& input) const;
  at::Tensor conv_forward(const at::Tensor& input, const at::Tensor& weight) const;
  std::string name() const;

  /// Pads for F::pad with non-zero padding modes: [w_left, w_right, h_left, h_right].
  std::vector<int64_t> reversed_padding_repeated_twice_;
  std::optional<QConfig> qconfig_;
  QuantMode mode_ = QuantMode::kFloat;
};
TORCH_MODULE(QuantConv2d);

}  // namespace tquant
