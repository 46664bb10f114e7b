#pragma once

// Internal: the CPU path of a converted QuantConv2d. Activations are quantized into the layout
// oneDNN's INT8 convolution reads, and the convolution runs as oneDNN's own kernel shipped in
// libtorch_cpu (operators onednn::qconv_prepack and onednn::qconv2d_pointwise, the ones
// PyTorch's inductor emits for x86 INT8 convolutions), reached through the dispatcher because
// their C++ symbols are not part of LibTorch's API.

#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

namespace tquant::detail {

/// Activation codes in oneDNN's layout for INT8 convolution: uint8 [N, C, H, W] stored
/// channels-last (NHWC), with
///   code = clamp(round_half_even(x * (1 / scale)) + zero_point, qmin, qmax)
/// where 1 / scale is taken in float32, as LibTorch's fake-quantize kernels do, so the codes are
/// exactly those fake quantization rounds to (shifted by zero_point). A NaN gets code qmin and
/// +-Inf qmax / qmin; either marks its sample in nonfinite_in_sample (fake quantization turns
/// them into NaN, which the caller reproduces from the flags).
struct Conv2dInputCodes {
  at::Tensor codes;                    ///< uint8 [N, C, H, W], channels-last
  std::vector<uint8_t> nonfinite_in_sample;  ///< [N]: 1 when sample n holds a NaN or +-Inf
};

/// One pass over x (float32 [N, C, H, W], contiguous or channels-last; other layouts are made
/// contiguous first): quantize, change the layout to NHWC and look for NaN / Inf at once.
/// 0 <= qmin <= zero_point <= qmax <= 255.
Conv2dInputCodes quantize_conv2d_input(const at::Tensor& x, float scale, int64_t zero_point,
                                       int64_t qmin, int64_t qmax);

/// Reference twin of quantize_conv2d_input in plain ATen operations (tests compare the two bit
/// for bit).
Conv2dInputCodes quantize_conv2d_input_ref(const at::Tensor& x, float scale, int64_t zero_point,
                                           int64_t qmin, int64_t qmax);

/// True when this LibTorch registers oneDNN's INT8 convolution operators (x86 builds with
/// oneDNN do); convert leaves QuantConv2d in fake-quant mode, with this reason, otherwise.
bool conv2d_int8_onednn_available();

/// A convolution's INT8 weight prepacked by onednn::qconv_prepack, with everything else
/// qconv2d_pointwise takes that stays fixed between calls. The output is
///   y[n, o, p] = relu?( input_scale * weight_scale[o] * sum (code_x - input_zero_point) * code_w
///                       + bias[o] )                                      (float32)
struct Conv2dInt8Weight {
  at::Tensor packed;             ///< opaque oneDNN tensor (int8, blocked layout)
  at::Tensor weight_codes;       ///< int8 [out, in / groups, kh, kw], for the exact float path
  /// Some weight code is -128 (a symmetric spec without narrow_range): the exact float path
  /// bounds its products by 127 * 128 instead of 127 * 127.
  bool weight_code_minus_128 = false;
  at::Tensor weight_scale;       ///< float32 [out_channels]
  at::Tensor weight_zero_point;  ///< int64 zeros [out_channels] (symmetric weights)
  double input_scale = 1.0;
  int64_t input_zero_point = 0;  ///< of the uint8 activation codes
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;
  bool relu = false;  ///< ReLU fused as oneDNN post-op
};

/// Prepacks int8 weight codes [out, in / groups, kh, kw] (symmetric, zero point 0) with float32
/// scales [out] for activations of `input_scale` / `input_zero_point` (uint8 codes), symmetric
/// `padding` (top/bottom = padding[0], left/right = padding[1]).
Conv2dInt8Weight pack_conv2d_int8(const at::Tensor& weight_codes, const at::Tensor& weight_scale,
                                  double input_scale, int64_t input_zero_point,
                                  std::vector<int64_t> stride, std::vector<int64_t> padding,
                                  std::vector<int64_t> dilation, int64_t groups, bool relu);

/// oneDNN's INT8 convolution of uint8 NHWC codes (quantize_conv2d_input) with a prepacked
/// weight; float32 [N, out, H_out, W_out] in channels-last layout. bias: float32 [out] or
/// undefined. Where oneDNN's int8 kernels would saturate (no VNNI for oneDNN on this CPU,
/// detail::onednn_int8_sums_exact), the same sums come from a float convolution of the codes instead
/// (float32 while in / groups * kh * kw <= 1040 makes every partial sum an integer below 2^24,
/// float64 beyond): exact, slower than oneDNN's int8 kernel.
at::Tensor conv2d_int8_onednn(const at::Tensor& input_codes, const Conv2dInt8Weight& weight,
                              const at::Tensor& bias);

}  // namespace tquant::detail
