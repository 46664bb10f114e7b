// CUDA entry points of tquant/cuda_int8.h (compiled only with TQUANT_WITH_CUDA_KERNELS): the
// cuBLASLt int8 GEMMs, and the host side of the element-wise kernels (int8_kernels.cu).
//
// cuBLASLt, "TN" regular ordering (the only IMMA path on Hopper; COL32 layouts are
// Ampere/Turing only, per cuBLASLt's documentation): D^T[N, M] = W[N, K] * X[M, K]^T with
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
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <atomic>
#include <cfloat>
#include <cstdint>
#include <cstdlib>
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

// What the cache remembers per key: the heuristic's algorithm, or that this problem needs the
// default algorithm without workspace, or M padded to kInt8GemmPaddedM.
enum class Int8GemmPlan { kHeuristic, kDefaultAlgo, kPadM };

struct CachedAlgo {
  Int8GemmPlan plan = Int8GemmPlan::kHeuristic;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_bytes = 0;
};

detail::KeyedCache<CachedAlgo>& algo_cache() {
  static detail::KeyedCache<CachedAlgo> cache;
  return cache;
}

std::atomic<size_t> g_heuristic_queries{0};

// TQUANT_INT8_GEMM_PAD_SMALL_M=1: pad every M below kInt8GemmPaddedM up front (read once).
bool pad_small_m_always() {
  static const bool on = [] {
    const char* v = std::getenv("TQUANT_INT8_GEMM_PAD_SMALL_M");
    return v != nullptr && std::string(v) == "1";
  }();
  return on;
}

// check_cublaslt_version, run once per process by the GEMMs; its error is kept and raised again.
void check_cublaslt_version_once() {
  static const std::string error = []() -> std::string {
    try {
      check_cublaslt_version();
      return {};
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    }
  }();
  TORCH_CHECK(error.empty(), error);
}

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

// The descriptors of one int8 TN problem, created per call (RAII).
struct Int8MatmulCall {
  MatmulDesc desc;
  MatrixLayout la, lb, lc;

  Int8MatmulCall(const CublasLtInt8Problem& p, const char* op) {
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
    make_layout(la, CUDA_R_8I, p.k, p.m, p.lda, p.batch, p.stride_a, op, p);
    make_layout(lb, CUDA_R_8I, p.k, p.n, p.ldb, p.batch, p.stride_b, op, p);
    make_layout(lc, CUDA_R_32I, p.m, p.n, p.ldc, p.batch, p.stride_c, op, p);
  }

  // The heuristic's best algorithm for these alignments, or plan kDefaultAlgo when it has none.
  CachedAlgo query(cublasLtHandle_t handle, int align_a, int align_b, int align_c,
                   const CublasLtInt8Problem& p, const char* op) const {
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
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
        handle, desc.desc, la.layout, lb.layout, lc.layout, lc.layout, pref.pref, 1, &result,
        &found);
    CachedAlgo c;
    if (status == CUBLAS_STATUS_NOT_SUPPORTED || found == 0 ||
        result.state != CUBLAS_STATUS_SUCCESS) {
      c.plan = Int8GemmPlan::kDefaultAlgo;
      return c;
    }
    lt_check(status, "cublasLtMatmulAlgoGetHeuristic", op, p);
    c.algo = result.algo;
    c.workspace_bytes = result.workspaceSize;
    return c;
  }

  // algo == nullptr: cuBLASLt's default algorithm (its own heuristic), no workspace.
  cublasStatus_t run(cublasLtHandle_t handle, const at::Tensor& a, const at::Tensor& b,
                     const at::Tensor& out, const CachedAlgo* algo) const {
    // Workspace from the caching allocator on the current stream (freed back to the cache when
    // the DataPtr goes out of scope; the allocator orders reuse after this stream's work).
    c10::DataPtr workspace;
    const size_t workspace_bytes = algo != nullptr ? algo->workspace_bytes : 0;
    if (workspace_bytes > 0) {
      workspace = c10::cuda::CUDACachingAllocator::get()->allocate(workspace_bytes);
    }
    const int32_t alpha = 1;
    const int32_t beta = 0;
    return cublasLtMatmul(handle, desc.desc, &alpha, a.data_ptr(), la.layout, b.data_ptr(),
                          lb.layout, &beta, out.data_ptr(), lc.layout, out.data_ptr(), lc.layout,
                          algo != nullptr ? &algo->algo : nullptr, workspace.get(),
                          workspace_bytes, at::cuda::getCurrentCUDAStream());
  }
};

void cublaslt_int8_gemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out,
                        const CublasLtInt8Problem& p, const char* op);

// The product with b's rows (M, cuBLASLt's n) zero-padded to kInt8GemmPaddedM; out gets the
// first M rows. For problems cuBLASLt has no int8 kernel for at small M.
void cublaslt_int8_gemm_padded_m(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out,
                                 const CublasLtInt8Problem& p, const char* op) {
  TORCH_WARN_ONCE(op, ": cuBLASLt has no int8 kernel for M=", p.n, " (", detail::describe(p),
                  "); M is zero-padded to ", kInt8GemmPaddedM, " rows on every such call "
                  "(slower; warned once)");
  const int64_t rows = b.dim() - 2;  // the M dimension of b ([batch,] M, K)
  const auto b_padded = at::constant_pad_nd(b, {0, 0, 0, kInt8GemmPaddedM - p.n}, 0);
  auto out_sizes = out.sizes().vec();
  out_sizes[rows] = kInt8GemmPaddedM;
  auto out_padded = at::empty(out_sizes, out.options());
  auto padded = detail::int8_gemm_problem(kInt8GemmPaddedM, p.m, p.k, p.batch);
  cublaslt_int8_gemm(a, b_padded, out_padded, padded, op);
  out.copy_(out_padded.narrow(rows, 0, p.n));
}

// out (int32) = a (weights, [batch,] m x k row-major) x b ([batch,] n x k row-major)^T in
// cuBLASLt's column-major view: out^T = A^T B. a, b and out contiguous on the current device.
// Plan per key: the heuristic's algorithm; if there is none or cuBLASLt answers NOT_SUPPORTED,
// the default algorithm without workspace; if that is NOT_SUPPORTED too, M padded.
void cublaslt_int8_gemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out,
                        const CublasLtInt8Problem& p, const char* op) {
  check_cublaslt_version_once();
  const std::string violation = detail::regular_ordering_violation(p);
  TORCH_CHECK(violation.empty(), op, ": ", violation, " (", detail::describe(p), ")");
  if (pad_small_m_always() && p.n < kInt8GemmPaddedM) {
    cublaslt_int8_gemm_padded_m(a, b, out, p, op);
    return;
  }
  cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  const Int8MatmulCall call(p, op);

  // Alignments of the base pointers and, when batched, of the batch strides (bytes).
  const auto address = [](const at::Tensor& t) {
    return reinterpret_cast<std::uintptr_t>(t.data_ptr());
  };
  const int align_a = detail::operand_alignment(address(a), p.stride_a, p.batch);
  const int align_b = detail::operand_alignment(address(b), p.stride_b, p.batch);
  const int align_c = detail::operand_alignment(address(out), p.stride_c * 4, p.batch);
  const auto key = detail::make_int8_gemm_key(static_cast<int>(c10::cuda::current_device()), p,
                                              align_a, align_b, align_c, at::kInt);

  CachedAlgo plan = algo_cache().get_or_compute(
      key, [&]() { return call.query(handle, align_a, align_b, align_c, p, op); });
  if (plan.plan == Int8GemmPlan::kHeuristic) {
    const cublasStatus_t status = call.run(handle, a, b, out, &plan);
    if (status != CUBLAS_STATUS_NOT_SUPPORTED) {
      lt_check(status, "cublasLtMatmul", op, p);
      return;
    }
    plan.plan = Int8GemmPlan::kDefaultAlgo;
    algo_cache().put(key, plan);
  }
  if (plan.plan == Int8GemmPlan::kDefaultAlgo) {
    TORCH_WARN_ONCE(op, ": cuBLASLt's heuristic gave no usable int8 algorithm for ",
                    detail::describe(p), "; using its default algorithm without workspace "
                    "(warned once)");
    const cublasStatus_t status = call.run(handle, a, b, out, nullptr);
    if (status != CUBLAS_STATUS_NOT_SUPPORTED || p.n >= kInt8GemmPaddedM) {
      lt_check(status, "cublasLtMatmul (default algorithm, no workspace)", op, p);
      return;
    }
    plan.plan = Int8GemmPlan::kPadM;
    algo_cache().put(key, plan);
  }
  cublaslt_int8_gemm_padded_m(a, b, out, p, op);
}

void warn_if_k_padded(const CublasLtInt8Problem& p, int64_t K, const char* op) {
  if (p.k_padded) {
    TORCH_WARN_ONCE(op, ": K=", K, " is not a multiple of ", kInt8GemmDimMultiple,
                    ": both operands are zero-padded to K=", p.k, " on every call (two extra "
                    "copies; store the weight with K padded instead; warned once)");
  }
}

at::Tensor gemm_impl(const at::Tensor& x_q, const at::Tensor& w_q, const char* op) {
  const int64_t M = x_q.size(0);
  const int64_t N = w_q.size(0);
  const int64_t K = x_q.size(1);
  auto out = at::empty({M, N}, x_q.options().dtype(at::kInt));
  if (M == 0 || N == 0) return out;
  if (K == 0) return out.zero_();  // an empty sum; cuBLASLt takes no k = 0
  const auto p = detail::int8_gemm_problem(M, N, K);
  warn_if_k_padded(p, K, op);
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

CudaLibraryVersions cuda_library_versions() {
  CudaLibraryVersions v;
#if defined(CUBLASLT_VERSION)
  v.cublaslt_compiled = CUBLASLT_VERSION;
#else
  v.cublaslt_compiled = CUBLAS_VERSION;  // cuBLAS 13: cublasLt.h includes cublas_api.h's
#endif
  v.cublaslt_loaded = cublasLtGetVersion();
  v.cudart_compiled = CUDART_VERSION;
  if (cudaRuntimeGetVersion(&v.cudart_loaded) != cudaSuccess) v.cudart_loaded = 0;
  const auto path_of = [](const void* symbol) {
    Dl_info info{};
    return dladdr(symbol, &info) != 0 && info.dli_fname != nullptr ? std::string(info.dli_fname)
                                                                    : std::string();
  };
  v.cublaslt_path = path_of(reinterpret_cast<const void*>(&cublasLtGetVersion));
  v.cudart_path = path_of(reinterpret_cast<const void*>(&cudaRuntimeGetVersion));
  return v;
}

void check_cublaslt_version() {
  const auto v = cuda_library_versions();
  const auto why = detail::cublaslt_version_mismatch(v.cublaslt_compiled, v.cublaslt_loaded);
  TORCH_CHECK(why.empty(), "tquant CUDA INT8: ", why, "; loaded from '", v.cublaslt_path,
              "'. Put the cuBLASLt that PyTorch loads (the wheel's site-packages/nvidia/cu13/lib, "
              "or the CUDA toolkit tquant was built with) first, e.g. through LD_LIBRARY_PATH "
              "(docs/backends.md, \"Shared libraries\")");
}

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
  if (K == 0) return out.zero_();  // an empty sum; cuBLASLt takes no k = 0
  const auto p = detail::int8_gemm_problem(M, N, K, B);
  warn_if_k_padded(p, K, op);
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
  const auto x2 = x.reshape({detail::leading_rows(x), K}).contiguous();
  auto q = at::empty(x2.sizes(), x2.options().dtype(at::kChar));
  auto scale = at::empty({x2.size(0)}, x2.options().dtype(at::kFloat));
  if (K == 0) return {q.view(x.sizes()), scale.fill_(FLT_EPSILON)};  // as the twin
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
  const auto x2 = x.reshape({detail::leading_rows(x), K}).contiguous();
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
