#pragma once

// CUDA INT8 execution: cuBLASLt int8 x int8 -> int32 GEMMs ("TN" regular ordering, the only IMMA
// path on Hopper) and the fused element-wise kernels around them (activation quantization,
// dequantization / requantization epilogues). Plain interface: at::Tensor in, at::Tensor out; no
// CUDA header is included here, so this header is usable from a build without CUDA
// (docs/backends.md, section "CUDA").
//
// Every kernel entry point `f_cuda` has a twin `f_cuda_ref` written with plain ATen ops. The twins
// run on CPU or CUDA tensors and are always compiled: integer results of a kernel equal its twin
// bit for bit; float results agree within the tolerances named below.
//
// Example (a converted Linear on a CUDA tensor x [..., K] bf16, weight codes w_q [N, K] int8 and
// per-channel scales w_s [N] float32, both on the same GPU):
//
//     if (tquant::cuda_int8_available()) {
//       auto y  = tquant::int8_linear_cuda(x, /*input_scale=*/0.02, w_q, w_s, bias);  // static
//       auto yd = tquant::int8_linear_cuda(x, std::nullopt, w_q, w_s, bias);          // per token
//     }

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

namespace tquant {

/// True when this tquant was compiled with its CUDA kernels (nvcc and a CUDA LibTorch were found
/// at configure time and TQUANT_WITH_CUDA was ON).
bool cuda_int8_built();

/// True when cuda_int8_built() and at least one CUDA device is visible. The kernels are compiled
/// for the architectures named at configure time (default sm_90: H100 / H200).
bool cuda_int8_available();

/// The cuBLASLt and CUDA runtime that this process uses, next to the ones tquant was compiled
/// against. Versions as the libraries encode them: cuBLAS major * 10000 + minor * 100 + patch
/// (13.1.0 -> 130100), CUDA runtime major * 1000 + minor * 10 (13.0 -> 13000). All 0 and paths
/// empty without CUDA kernels; needs no GPU.
struct CudaLibraryVersions {
  /// CUBLAS_VERSION of the cublas_api.h that cublasLt.h included when tquant was compiled
  /// (cuBLAS 13 defines no separate CUBLASLT_VERSION).
  size_t cublaslt_compiled = 0;
  /// cublasLtGetVersion() of the libcublasLt loaded in this process.
  size_t cublaslt_loaded = 0;
  /// File the loaded cublasLtGetVersion comes from (dladdr), e.g. .../nvidia/cu13/lib/libcublasLt.so.13.
  std::string cublaslt_path;
  /// CUDART_VERSION at compile time, cudaRuntimeGetVersion() now, and the loaded file.
  int cudart_compiled = 0;
  int cudart_loaded = 0;
  std::string cudart_path;
};
CudaLibraryVersions cuda_library_versions();

/// Throws a c10::Error naming both versions and the loaded file when the loaded cuBLASLt cannot
/// serve the code tquant was compiled for (a different major version, or an older one than the
/// build's). The CUDA GEMMs run
/// this check once, on their first call. Does nothing without CUDA kernels.
void check_cublaslt_version();

/// Largest K the int32 accumulators take without overflow for any int8 input:
/// 128 * 128 * K < 2^31  (codes from the tquant quantizers lie in [-127, 127]).
constexpr int64_t kInt8GemmMaxK = 131071;

/// cuBLASLt's IMMA regular-ordering kernels need m, k and the leading dimensions to be multiples
/// of this (cuBLASLt's documentation of cublasLtMatmul for CUDA_R_8I, regular ordering).
/// Under the TN mapping below that is N and K.
constexpr int64_t kInt8GemmDimMultiple = 4;

/// Workspace handed to cuBLASLt (taken from the CUDA caching allocator at each call): 32 MiB,
/// what cuBLAS recommends on Hopper.
constexpr size_t kCublasLtWorkspaceBytes = size_t{32} << 20;

/// Small-M fallback: when cuBLASLt has no int8 kernel for a problem (the heuristic finds none and
/// the default algorithm without workspace is NOT_SUPPORTED too), M is zero-padded to this many
/// rows, the padded product is computed and its first M rows are kept (PyTorch's _int_mm refuses
/// M <= 16 for the same reason). Setting TQUANT_INT8_GEMM_PAD_SMALL_M=1 in the environment pads
/// every M below it up front (a workaround to try if small-M results are ever wrong,
/// pytorch#107671).
constexpr int64_t kInt8GemmPaddedM = 32;

/// y_int32[M, N] = x_q[M, K] * w_q[N, K]^T, exact int32 accumulators (no rounding, no
/// saturation while K <= kInt8GemmMaxK).
///   x_q: int8 [M, K] (activations, row-major), w_q: int8 [N, K] (weight, row-major), same GPU.
/// cuBLASLt mapping (column-major view): D^T[N, M] = W * X^T, A = w_q (op T, lda = K),
/// B = x_q (op N, ldb = K), C = D (ldc = N), m = N, n = M, k = K; CUBLAS_COMPUTE_32I, scale type
/// CUDA_R_32I, alpha = 1, beta = 0.
/// - N must be a multiple of 4 (pad the weight's rows once when you prepare it).
/// - K that is not a multiple of 4 is zero-padded on every call (copies of both operands: slow;
///   prepare weights with K padded instead; a one-time warning says so).
/// - M is free. Non-contiguous or less than 4-byte-aligned operands are copied first.
/// The cuBLASLt algorithm is chosen once per (device, shape, alignment) by the heuristic and
/// cached; if there is none, or cuBLASLt answers NOT_SUPPORTED, the call is retried with the
/// default algorithm and no workspace, then with M padded to kInt8GemmPaddedM (the choice is
/// cached too, and a one-time warning names the slow path). The stream is the current one
/// (at::cuda::getCurrentCUDAStream()).
/// Example:  auto acc = tquant::int8_gemm_cuda(x_q, w_q);   // int32 [M, N]
at::Tensor int8_gemm_cuda(const at::Tensor& x_q, const at::Tensor& w_q);

/// Code level, unlike the CPU's float-level int8_bmm_cpu (float in, float out; tquant/
/// int8_attention.h): the float-level CUDA entry point is int8_linear_cuda, and converted
/// QuantMatMul / QuantAttention compose these on CUDA tensors.
/// Batched twin for attention matmuls: y[b, M, N] = a_q[b, M, K] * b_q[b, N, K]^T, int32.
/// One strided-batched cuBLASLt call; same rules as int8_gemm_cuda (N % 4 == 0; K padded).
/// Example (scores = Q K^T):  auto s = tquant::int8_bmm_cuda(q_codes, k_codes);  // [B*H, S, S]
at::Tensor int8_bmm_cuda(const at::Tensor& a_q, const at::Tensor& b_q);

/// Static activation quantization in one pass, any shape, x float32 / bfloat16 / float16:
///   q = clamp(round_half_even(x * (1 / scale)), -127, 127)   as int8, same shape as x.
/// 1 / scale is computed once in float32 (as the CPU path, tquant/gemm.h). NaN inputs give
/// unspecified codes.
/// Example:  auto q = tquant::quantize_per_tensor_int8_cuda(x, 0.02);
at::Tensor quantize_per_tensor_int8_cuda(const at::Tensor& x, double scale);

/// Dynamic per-token quantization, x [..., K] viewed as M = product of the leading dims rows; one
/// block per row computes the row's amax and quantizes it in the same kernel:
///   scale[m] = max(amax_k |x[m, k]| / 127, FLT_EPSILON)   (float32 division)
///   q[m, k]  = clamp(round_half_even(x[m, k] * (1 / scale[m])), -127, 127)
/// NaN propagates: a row holding a NaN gets scale NaN (as at::amax and clamp_min do in the twin),
/// so every output of that row after the epilogue is NaN; the codes of such a row are
/// unspecified. K = 0 gives scale FLT_EPSILON.
/// Returns {q int8, same shape as x; scale float32 [M]}.
/// Example:  auto [q, s] = tquant::quantize_per_token_int8_cuda(x);
std::pair<at::Tensor, at::Tensor> quantize_per_token_int8_cuda(const at::Tensor& x);

/// Fused epilogue, one pass over acc int32 [M, N]:
///   y[m, n] = ((float(acc[m, n]) * x_scale[m or 0]) * w_scale[n]) + bias[n]    (float32, in this
///   order, each step rounded once), then GELU (exact, erf) if asked, then cast to out_dtype.
///   x_scale: float32 [1] (per tensor; on the GPU, or a CPU scalar) or [M] (per token, on the GPU);
///   w_scale: float32 [N]; bias: [N] any float dtype (converted to float32) or nullopt;
///   out_dtype: float32, bfloat16 or float16.
/// Example:  auto y = tquant::dequantize_int32_cuda(acc, s_x, w_s, bias, true, at::kBFloat16);
at::Tensor dequantize_int32_cuda(const at::Tensor& acc, const at::Tensor& x_scale,
                                 const at::Tensor& w_scale,
                                 const std::optional<at::Tensor>& bias, bool gelu,
                                 at::ScalarType out_dtype);

/// Requantizing epilogue for chaining two INT8 layers: y as in dequantize_int32_cuda (float32,
/// optional GELU), then q = clamp(round_half_even(y * (1 / out_scale)), -127, 127) as int8.
/// Example:  auto q2 = tquant::requantize_int32_cuda(acc, s_x, w_s, bias, s_next);
at::Tensor requantize_int32_cuda(const at::Tensor& acc, const at::Tensor& x_scale,
                                 const at::Tensor& w_scale,
                                 const std::optional<at::Tensor>& bias, double out_scale,
                                 bool gelu = false);

/// The whole INT8 Linear on a CUDA tensor: quantize (static per-tensor when input_scale is set,
/// dynamic per-token when it is nullopt), int8_gemm_cuda, fused dequantize (+ bias, + GELU).
///   x: float32 / bfloat16 / float16 [..., K]; w_q: int8 [N, K]; w_scale: float32 [N];
///   bias: [N] or nullopt. Output: [..., N] in x's dtype.
/// Three launches: quantize, GEMM, epilogue.
at::Tensor int8_linear_cuda(const at::Tensor& x, std::optional<double> input_scale,
                            const at::Tensor& w_q, const at::Tensor& w_scale,
                            const std::optional<at::Tensor>& bias, bool gelu = false);

// ---- Reference twins (plain ATen ops; CPU or CUDA tensors; always compiled) ------------------

/// Exact: float64 matmul of the codes (every partial sum is an integer below 2^53), cast to int32.
at::Tensor int8_gemm_cuda_ref(const at::Tensor& x_q, const at::Tensor& w_q);
at::Tensor int8_bmm_cuda_ref(const at::Tensor& a_q, const at::Tensor& b_q);
/// Bit-exact twins of the quantizers (same float32 operations in the same order).
at::Tensor quantize_per_tensor_int8_cuda_ref(const at::Tensor& x, double scale);
std::pair<at::Tensor, at::Tensor> quantize_per_token_int8_cuda_ref(const at::Tensor& x);
/// Same float32 operations in the same order as the kernels (bit-identical without GELU); GELU is
/// ATen's (erf), whose float32 erf may differ from CUDA's erff by a few ulps.
at::Tensor dequantize_int32_cuda_ref(const at::Tensor& acc, const at::Tensor& x_scale,
                                     const at::Tensor& w_scale,
                                     const std::optional<at::Tensor>& bias, bool gelu,
                                     at::ScalarType out_dtype);
at::Tensor requantize_int32_cuda_ref(const at::Tensor& acc, const at::Tensor& x_scale,
                                     const at::Tensor& w_scale,
                                     const std::optional<at::Tensor>& bias, double out_scale,
                                     bool gelu = false);
at::Tensor int8_linear_cuda_ref(const at::Tensor& x, std::optional<double> input_scale,
                                const at::Tensor& w_q, const at::Tensor& w_scale,
                                const std::optional<at::Tensor>& bias, bool gelu = false);

/// Without GELU the epilogues (and int8_linear_cuda) equal their twins bit for bit in every
/// output dtype: the same float32 multiplications and addition, each rounded once, then the same
/// round-to-nearest-even cast. With GELU they agree within these tolerances, as
/// |out - ref| <= tol * (|ref| + max|ref| / 1024):
/// float32 output: a few ulps (erff vs ATen's erf, possible FMA contraction in erff);
/// bfloat16 / float16 output: one ulp of the output format (both round a float32 that may
/// differ in its last bits), i.e. 2^-7 and 2^-10 relative.
constexpr double kCudaDequantF32Tol = 1e-5;
constexpr double kCudaDequantBf16Tol = 1.0 / 128;
constexpr double kCudaDequantF16Tol = 1.0 / 1024;
/// Requantized codes: exact without GELU; with GELU within this many codes (erf differences can
/// move y across a rounding boundary).
constexpr int64_t kCudaRequantGeluCodeTol = 1;

// Internal (tests and the converted modules use it): not part of the API, may change in any
// release without deprecation.
namespace detail {

/// n rounded up to a multiple of `multiple` (> 0).
int64_t round_up(int64_t n, int64_t multiple);

/// The cuBLASLt problem for a (batched) y[M, N] = x[M, K] w[N, K]^T in the TN mapping, with K
/// padded to kInt8GemmDimMultiple. Column-major cuBLASLt names: m = N, n = M, k = K_padded,
/// lda = ldb = k, ldc = m; strides between batches a (weights) = m * k, b = n * k, c = m * n.
struct CublasLtInt8Problem {
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  bool k_padded = false;  // true when K was not a multiple of 4 and the operands need padding
};
CublasLtInt8Problem int8_gemm_problem(int64_t M, int64_t N, int64_t K, int64_t batch = 1);
/// "m=.. n=.. k=.. lda=.. ldb=.. ldc=.. batch=.." for error messages.
std::string describe(const CublasLtInt8Problem& p);
/// Empty when cuBLASLt's regular-ordering rules hold (m, k, lda, ldb, ldc multiples of 4),
/// otherwise what is wrong.
std::string regular_ordering_violation(const CublasLtInt8Problem& p);

/// Largest of 16, 8, 4, 2, 1 that divides the address (cuBLASLt's alignment preference).
int pointer_alignment(std::uintptr_t address);

/// Alignment to declare for an operand of a (batched) call: the base pointer's, and for batch > 1
/// also that of the batch stride in bytes (every batch's matrix starts at base + i * stride).
int operand_alignment(std::uintptr_t address, int64_t batch_stride_bytes, int64_t batch);

/// Rows of x [..., K] seen as a matrix: the product of all dimensions but the last (1 for 1-d x).
/// Unlike reshape({-1, K}) it is defined for K = 0.
int64_t leading_rows(const at::Tensor& x);

/// Empty when a cuBLASLt of version `loaded` can run code compiled against version `compiled`
/// (same major version, loaded >= compiled: cuBLAS keeps backward compatibility within a major
/// version, not forward), otherwise why not. Versions as in CudaLibraryVersions.
std::string cublaslt_version_mismatch(size_t compiled, size_t loaded);

/// Key of the heuristic cache: the algorithm depends on the device, the problem, the types and
/// the operand alignments.
struct Int8GemmKey {
  int device = 0;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  int align_a = 0, align_b = 0, align_c = 0;
  int out_type = 0;  // an at::ScalarType value (int32 today)
  bool operator==(const Int8GemmKey& o) const;
};
Int8GemmKey make_int8_gemm_key(int device, const CublasLtInt8Problem& p, int align_a,
                               int align_b, int align_c, at::ScalarType out_type);
struct Int8GemmKeyHash {
  size_t operator()(const Int8GemmKey& key) const;
};

/// Thread-safe memo: compute(key) runs once per key (a concurrent first call may compute twice;
/// the first result inserted wins, so every caller sees one value per key).
template <class Value>
class KeyedCache {
 public:
  Value get_or_compute(const Int8GemmKey& key, const std::function<Value()>& compute) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = map_.find(key);
      if (it != map_.end()) return it->second;
    }
    Value value = compute();
    std::lock_guard<std::mutex> lock(mutex_);
    ++computed_;
    return map_.emplace(key, std::move(value)).first->second;
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return map_.size();
  }
  size_t computed() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return computed_;
  }
  /// Replaces the value of `key` (a cached algorithm that turned out to be unsupported).
  void put(const Int8GemmKey& key, Value value) {
    std::lock_guard<std::mutex> lock(mutex_);
    map_.insert_or_assign(key, std::move(value));
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    map_.clear();
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<Int8GemmKey, Value, Int8GemmKeyHash> map_;
  size_t computed_ = 0;
};

/// Number of cuBLASLt heuristic queries made so far in this process (one per new key); 0 without
/// CUDA. Lets tests check that the cache works.
size_t int8_gemm_heuristic_queries();

/// Launch configuration of the element-wise kernels (quantize per tensor, epilogues): vec elements
/// per thread (16-byte loads when the pointers are aligned and the row length allows it), threads
/// per block, blocks (grid-stride loop, capped at a few waves of the SMs).
struct LaunchConfig {
  int64_t blocks = 0;
  int threads = 0;
  int vec = 1;
};
/// numel elements of elem_size bytes; `aligned` says whether all pointers are 16-byte aligned;
/// `row` (0 = none) is a length that a vector must not straddle (N for the epilogues).
LaunchConfig elementwise_launch_config(int64_t numel, int64_t elem_size, bool aligned,
                                       int sm_count, int64_t row = 0, int max_vec = 16);
/// One block per row of K elements: vec = 16 / elem_size when K % vec == 0 and aligned, threads =
/// warps enough for K / vec (32 to 512), blocks = rows.
LaunchConfig per_token_launch_config(int64_t rows, int64_t K, int64_t elem_size, bool aligned);

}  // namespace detail

}  // namespace tquant
