// Element-wise INT8 kernels around the cuBLASLt GEMM: activation quantization (per tensor, per
// token) and the int32 epilogue (dequantize + bias + GELU, or requantize). Memory-bound: 16-byte
// loads per thread where the pointers and row lengths allow it, grid-stride loops, float32
// arithmetic with explicit round-to-nearest intrinsics (__fmul_rn, __fadd_rn, never contracted
// into FMAs) so that the ATen twins in int8_ref.cpp reproduce the results bit for bit.

#include "int8_kernels.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdint>

#include "tquant/cuda_int8.h"

namespace tquant::kernels {

namespace {

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// clamp(rint(x * inv), -127, 127): rintf rounds half to even, like at::round.
__device__ __forceinline__ int8_t quantize_code(float x, float inv) {
  const float q = fminf(fmaxf(rintf(__fmul_rn(x, inv)), -127.0f), 127.0f);
  return static_cast<int8_t>(__float2int_rz(q));
}

template <typename InT, int VEC>
__global__ void quantize_per_tensor_int8_kernel(const InT* __restrict__ x, int8_t* __restrict__ q,
                                                float inv, int64_t numel) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t packs = numel / VEC;
  for (int64_t i = first; i < packs; i += stride) {
    const auto in = reinterpret_cast<const Pack<InT, VEC>*>(x)[i];
    Pack<int8_t, VEC> out;
#pragma unroll
    for (int j = 0; j < VEC; ++j) out.v[j] = quantize_code(to_float(in.v[j]), inv);
    reinterpret_cast<Pack<int8_t, VEC>*>(q)[i] = out;
  }
  for (int64_t i = packs * VEC + first; i < numel; i += stride) {
    q[i] = quantize_code(to_float(x[i]), inv);
  }
}

// max that propagates NaN like at::amax (fmaxf would drop it): NaN if either operand is NaN.
__device__ __forceinline__ float max_propagate_nan(float a, float b) {
  return (a > b || isnan(a)) ? a : b;
}

// Max over the block (NaN if any thread holds NaN); blockDim.x is a multiple of 32
// (per_token_launch_config).
__device__ __forceinline__ float block_max(float v) {
  __shared__ float warp_max[32];
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    v = max_propagate_nan(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? warp_max[lane] : 0.0f;
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      v = max_propagate_nan(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    if (lane == 0) warp_max[0] = v;
  }
  __syncthreads();
  return warp_max[0];
}

// One block per row: pass 1 reads the row for its amax, pass 2 reads it again (from L1/L2: a
// BERT row is 1.5-12 KB) and writes the codes.
template <typename InT, int VEC>
__global__ void quantize_per_token_int8_kernel(const InT* __restrict__ x, int8_t* __restrict__ q,
                                               float* __restrict__ scale, int64_t K) {
  const int64_t row = blockIdx.x;
  const InT* xr = x + row * K;
  int8_t* qr = q + row * K;
  const int64_t packs = K / VEC;  // the launcher guarantees K % VEC == 0
  float amax = 0.0f;
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    const auto in = reinterpret_cast<const Pack<InT, VEC>*>(xr)[i];
#pragma unroll
    for (int j = 0; j < VEC; ++j) amax = max_propagate_nan(amax, fabsf(to_float(in.v[j])));
  }
  amax = block_max(amax);
  // As the twin's clamp_min(FLT_EPSILON), which keeps NaN: a row with a NaN gets scale NaN, so the
  // epilogue makes its whole output row NaN (its codes, -127 from quantize_code, do not matter).
  const float r = __fdiv_rn(amax, 127.0f);
  const float s = isnan(r) ? r : fmaxf(r, FLT_EPSILON);
  const float inv = __fdiv_rn(1.0f, s);
  if (threadIdx.x == 0) scale[row] = s;
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    const auto in = reinterpret_cast<const Pack<InT, VEC>*>(xr)[i];
    Pack<int8_t, VEC> out;
#pragma unroll
    for (int j = 0; j < VEC; ++j) out.v[j] = quantize_code(to_float(in.v[j]), inv);
    reinterpret_cast<Pack<int8_t, VEC>*>(qr)[i] = out;
  }
}

__device__ __forceinline__ float gelu_erf(float v) {
  return 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
}

template <typename OutT>
__device__ __forceinline__ OutT epilogue_out(float y, float inv_out) {
  return from_float<OutT>(y);
}
template <>
__device__ __forceinline__ int8_t epilogue_out<int8_t>(float y, float inv_out) {
  return quantize_code(y, inv_out);
}

// acc [M, N] int32 -> out [M, N]; VEC consecutive columns per thread (N % VEC == 0).
template <typename OutT, int VEC>
__global__ void int32_epilogue_kernel(const int32_t* __restrict__ acc,
                                      const float* __restrict__ xs_ptr, int64_t xs_stride,
                                      float xs_value, const float* __restrict__ w_scale,
                                      const float* __restrict__ bias, bool gelu, float inv_out,
                                      OutT* __restrict__ out, int64_t M, int64_t N) {
  const int64_t packs_per_row = N / VEC;
  const int64_t packs = M * packs_per_row;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < packs;
       i += stride) {
    const int64_t row = i / packs_per_row;
    const int64_t col = (i - row * packs_per_row) * VEC;
    const float xs = xs_ptr != nullptr ? xs_ptr[row * xs_stride] : xs_value;
    const auto a = reinterpret_cast<const Pack<int32_t, VEC>*>(acc)[i];
    const auto ws = *reinterpret_cast<const Pack<float, VEC>*>(w_scale + col);
    Pack<float, VEC> b;
    if (bias != nullptr) {
      b = *reinterpret_cast<const Pack<float, VEC>*>(bias + col);
    }
    Pack<OutT, VEC> o;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      float y = __fmul_rn(__fmul_rn(__int2float_rn(a.v[j]), xs), ws.v[j]);
      if (bias != nullptr) y = __fadd_rn(y, b.v[j]);
      if (gelu) y = gelu_erf(y);
      o.v[j] = epilogue_out<OutT>(y, inv_out);
    }
    reinterpret_cast<Pack<OutT, VEC>*>(out)[i] = o;
  }
}

int sm_count() {
  return at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Calls f(tag) with a value of the device type of x's dtype.
template <typename F>
void dispatch_float(at::ScalarType t, const char* op, F&& f) {
  switch (t) {
    case at::kFloat: f(float{}); break;
    case at::kBFloat16: f(__nv_bfloat16{}); break;
    case at::kHalf: f(__half{}); break;
    default: TORCH_CHECK_VALUE(false, op, ": unsupported dtype ", t);
  }
}

}  // namespace

void launch_quantize_per_tensor_int8(const at::Tensor& x, float inv_scale, const at::Tensor& q) {
  const int64_t numel = x.numel();
  if (numel == 0) return;
  const bool aligned = aligned16(x.data_ptr()) && aligned16(q.data_ptr());
  const auto cfg = detail::elementwise_launch_config(numel, x.element_size(), aligned, sm_count());
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_float(x.scalar_type(), "quantize_per_tensor_int8_cuda", [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(x.data_ptr());
    int8_t* qp = static_cast<int8_t*>(q.data_ptr());
    constexpr int kVec = 16 / sizeof(T);
    if (cfg.vec == kVec) {
      quantize_per_tensor_int8_kernel<T, kVec>
          <<<cfg.blocks, cfg.threads, 0, stream>>>(xp, qp, inv_scale, numel);
    } else {
      quantize_per_tensor_int8_kernel<T, 1>
          <<<cfg.blocks, cfg.threads, 0, stream>>>(xp, qp, inv_scale, numel);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void launch_quantize_per_token_int8(const at::Tensor& x, const at::Tensor& q,
                                    const at::Tensor& scale) {
  const int64_t M = x.size(0);
  const int64_t K = x.size(1);
  if (M == 0) return;
  const bool aligned = aligned16(x.data_ptr()) && aligned16(q.data_ptr());
  const auto cfg = detail::per_token_launch_config(M, K, x.element_size(), aligned);
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_float(x.scalar_type(), "quantize_per_token_int8_cuda", [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(x.data_ptr());
    int8_t* qp = static_cast<int8_t*>(q.data_ptr());
    float* sp = scale.data_ptr<float>();
    constexpr int kVec = 16 / sizeof(T);
    if (cfg.vec == kVec) {
      quantize_per_token_int8_kernel<T, kVec><<<cfg.blocks, cfg.threads, 0, stream>>>(xp, qp, sp, K);
    } else {
      quantize_per_token_int8_kernel<T, 1><<<cfg.blocks, cfg.threads, 0, stream>>>(xp, qp, sp, K);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void launch_int32_epilogue(const at::Tensor& acc, const RowScale& x_scale,
                           const at::Tensor& w_scale, const at::Tensor& bias, bool gelu,
                           float inv_out_scale, const at::Tensor& out) {
  const int64_t M = acc.size(0);
  const int64_t N = acc.size(1);
  if (M == 0 || N == 0) return;
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  const bool aligned = aligned16(acc.data_ptr()) && aligned16(w_scale.data_ptr()) &&
                       (bp == nullptr || aligned16(bp)) && aligned16(out.data_ptr());
  // Four int32 per thread (one 16-byte load); outputs are 16 (f32), 8 (bf16/f16) or 4 (int8) bytes.
  const auto cfg = detail::elementwise_launch_config(M * N, 4, aligned, sm_count(), N, 4);
  auto stream = at::cuda::getCurrentCUDAStream();
  const auto launch = [&](auto tag) {
    using T = decltype(tag);
    T* op = static_cast<T*>(out.data_ptr());
    const int32_t* ap = acc.data_ptr<int32_t>();
    const float* wp = w_scale.data_ptr<float>();
    if (cfg.vec == 4) {
      int32_epilogue_kernel<T, 4><<<cfg.blocks, cfg.threads, 0, stream>>>(
          ap, x_scale.device, x_scale.stride, x_scale.value, wp, bp, gelu, inv_out_scale, op, M, N);
    } else {
      int32_epilogue_kernel<T, 1><<<cfg.blocks, cfg.threads, 0, stream>>>(
          ap, x_scale.device, x_scale.stride, x_scale.value, wp, bp, gelu, inv_out_scale, op, M, N);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (out.scalar_type() == at::kChar) {
    launch(int8_t{});
  } else {
    dispatch_float(out.scalar_type(), "int32 epilogue", launch);
  }
}

}  // namespace tquant::kernels
