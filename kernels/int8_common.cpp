// Plain C++ parts of the CUDA INT8 backend, compiled with or without CUDA: the cuBLASLt problem
// mapping and padding rule, the heuristic-cache key, the launch configurations and the argument
// checks. Unit-tested without a GPU (tests/cuda_int8_test.cpp).

#include "tquant/cuda_int8.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "int8_checks.h"

namespace tquant {
namespace detail {

int64_t round_up(int64_t n, int64_t multiple) {
  TORCH_CHECK_VALUE(multiple > 0, "round_up: expected a positive multiple, got ", multiple);
  TORCH_CHECK_VALUE(n >= 0, "round_up: expected n >= 0, got ", n);
  return (n + multiple - 1) / multiple * multiple;
}

CublasLtInt8Problem int8_gemm_problem(int64_t M, int64_t N, int64_t K, int64_t batch) {
  TORCH_CHECK_VALUE(M >= 0 && N >= 0 && K >= 0 && batch >= 1,
                    "int8_gemm_problem: expected M, N, K >= 0 and batch >= 1, got M=", M,
                    " N=", N, " K=", K, " batch=", batch);
  CublasLtInt8Problem p;
  p.m = N;  // rows of op(A) = W [N, K]
  p.n = M;  // columns of B = X^T
  p.k = round_up(K, kInt8GemmDimMultiple);
  p.k_padded = p.k != K;
  p.lda = p.k;  // W row-major [N, K] = column-major K x N
  p.ldb = p.k;  // X row-major [M, K] = column-major K x M
  p.ldc = p.m;  // Y row-major [M, N] = column-major N x M
  p.batch = batch;
  p.stride_a = p.m * p.k;
  p.stride_b = p.n * p.k;
  p.stride_c = p.m * p.n;
  return p;
}

std::string describe(const CublasLtInt8Problem& p) {
  std::ostringstream os;
  os << "m=" << p.m << " n=" << p.n << " k=" << p.k << " lda=" << p.lda << " ldb=" << p.ldb
     << " ldc=" << p.ldc << " batch=" << p.batch;
  if (p.batch > 1) {
    os << " stride_a=" << p.stride_a << " stride_b=" << p.stride_b << " stride_c=" << p.stride_c;
  }
  return os.str();
}

std::string regular_ordering_violation(const CublasLtInt8Problem& p) {
  std::ostringstream os;
  const auto bad = [&](const char* name, int64_t v) {
    if (v % kInt8GemmDimMultiple != 0) {
      os << (os.tellp() > 0 ? ", " : "") << name << "=" << v;
    }
  };
  bad("m (= N)", p.m);
  bad("k (= K)", p.k);
  bad("lda", p.lda);
  bad("ldb", p.ldb);
  bad("ldc", p.ldc);
  if (os.tellp() == 0) return {};
  return "cuBLASLt int8 regular ordering needs m, k and leading dimensions that are multiples "
         "of 4; not: " + os.str();
}

int pointer_alignment(std::uintptr_t address) {
  for (int a : {16, 8, 4, 2}) {
    if (address % static_cast<std::uintptr_t>(a) == 0) return a;
  }
  return 1;
}

int operand_alignment(std::uintptr_t address, int64_t batch_stride_bytes, int64_t batch) {
  const int base = pointer_alignment(address);
  if (batch <= 1) return base;
  TORCH_CHECK_VALUE(batch_stride_bytes >= 0, "operand_alignment: expected a batch stride >= 0, "
                    "got ", batch_stride_bytes);
  return std::min(base, pointer_alignment(static_cast<std::uintptr_t>(batch_stride_bytes)));
}

int64_t leading_rows(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() >= 1, "leading_rows: expected a tensor of shape [..., K], got a 0-dim "
                    "tensor");
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  return rows;
}

std::string cublaslt_version_mismatch(size_t compiled, size_t loaded) {
  const auto text = [](size_t v) {
    return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
           std::to_string(v % 100) + " (" + std::to_string(v) + ")";
  };
  if (compiled / 10000 != loaded / 10000) {
    return "the loaded cuBLASLt " + text(loaded) + " has another major version than the " +
           text(compiled) + " tquant was compiled against";
  }
  if (loaded < compiled) {
    return "the loaded cuBLASLt " + text(loaded) + " is older than the " + text(compiled) +
           " tquant was compiled against";
  }
  return {};
}

bool Int8GemmKey::operator==(const Int8GemmKey& o) const {
  return device == o.device && m == o.m && n == o.n && k == o.k && batch == o.batch &&
         lda == o.lda && ldb == o.ldb && ldc == o.ldc && stride_a == o.stride_a &&
         stride_b == o.stride_b && stride_c == o.stride_c && align_a == o.align_a &&
         align_b == o.align_b && align_c == o.align_c && out_type == o.out_type;
}

Int8GemmKey make_int8_gemm_key(int device, const CublasLtInt8Problem& p, int align_a,
                               int align_b, int align_c, at::ScalarType out_type) {
  Int8GemmKey key;
  key.device = device;
  key.m = p.m;
  key.n = p.n;
  key.k = p.k;
  key.batch = p.batch;
  key.lda = p.lda;
  key.ldb = p.ldb;
  key.ldc = p.ldc;
  // Strides only matter for batched calls; keep unbatched keys independent of them.
  key.stride_a = p.batch > 1 ? p.stride_a : 0;
  key.stride_b = p.batch > 1 ? p.stride_b : 0;
  key.stride_c = p.batch > 1 ? p.stride_c : 0;
  key.align_a = align_a;
  key.align_b = align_b;
  key.align_c = align_c;
  key.out_type = static_cast<int>(out_type);
  return key;
}

size_t Int8GemmKeyHash::operator()(const Int8GemmKey& key) const {
  // boost::hash_combine over the fields.
  size_t h = 0;
  const auto mix = [&h](int64_t v) {
    h ^= std::hash<int64_t>{}(v) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  };
  for (int64_t v : {int64_t{key.device}, key.m, key.n, key.k, key.batch, key.lda, key.ldb,
                    key.ldc, key.stride_a, key.stride_b, key.stride_c, int64_t{key.align_a},
                    int64_t{key.align_b}, int64_t{key.align_c}, int64_t{key.out_type}}) {
    mix(v);
  }
  return h;
}

LaunchConfig elementwise_launch_config(int64_t numel, int64_t elem_size, bool aligned,
                                       int sm_count, int64_t row, int max_vec) {
  TORCH_CHECK_VALUE(numel >= 0 && elem_size > 0 && sm_count > 0 && max_vec > 0,
                    "elementwise_launch_config: bad arguments numel=", numel,
                    " elem_size=", elem_size, " sm_count=", sm_count, " max_vec=", max_vec);
  LaunchConfig c;
  c.threads = 256;
  c.vec = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(16 / elem_size, max_vec)));
  if (!aligned || (row > 0 && row % c.vec != 0)) c.vec = 1;
  const int64_t work = (numel + c.vec - 1) / c.vec;
  // A grid-stride loop over at most 8 waves of 256-thread blocks keeps enough loads in flight
  // on any size and avoids launching millions of short blocks.
  const int64_t max_blocks = int64_t{sm_count} * 8;
  c.blocks = std::max<int64_t>(1, std::min<int64_t>((work + c.threads - 1) / c.threads, max_blocks));
  return c;
}

LaunchConfig per_token_launch_config(int64_t rows, int64_t K, int64_t elem_size, bool aligned) {
  TORCH_CHECK_VALUE(rows >= 0 && K >= 0 && elem_size > 0,
                    "per_token_launch_config: bad arguments rows=", rows, " K=", K,
                    " elem_size=", elem_size);
  LaunchConfig c;
  c.vec = static_cast<int>(std::max<int64_t>(1, 16 / elem_size));
  if (!aligned || K % c.vec != 0) c.vec = 1;
  const int64_t chunks = (K + c.vec - 1) / c.vec;
  c.threads = static_cast<int>(std::clamp<int64_t>(round_up(chunks, 32), 32, 512));
  c.blocks = rows;
  return c;
}

// ---- argument checks ---------------------------------------------------------------------------

namespace {

void check_defined(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " is an undefined tensor");
}

void check_device(const at::Tensor& t, const char* op, const char* name, DeviceRule rule) {
  if (rule == DeviceRule::kCuda) {
    TORCH_CHECK_VALUE(t.is_cuda(), op, ": expected ", name, " on a CUDA device, got ",
                      t.device());
  }
}

void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                       const char* b_name, const char* op) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": expected ", a_name, " and ", b_name,
                    " on the same device, got ", a.device(), " and ", b.device());
}

void check_dtype(const at::Tensor& t, at::ScalarType expected, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.scalar_type() == expected, op, ": expected ", name, " of dtype ", expected,
                    ", got ", t.scalar_type());
}

bool is_float_activation(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

void check_k(int64_t K, const char* op) {
  TORCH_CHECK_VALUE(K <= kInt8GemmMaxK, op, ": K=", K, " exceeds kInt8GemmMaxK=", kInt8GemmMaxK,
                    " (int32 accumulators could overflow)");
}

void check_n_multiple(int64_t N, const char* op, const char* name) {
  TORCH_CHECK_VALUE(N % kInt8GemmDimMultiple == 0, op, ": expected N (rows of ", name,
                    ") to be a multiple of ", kInt8GemmDimMultiple,
                    " for cuBLASLt's int8 regular ordering, got N=", N,
                    "; pad the weight's rows when preparing it");
}

}  // namespace

void check_int8_gemm_args(const at::Tensor& x_q, const at::Tensor& w_q, const char* op,
                          DeviceRule rule) {
  check_defined(x_q, op, "x_q");
  check_defined(w_q, op, "w_q");
  check_dtype(x_q, at::kChar, op, "x_q");
  check_dtype(w_q, at::kChar, op, "w_q");
  TORCH_CHECK_VALUE(x_q.dim() == 2, op, ": expected x_q of shape [M, K], got ", x_q.sizes());
  TORCH_CHECK_VALUE(w_q.dim() == 2, op, ": expected w_q of shape [N, K], got ", w_q.sizes());
  TORCH_CHECK_VALUE(x_q.size(1) == w_q.size(1), op, ": K mismatch: x_q is ", x_q.sizes(),
                    " ([M, K]) and w_q is ", w_q.sizes(), " ([N, K])");
  check_k(x_q.size(1), op);
  if (rule == DeviceRule::kCuda) check_n_multiple(w_q.size(0), op, "w_q");
  check_device(x_q, op, "x_q", rule);
  check_device(w_q, op, "w_q", rule);
  check_same_device(x_q, "x_q", w_q, "w_q", op);
}

void check_int8_bmm_args(const at::Tensor& a_q, const at::Tensor& b_q, const char* op,
                         DeviceRule rule) {
  check_defined(a_q, op, "a_q");
  check_defined(b_q, op, "b_q");
  check_dtype(a_q, at::kChar, op, "a_q");
  check_dtype(b_q, at::kChar, op, "b_q");
  TORCH_CHECK_VALUE(a_q.dim() == 3, op, ": expected a_q of shape [B, M, K], got ", a_q.sizes());
  TORCH_CHECK_VALUE(b_q.dim() == 3, op, ": expected b_q of shape [B, N, K], got ", b_q.sizes());
  TORCH_CHECK_VALUE(a_q.size(0) == b_q.size(0), op, ": batch mismatch: a_q is ", a_q.sizes(),
                    " and b_q is ", b_q.sizes());
  TORCH_CHECK_VALUE(a_q.size(2) == b_q.size(2), op, ": K mismatch: a_q is ", a_q.sizes(),
                    " ([B, M, K]) and b_q is ", b_q.sizes(), " ([B, N, K])");
  check_k(a_q.size(2), op);
  if (rule == DeviceRule::kCuda) check_n_multiple(b_q.size(1), op, "b_q");
  check_device(a_q, op, "a_q", rule);
  check_device(b_q, op, "b_q", rule);
  check_same_device(a_q, "a_q", b_q, "b_q", op);
}

void check_float_activation(const at::Tensor& x, const char* op, DeviceRule rule) {
  check_defined(x, op, "x");
  TORCH_CHECK_VALUE(is_float_activation(x.scalar_type()), op,
                    ": expected x of dtype float32, bfloat16 or float16, got ", x.scalar_type());
  check_device(x, op, "x", rule);
}

void check_positive_scale(double scale, const char* op, const char* what) {
  const float f = static_cast<float>(scale);
  TORCH_CHECK_VALUE(std::isfinite(scale) && scale > 0 && f > 0 && std::isfinite(1.0f / f), op,
                    ": expected ", what, " to be finite and > 0 with a finite float32 "
                    "reciprocal, got ", scale);
}

void check_out_dtype(at::ScalarType out_dtype, const char* op) {
  TORCH_CHECK_VALUE(is_float_activation(out_dtype), op,
                    ": expected out_dtype float32, bfloat16 or float16, got ", out_dtype);
}

void check_epilogue_args(const at::Tensor& acc, const at::Tensor& x_scale,
                         const at::Tensor& w_scale, const std::optional<at::Tensor>& bias,
                         const char* op, DeviceRule rule) {
  check_defined(acc, op, "acc");
  check_defined(x_scale, op, "x_scale");
  check_defined(w_scale, op, "w_scale");
  check_dtype(acc, at::kInt, op, "acc");
  TORCH_CHECK_VALUE(acc.dim() == 2, op, ": expected acc of shape [M, N], got ", acc.sizes());
  const int64_t M = acc.size(0);
  const int64_t N = acc.size(1);
  check_device(acc, op, "acc", rule);
  check_dtype(x_scale, at::kFloat, op, "x_scale");
  TORCH_CHECK_VALUE(x_scale.numel() == 1 || (x_scale.dim() == 1 && x_scale.size(0) == M), op,
                    ": expected x_scale of shape [1] (per tensor) or [M] = [", M,
                    "] (per token), got ", x_scale.sizes());
  // A one-element CPU x_scale is read on the host; anything else must sit with acc.
  if (!(x_scale.numel() == 1 && x_scale.is_cpu())) {
    check_same_device(acc, "acc", x_scale, "x_scale", op);
  }
  check_dtype(w_scale, at::kFloat, op, "w_scale");
  TORCH_CHECK_VALUE(w_scale.dim() == 1 && w_scale.size(0) == N, op,
                    ": expected w_scale of shape [N] = [", N, "], got ", w_scale.sizes());
  check_same_device(acc, "acc", w_scale, "w_scale", op);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK_VALUE(is_float_activation(bias->scalar_type()), op,
                      ": expected bias of dtype float32, bfloat16 or float16, got ",
                      bias->scalar_type());
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == N, op,
                      ": expected bias of shape [N] = [", N, "], got ", bias->sizes());
    check_same_device(acc, "acc", *bias, "bias", op);
  }
}

void check_linear_args(const at::Tensor& x, const std::optional<double>& input_scale,
                       const at::Tensor& w_q, const at::Tensor& w_scale,
                       const std::optional<at::Tensor>& bias, const char* op, DeviceRule rule) {
  check_float_activation(x, op, rule);
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": expected x of shape [..., K], got a 0-dim tensor");
  check_defined(w_q, op, "w_q");
  check_defined(w_scale, op, "w_scale");
  check_dtype(w_q, at::kChar, op, "w_q");
  TORCH_CHECK_VALUE(w_q.dim() == 2, op, ": expected w_q of shape [N, K], got ", w_q.sizes());
  TORCH_CHECK_VALUE(x.size(-1) == w_q.size(1), op, ": K mismatch: x is ", x.sizes(),
                    " ([..., K]) and w_q is ", w_q.sizes(), " ([N, K])");
  check_device(w_q, op, "w_q", rule);
  check_same_device(x, "x", w_q, "w_q", op);
  check_dtype(w_scale, at::kFloat, op, "w_scale");
  TORCH_CHECK_VALUE(w_scale.dim() == 1 && w_scale.size(0) == w_q.size(0), op,
                    ": expected w_scale of shape [N] = [", w_q.size(0), "], got ",
                    w_scale.sizes());
  check_same_device(x, "x", w_scale, "w_scale", op);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK_VALUE(is_float_activation(bias->scalar_type()), op,
                      ": expected bias of dtype float32, bfloat16 or float16, got ",
                      bias->scalar_type());
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == w_q.size(0), op,
                      ": expected bias of shape [N] = [", w_q.size(0), "], got ", bias->sizes());
    check_same_device(x, "x", *bias, "bias", op);
  }
  if (input_scale.has_value()) check_positive_scale(*input_scale, op, "input_scale");
  check_k(w_q.size(1), op);
  if (rule == DeviceRule::kCuda) check_n_multiple(w_q.size(0), op, "w_q");
}

}  // namespace detail
}  // namespace tquant
