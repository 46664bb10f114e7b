// CUDA entry points of tquant/cuda_int8.h (compiled only with TQUANT_WITH_CUDA_KERNELS): the
// cuBLASLt int8 GEMMs, and the host side of the element-wise kernels (int8_kernels.cu).
//
// cuBLASLt, "TN" regular ordering (the only IMMA path on Hopper; COL32 layouts are
// Ampere/Turing only, research/perf.md 2.1): D^T[N, M] = W[N, K] * X[M, K]^T with
// A = W (op T, lda = K), B = X (op N, ldb = K), D (ldd = N), CUBLAS_COMPUTE_32I with scale type
// CUDA_R_32I (int8 x int8 -> int32; "epilogue not supported" for this type, hence our own).

#include "tquant/cuda_int8.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/Exception.h>
#include <cublasLt.h>

#include <atomic>
#include <cfloat>
#include <cstdint>
#include <string>

#include "int8_checks.h"
#include "int8_kernels.h"

namespace tquant {

namespace {

using detail::CublasLtInt8Problem;
using detail::DeviceRule;

// Every cuBLASLt failure names the call, the status and the problem (m, n, k, leading dims).
void lt_check(cublasStatus_t status, const char* call, const char* op,
              const CublasLtInt8Problem& p) {
  TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS, op, ": ", call, " failed with ",
              cublasLtGetStatusName(status), " (", detail::describe(p), ")");
}

// RAII holders for the cuBLASLt descriptors.
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  ~MatmulDesc() {
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};
struct MatrixLayout {
  cublasLtMatrixLayout_t layout = nullptr;
  ~MatrixLayout() {
    if (layout != nullptr) cublasLtMatrixLayoutDestroy(layout);
  }
};
struct MatmulPreference {
  cublasLtMatmulPreference_t pref = nullptr;
  ~MatmulPreference() {
    if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
  }
};

struct CachedAlgo {
  cublasLtMatmulAlgo_t algo;
  size_t workspace_bytes = 0;
};

detail::KeyedCache<CachedAlgo>& algo_cache() {
  static detail::KeyedCache<CachedAlgo> cache;
  return cache;
}

std::atomic<size_t> g_heuristic_queries{0};

void make_layout(MatrixLayout& l, cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld,
                 int64_t batch, int64_t stride, const char* op, const CublasLtInt8Problem& p) {
  lt_check(cublasLtMatrixLayoutCreate(&l.layout, type, static_cast<uint64_t>(rows),
                                      static_cast<uint64_t>(cols), ld),
           "cublasLtMatrixLayoutCreate", op, p);
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    lt_check(cublasLtMatrixLayoutSetAttribute(l.layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                              &count, sizeof(count)),
             "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)", op, p);
    lt_check(cublasLtMatrixLayoutSetAttribute(l.layout,
                                              CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                              &stride, sizeof(stride)),
             "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)", op, p);
  }
}

// Contiguous, at least 4-byte aligned (cuBLASLt's minimum for IMMA), K padded to p.k with zeros.
at::Tensor prepare_operand(const at::Tensor& t, int64_t k_padded) {
  at::Tensor r = t;
  if (r.size(-1) != k_padded) r = at::constant_pad_nd(r, {0, k_padded - r.size(-1)}, 0);
  r = r.contiguous();
  if (reinterpret_cast<std::uintptr_t>(r.data_ptr()) % 4 != 0) {
    r = r.clone(at::MemoryFormat::Contiguous);
  }
  return r;
}

// out (int32) = a (weights, [batch,] m x k row-major) x b ([batch,] n x k row-major)^T in
// cuBLASLt's column-major view: out^T = A^T B. a, b and out contiguous on the current device.
void cublaslt_int8_gemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out,
                        const CublasLtInt8Problem& p, const char* op) {
  const std::string violation = detail::regular_ordering_violation(p);
  TORCH_CHECK(violation.empty(), op, ": ", violation, " (", detail::describe(p), ")");
  cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  MatmulDesc desc;
  lt_check(cublasLtMatmulDescCreate(&desc.desc, CUBLAS_COMPUTE_32I, CUDA_R_32I),
           "cublasLtMatmulDescCreate", op, p);
  const cublasOperation_t trans_a = CUBLAS_OP_T;
  const cublasOperation_t trans_b = CUBLAS_OP_N;
  lt_check(cublasLtMatmulDescSetAttribute(desc.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                          sizeof(trans_a)),
           "cublasLtMatmulDescSetAttribute(TRANSA)", op, p);
  lt_check(cublasLtMatmulDescSetAttribute(desc.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                          sizeof(trans_b)),
           "cublasLtMatmulDescSetAttribute(TRANSB)", op, p);

  MatrixLayout la, lb, lc;
  make_layout(la, CUDA_R_8I, p.k, p.m, p.lda, p.batch, p.stride_a, op, p);
  make_layout(lb, CUDA_R_8I, p.k, p.n, p.ldb, p.batch, p.stride_b, op, p);
  make_layout(lc, CUDA_R_32I, p.m, p.n, p.ldc, p.batch, p.stride_c, op, p);

  const int align_a = detail::pointer_alignment(reinterpret_cast<std::uintptr_t>(a.data_ptr()));
  const int align_b = detail::pointer_alignment(reinterpret_cast<std::uintptr_t>(b.data_ptr()));
  const int align_c = detail::pointer_alignment(reinterpret_cast<std::uintptr_t>(out.data_ptr()));
  const auto key = detail::make_int8_gemm_key(static_cast<int>(c10::cuda::current_device()), p,
                                              align_a, align_b, align_c, at::kInt);

  const CachedAlgo chosen = algo_cache().get_or_compute(key, [&]() {
    MatmulPreference pref;
    lt_check(cublasLtMatmulPreferenceCreate(&pref.pref), "cublasLtMatmulPreferenceCreate", op, p);
    const uint64_t max_workspace = kCublasLtWorkspaceBytes;
    lt_check(cublasLtMatmulPreferenceSetAttribute(pref.pref,
                                                  CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &max_workspace, sizeof(max_workspace)),
             "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)", op, p);
    const uint32_t aa = align_a, ab = align_b, ac = align_c;
    lt_check(cublasLtMatmulPreferenceSetAttribute(
                 pref.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof(aa)),
             "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_A_BYTES)", op, p);
    lt_check(cublasLtMatmulPreferenceSetAttribute(
                 pref.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof(ab)),
             "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_B_BYTES)", op, p);
    lt_check(cublasLtMatmulPreferenceSetAttribute(
                 pref.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof(ac)),
             "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_C_BYTES)", op, p);
    lt_check(cublasLtMatmulPreferenceSetAttribute(
                 pref.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof(ac)),
             "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_D_BYTES)", op, p);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    g_heuristic_queries.fetch_add(1);
    lt_check(cublasLtMatmulAlgoGetHeuristic(handle, desc.desc, la.layout, lb.layout, lc.layout,
                                            lc.layout, pref.pref, 1, &result, &found),
             "cublasLtMatmulAlgoGetHeuristic", op, p);
    TORCH_CHECK(found > 0 && result.state == CUBLAS_STATUS_SUCCESS, op,
                ": cublasLtMatmulAlgoGetHeuristic found no int8 algorithm (state ",
                cublasLtGetStatusName(result.state), ", ", detail::describe(p),
                ", alignments a/b/c ", align_a, "/", align_b, "/", align_c, " bytes)");
    CachedAlgo c;
    c.algo = result.algo;
    c.workspace_bytes = result.workspaceSize;
    return c;
  });

  // Workspace from the caching allocator on the current stream (freed back to the cache when
  // the DataPtr goes out of scope; the allocator orders reuse after this stream's work).
  c10::DataPtr workspace;
  if (chosen.workspace_bytes > 0) {
    workspace = c10::cuda::CUDACachingAllocator::get()->allocate(chosen.workspace_bytes);
  }
  const int32_t alpha = 1;
  const int32_t beta = 0;
  lt_check(cublasLtMatmul(handle, desc.desc, &alpha, a.data_ptr(), la.layout, b.data_ptr(),
                          lb.layout, &beta, out.data_ptr(), lc.layout, out.data_ptr(), lc.layout,
                          &chosen.algo, workspace.get(), chosen.workspace_bytes, stream),
           "cublasLtMatmul", op, p);
}

at::Tensor gemm_impl(const at::Tensor& x_q, const at::Tensor& w_q, const char* op) {
  const int64_t M = x_q.size(0);
  const int64_t N = w_q.size(0);
  const int64_t K = x_q.size(1);
  auto out = at::empty({M, N}, x_q.options().dtype(at::kInt));
  if (M == 0 || N == 0) return out;
  if (K == 0) return out.zero_();
  const auto p = detail::int8_gemm_problem(M, N, K);
  const auto a = prepare_operand(w_q, p.k);
  const auto b = prepare_operand(x_q, p.k);
  cublaslt_int8_gemm(a, b, out, p, op);
  return out;
}

kernels::RowScale row_scale_of(const at::Tensor& x_scale) {
  kernels::RowScale rs;
  if (x_scale.numel() == 1 && x_scale.is_cpu()) {
    rs.value = x_scale.item<float>();
  } else {
    rs.device = x_scale.data_ptr<float>();
    rs.stride = x_scale.numel() == 1 ? 0 : 1;
  }
  return rs;
}

at::Tensor float_bias(const std::optional<at::Tensor>& bias) {
  if (!bias.has_value() || !bias->defined()) return {};
  return bias->to(at::kFloat).contiguous();
}

}  // namespace

bool cuda_int8_built() { return true; }

bool cuda_int8_available() { return c10::cuda::device_count() > 0; }

size_t detail::int8_gemm_heuristic_queries() { return g_heuristic_queries.load(); }

at::Tensor int8_gemm_cuda(const at::Tensor& x_q, const at::Tensor& w_q) {
  constexpr const char* op = "int8_gemm_cuda";
  detail::check_int8_gemm_args(x_q, w_q, op, DeviceRule::kCuda);
  c10::cuda::CUDAGuard guard(x_q.device());
  return gemm_impl(x_q, w_q, op);
}

at::Tensor int8_bmm_cuda(const at::Tensor& a_q, const at::Tensor& b_q) {
  constexpr const char* op = "int8_bmm_cuda";
  detail::check_int8_bmm_args(a_q, b_q, op, DeviceRule::kCuda);
  c10::cuda::CUDAGuard guard(a_q.device());
  const int64_t B = a_q.size(0);
  const int64_t M = a_q.size(1);
  const int64_t N = b_q.size(1);
  const int64_t K = a_q.size(2);
  auto out = at::empty({B, M, N}, a_q.options().dtype(at::kInt));
  if (B == 0 || M == 0 || N == 0) return out;
  if (K == 0) return out.zero_();
  const auto p = detail::int8_gemm_problem(M, N, K, B);
  const auto a = prepare_operand(b_q, p.k);  // cuBLASLt's A is the [N, K] operand
  const auto b = prepare_operand(a_q, p.k);
  cublaslt_int8_gemm(a, b, out, p, op);
  return out;
}

at::Tensor quantize_per_tensor_int8_cuda(const at::Tensor& x, double scale) {
  constexpr const char* op = "quantize_per_tensor_int8_cuda";
  detail::check_float_activation(x, op, DeviceRule::kCuda);
  detail::check_positive_scale(scale, op, "scale");
  c10::cuda::CUDAGuard guard(x.device());
  const auto xc = x.contiguous();
  auto q = at::empty(x.sizes(), xc.options().dtype(at::kChar));
  kernels::launch_quantize_per_tensor_int8(xc, 1.0f / static_cast<float>(scale), q);
  return q;
}

std::pair<at::Tensor, at::Tensor> quantize_per_token_int8_cuda(const at::Tensor& x) {
  constexpr const char* op = "quantize_per_token_int8_cuda";
  detail::check_float_activation(x, op, DeviceRule::kCuda);
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": expected x of shape [..., K], got a 0-dim tensor");
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t K = x.size(-1);
  const auto x2 = x.reshape({-1, K}).contiguous();
  auto q = at::empty(x2.sizes(), x2.options().dtype(at::kChar));
  auto scale = at::empty({x2.size(0)}, x2.options().dtype(at::kFloat));
  if (K == 0) return {q.view(x.sizes()), scale.fill_(FLT_EPSILON)};
  kernels::launch_quantize_per_token_int8(x2, q, scale);
  return {q.view(x.sizes()), scale};
}

at::Tensor dequantize_int32_cuda(const at::Tensor& acc, const at::Tensor& x_scale,
                                 const at::Tensor& w_scale,
                                 const std::optional<at::Tensor>& bias, bool gelu,
                                 at::ScalarType out_dtype) {
  constexpr const char* op = "dequantize_int32_cuda";
  detail::check_epilogue_args(acc, x_scale, w_scale, bias, op, DeviceRule::kCuda);
  detail::check_out_dtype(out_dtype, op);
  c10::cuda::CUDAGuard guard(acc.device());
  const auto accc = acc.contiguous();
  const auto xs = x_scale.contiguous();
  const auto ws = w_scale.contiguous();
  const auto b = float_bias(bias);
  auto out = at::empty(acc.sizes(), accc.options().dtype(out_dtype));
  kernels::launch_int32_epilogue(accc, row_scale_of(xs), ws, b, gelu, 1.0f, out);
  return out;
}

at::Tensor requantize_int32_cuda(const at::Tensor& acc, const at::Tensor& x_scale,
                                 const at::Tensor& w_scale,
                                 const std::optional<at::Tensor>& bias, double out_scale,
                                 bool gelu) {
  constexpr const char* op = "requantize_int32_cuda";
  detail::check_epilogue_args(acc, x_scale, w_scale, bias, op, DeviceRule::kCuda);
  detail::check_positive_scale(out_scale, op, "out_scale");
  c10::cuda::CUDAGuard guard(acc.device());
  const auto accc = acc.contiguous();
  const auto xs = x_scale.contiguous();
  const auto ws = w_scale.contiguous();
  const auto b = float_bias(bias);
  auto out = at::empty(acc.sizes(), accc.options().dtype(at::kChar));
  kernels::launch_int32_epilogue(accc, row_scale_of(xs), ws, b, gelu,
                                 1.0f / static_cast<float>(out_scale), out);
  return out;
}

at::Tensor int8_linear_cuda(const at::Tensor& x, std::optional<double> input_scale,
                            const at::Tensor& w_q, const at::Tensor& w_scale,
                            const std::optional<at::Tensor>& bias, bool gelu) {
  constexpr const char* op = "int8_linear_cuda";
  detail::check_linear_args(x, input_scale, w_q, w_scale, bias, op, DeviceRule::kCuda);
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t K = w_q.size(1);
  const int64_t N = w_q.size(0);
  auto out_shape = x.sizes().vec();
  out_shape.back() = N;
  const auto x2 = x.reshape({-1, K}).contiguous();
  const int64_t M = x2.size(0);
  auto out = at::empty({M, N}, x2.options());
  if (M == 0 || N == 0) return out.view(out_shape);

  auto q = at::empty({M, K}, x2.options().dtype(at::kChar));
  at::Tensor token_scale;
  kernels::RowScale rs;
  if (input_scale.has_value()) {
    rs.value = static_cast<float>(*input_scale);
    kernels::launch_quantize_per_tensor_int8(x2, 1.0f / rs.value, q);
  } else {
    token_scale = at::empty({M}, x2.options().dtype(at::kFloat));
    if (K == 0) {
      token_scale.fill_(FLT_EPSILON);
    } else {
      kernels::launch_quantize_per_token_int8(x2, q, token_scale);
    }
    rs.device = token_scale.data_ptr<float>();
    rs.stride = 1;
  }
  const auto acc = gemm_impl(q, w_q, op);
  const auto ws = w_scale.contiguous();
  const auto b = float_bias(bias);
  kernels::launch_int32_epilogue(acc, rs, ws, b, gelu, 1.0f, out);
  return out.view(out_shape);
}

}  // namespace tquant
