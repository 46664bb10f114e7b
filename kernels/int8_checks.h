#pragma once

// Argument validation shared by the CUDA kernels' entry points and their reference twins
// (kernels/int8_cuda.cpp, kernels/int8_ref.cpp). Private to the library.

#include <ATen/core/Tensor.h>

#include <optional>

namespace tquant::detail {

/// Where the tensors of a call must live: kCuda for the kernels, kAny for the ATen twins (any
/// device, but all tensors on the same one).
enum class DeviceRule { kCuda, kAny };

/// x_q int8 [M, K], w_q int8 [N, K], same device, K <= kInt8GemmMaxK; with kCuda also on a CUDA
/// device and N % 4 == 0.
void check_int8_gemm_args(const at::Tensor& x_q, const at::Tensor& w_q, const char* op,
                          DeviceRule rule);
/// a_q int8 [B, M, K], b_q int8 [B, N, K].
void check_int8_bmm_args(const at::Tensor& a_q, const at::Tensor& b_q, const char* op,
                         DeviceRule rule);
/// x float32 / bfloat16 / float16, defined; with kCuda on a CUDA device.
void check_float_activation(const at::Tensor& x, const char* op, DeviceRule rule);
/// scale > 0, finite, and its float32 reciprocal finite.
void check_positive_scale(double scale, const char* op, const char* what);
/// acc int32 [M, N]; x_scale float32 with 1 or M elements; w_scale float32 [N]; bias [N] float or
/// nullopt; devices; out_dtype float32 / bfloat16 / float16 (kChar allowed when allow_int8).
void check_epilogue_args(const at::Tensor& acc, const at::Tensor& x_scale,
                         const at::Tensor& w_scale, const std::optional<at::Tensor>& bias,
                         const char* op, DeviceRule rule);
void check_out_dtype(at::ScalarType out_dtype, const char* op);
/// x [..., K] float, w_q int8 [N, K], w_scale float32 [N], bias [N] or nullopt, same device.
void check_linear_args(const at::Tensor& x, const std::optional<double>& input_scale,
                       const at::Tensor& w_q, const at::Tensor& w_scale,
                       const std::optional<at::Tensor>& bias, const char* op, DeviceRule rule);

}  // namespace tquant::detail
