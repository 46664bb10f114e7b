#pragma once

// Launchers of the element-wise INT8 kernels (kernels/int8_kernels.cu). Private to the library;
// signatures use only at::Tensor, integers and floats, so the host code (int8_cuda.cpp) needs no
// CUDA header. All launchers expect validated, contiguous tensors on the current device and run
// on the current stream.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace tquant::kernels {

/// q[i] = clamp(rint(x[i] * inv_scale), -127, 127); x float32 / bf16 / fp16, q int8, same numel.
void launch_quantize_per_tensor_int8(const at::Tensor& x, float inv_scale, const at::Tensor& q);

/// One block per row of x [M, K]: scale[m] = max(amax / 127, FLT_EPSILON), q = codes.
void launch_quantize_per_token_int8(const at::Tensor& x, const at::Tensor& q,
                                    const at::Tensor& scale);

/// The activation scale of an epilogue: per row from device memory (device != nullptr, stride 1),
/// one value from device memory (stride 0), or one value known on the host (device == nullptr).
struct RowScale {
  const float* device = nullptr;
  int64_t stride = 0;
  float value = 1.0f;
};

/// out[m, n] = cast(gelu?(((float(acc[m, n]) * xs[m]) * w_scale[n]) + bias[n])), out float32 /
/// bf16 / fp16 [M, N]; or, when out is int8, clamp(rint(y * inv_out_scale), -127, 127).
/// bias: float32 [N] or undefined.
void launch_int32_epilogue(const at::Tensor& acc, const RowScale& x_scale,
                           const at::Tensor& w_scale, const at::Tensor& bias, bool gelu,
                           float inv_out_scale, const at::Tensor& out);

}  // namespace tquant::kernels
