#include "conv2d_int8_onednn.h"

#include "tquant/gemm.h"
#include "../int8_vnni_gemm.h"

#include <algorithm>
#include <string>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

namespace tquant::detail {

namespace {

/// Adding and subtracting 1.5 * 2^23 rounds a float with |v| < 2^22 to an integer, half to
/// even, in the default rounding mode (the exact rounding std::nearbyint gives, without a libm
/// call per element, so the loops below vectorize).
constexpr float kRoundMagic = 12582912.0F;

/// One code (see Conv2dInputCodes). lo / hi = qmin / qmax - zero_point: clamping to integer
/// bounds before rounding equals rounding before clamping. A NaN fails both comparisons and
/// becomes lo; +-Inf clamp to hi / lo.
inline uint8_t code_of(float x, float inverse, float lo, float hi, int32_t zero_point) {
  float v = x * inverse;
  v = v > lo ? v : lo;
  v = v < hi ? v : hi;
  v = (v + kRoundMagic) - kRoundMagic;
  return static_cast<uint8_t>(static_cast<int32_t>(v) + zero_point);
}

void check_code_range(int64_t zero_point, int64_t qmin, int64_t qmax) {
  TORCH_CHECK_VALUE(0 <= qmin && qmin <= zero_point && zero_point <= qmax && qmax <= 255,
                    "quantize_conv2d_input: expected 0 <= qmin <= zero_point <= qmax <= 255, "
                    "got qmin ", qmin, ", zero_point ", zero_point, ", qmax ", qmax);
}

c10::OperatorHandle operator_handle(const char* name) {
  TORCH_CHECK_NOT_IMPLEMENTED(conv2d_int8_onednn_available(), "INT8 Conv2d: this LibTorch has "
                              "no oneDNN INT8 convolution (operator ", name, " not registered)");
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

}  // namespace

bool conv2d_int8_onednn_available() {
  static const bool available = [] {
    auto& dispatcher = c10::Dispatcher::singleton();
    return dispatcher.findSchema({"onednn::qconv_prepack", ""}).has_value() &&
           dispatcher.findSchema({"onednn::qconv2d_pointwise", ""}).has_value();
  }();
  return available;
}

Conv2dInputCodes quantize_conv2d_input(const at::Tensor& x, float scale, int64_t zero_point,
                                       int64_t qmin, int64_t qmax) {
  check_code_range(zero_point, qmin, qmax);
  TORCH_CHECK_VALUE(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_cpu(),
                    "quantize_conv2d_input: expected a float32 CPU tensor [N, C, H, W], got ",
                    x.scalar_type(), " ", x.sizes(), " on ", x.device());
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const bool nhwc = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  const at::Tensor in = nhwc ? x : x.contiguous();
  Conv2dInputCodes result;
  result.codes = at::empty({n, c, h, w}, x.options().dtype(at::kByte),
                           at::MemoryFormat::ChannelsLast);
  const float inverse = 1.0F / scale;  // float32, as LibTorch's fake-quantize kernels
  const auto lo = static_cast<float>(qmin - zero_point);
  const auto hi = static_cast<float>(qmax - zero_point);
  const auto zp = static_cast<int32_t>(zero_point);
  const float* src = in.const_data_ptr<float>();
  uint8_t* dst = result.codes.mutable_data_ptr<uint8_t>();
  // One task per image row (n, y): both layouts write the row's W * C codes contiguously.
  std::vector<uint8_t> bad_row(static_cast<size_t>(n * h), 0);
  at::parallel_for(0, n * h, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      uint8_t* out = dst + row * w * c;
      bool bad = false;
      if (nhwc) {
        const float* from = src + row * w * c;
        for (int64_t i = 0; i < w * c; ++i) {
          bad |= (from[i] - from[i]) != 0.0F;  // NaN or +-Inf
          out[i] = code_of(from[i], inverse, lo, hi, zp);
        }
      } else {
        const int64_t image = row / h, y = row % h;
        for (int64_t ch = 0; ch < c; ++ch) {
          const float* from = src + ((image * c + ch) * h + y) * w;
          for (int64_t i = 0; i < w; ++i) {
            bad |= (from[i] - from[i]) != 0.0F;  // NaN or +-Inf
            out[i * c + ch] = code_of(from[i], inverse, lo, hi, zp);
          }
        }
      }
      bad_row[row] = bad ? 1 : 0;
    }
  });
  result.nonfinite_in_sample.assign(static_cast<size_t>(n), 0);
  for (int64_t row = 0; row < n * h; ++row) result.nonfinite_in_sample[row / h] |= bad_row[row];
  return result;
}

Conv2dInputCodes quantize_conv2d_input_ref(const at::Tensor& x, float scale, int64_t zero_point,
                                           int64_t qmin, int64_t qmax) {
  check_code_range(zero_point, qmin, qmax);
  const at::Tensor inverse = at::reciprocal(at::scalar_tensor(scale, at::kFloat));
  at::Tensor v = (x.to(at::kFloat) * inverse).round() + zero_point;
  v = at::where(at::isnan(v), at::scalar_tensor(static_cast<double>(qmin)), v);
  Conv2dInputCodes result;
  result.codes = v.clamp(static_cast<double>(qmin), static_cast<double>(qmax))
                     .to(at::kByte)
                     .contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor bad =
      at::isfinite(x).logical_not_().flatten(1).any(1).to(at::kByte).contiguous();
  const uint8_t* flags = bad.const_data_ptr<uint8_t>();
  result.nonfinite_in_sample.assign(flags, flags + bad.numel());
  return result;
}

Conv2dInt8Weight pack_conv2d_int8(const at::Tensor& weight_codes, const at::Tensor& weight_scale,
                                  double input_scale, int64_t input_zero_point,
                                  std::vector<int64_t> stride, std::vector<int64_t> padding,
                                  std::vector<int64_t> dilation, int64_t groups, bool relu) {
  TORCH_CHECK_VALUE(weight_codes.dim() == 4 && weight_codes.scalar_type() == at::kChar &&
                        weight_codes.is_cpu(),
                    "pack_conv2d_int8: expected int8 CPU weight codes [out, in / groups, kh, "
                    "kw], got ", weight_codes.scalar_type(), " ", weight_codes.sizes(), " on ",
                    weight_codes.device());
  Conv2dInt8Weight result;
  result.weight_scale = weight_scale.to(at::kCPU, at::kFloat).contiguous();
  result.weight_codes = weight_codes.contiguous();
  result.weight_code_minus_128 =
      result.weight_codes.numel() > 0 && result.weight_codes.min().item<int64_t>() < -127;
  result.weight_zero_point = at::zeros({weight_codes.size(0)}, at::kLong);
  result.input_scale = input_scale;
  result.input_zero_point = input_zero_point;
  result.stride = std::move(stride);
  result.padding = std::move(padding);
  result.dilation = std::move(dilation);
  result.groups = groups;
  result.relu = relu;
  // onednn::qconv_prepack(Tensor weight, Tensor w_scales, float x_scale, int x_zp, int[] stride,
  //                       int[] padding, int[] dilation, int groups, int[]? x_shape) -> Tensor
  // x_shape stays None: the batch size varies between calls.
  static const c10::OperatorHandle prepack = operator_handle("onednn::qconv_prepack");
  torch::jit::Stack stack{weight_codes.contiguous(),
                          result.weight_scale,
                          input_scale,
                          input_zero_point,
                          c10::List<int64_t>(result.stride),
                          c10::List<int64_t>(result.padding),
                          c10::List<int64_t>(result.dilation),
                          groups,
                          c10::IValue()};
  prepack.callBoxed(&stack);
  result.packed = stack.at(0).toTensor();
  return result;
}

namespace {

// The exact float twin of qconv2d_pointwise: sum (code_x - zero_point) * code_w in a float type
// that holds every partial sum, then the scales, the bias and the ReLU in float32.
at::Tensor conv2d_int8_exact_float(const at::Tensor& input_codes, const Conv2dInt8Weight& weight,
                                   const at::Tensor& bias) {
  const at::Tensor& w = weight.weight_codes;
  // exact_codes_dtype bounds each product by 127 * 127; a -128 weight code makes it 127 * 128,
  // which the same bound covers for ceil(k * 128 / 127) terms.
  const int64_t k = w.size(1) * w.size(2) * w.size(3);
  const at::ScalarType dtype =
      exact_codes_dtype(weight.weight_code_minus_128 ? k + (k + 126) / 127 : k);
  const at::Tensor x = input_codes.to(dtype).sub_(static_cast<double>(weight.input_zero_point));
  at::Tensor y = at::conv2d(x, w.to(dtype), {}, weight.stride, weight.padding, weight.dilation,
                            weight.groups)
                     .to(at::kFloat);
  const at::Tensor channel_scale =
      (weight.weight_scale * static_cast<float>(weight.input_scale)).reshape({1, -1, 1, 1});
  y = bias.defined() ? at::addcmul(bias.reshape({1, -1, 1, 1}), y, channel_scale)
                     : y.mul_(channel_scale);
  if (weight.relu) y.relu_();
  return y.contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace

at::Tensor conv2d_int8_onednn(const at::Tensor& input_codes, const Conv2dInt8Weight& weight,
                              const at::Tensor& bias) {
  if (!onednn_int8_sums_exact()) return conv2d_int8_exact_float(input_codes, weight, bias);
  // onednn::qconv2d_pointwise(Tensor qx, float x_scale, int x_zero_point, Tensor qw,
  //     Tensor w_scale, Tensor w_zero_point, Tensor? bias, int[] stride, int[] padding,
  //     int[] dilation, int groups, float output_scale, int output_zero_point,
  //     ScalarType? output_dtype, str attr, Scalar?[] scalars, str? algorithm) -> Tensor
  // output_dtype float32 with output scale 1 and zero point 0 gives the dequantized result.
  static const c10::OperatorHandle conv = operator_handle("onednn::qconv2d_pointwise");
  torch::jit::Stack stack{input_codes,
                          weight.input_scale,
                          weight.input_zero_point,
                          weight.packed,
                          weight.weight_scale,
                          weight.weight_zero_point,
                          bias.defined() ? c10::IValue(bias) : c10::IValue(),
                          c10::List<int64_t>(weight.stride),
                          c10::List<int64_t>(weight.padding),
                          c10::List<int64_t>(weight.dilation),
                          weight.groups,
                          1.0,
                          int64_t{0},
                          at::kFloat,
                          std::string(weight.relu ? "relu" : "none"),
                          c10::List<std::optional<at::Scalar>>(),
                          c10::IValue()};
  conv.callBoxed(&stack);
  return stack.at(0).toTensor();
}

}  // namespace tquant::detail
