#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/record_function.h>
#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "tquant/cpu_features.h"
#include "tquant/functional.h"
#include "tquant/gemm.h"
#include "tquant/qparams.h"

#include "avx512_util.h"
#include "int16_madd_linear.h"
#include "int8_vnni_gemm.h"

namespace tquant {

namespace {

// Narrow-range symmetric int8: codes -127..127, scale = amax / 127.
constexpr float kQMax = 127.0f;
// oneDNN's VNNI kernels take unsigned activations (vpdpbusd is u8 x s8). A signed code q is
// passed as q + 128 with zero point 128; oneDNN subtracts 128 * sum_k w[n, k] (precomputed at
// prepack) so the accumulator is exactly sum_k q[m, k] * w[n, k]. Passing int8 activations
// directly makes oneDNN 3.10 fall back to its scalar reference matmul (measured: ref_matmul_int8)
// except where it runs AMX (PathChoice::signed_from_rows).
constexpr int64_t kActivationZeroPoint = 128;

QuantSpec weight_spec() {
  return QuantSpec().narrow_range(true).granularity(Granularity::kPerChannel).axis(0);
}
QuantSpec per_tensor_spec() { return QuantSpec().narrow_range(true); }

const c10::OperatorHandle* find_op(const char* name) {
  auto handle = c10::Dispatcher::singleton().findSchema({name, ""});
  if (!handle.has_value()) return nullptr;
  return new c10::OperatorHandle(*handle);  // lives for the process, like the registry
}

struct PathChoice {
  Int8GemmPath path = Int8GemmPath::kInt16Madd;
  std::string reason;
  const c10::OperatorHandle* qlinear = nullptr;
  const c10::OperatorHandle* prepack = nullptr;
  // Whether oneDNN's int8 kernels (behind qlinear and at::_int_mm) sum exactly here.
  bool onednn_exact = false;
  // Whether at::_int_mm sums exactly here: LibTorch calls oneDNN only on a CPU with AVX-512
  // VNNI (its own check, blind to ONEDNN_MAX_CPU_ISA), and an exact scalar loop elsewhere.
  bool int_mm_exact = false;
  // From this many rows on, the oneDNN path passes signed int8 activations (zero point 0) instead
  // of uint8 ones (zero point 128): where oneDNN runs AMX (from 16 rows, observed with oneDNN
  // 3.10), its uint8 kernel subtracts the zero point's share in float32, which rounds sums
  // above 2^24 (off by one at K = 1024 with codes +-127), while its int8 x int8 AMX kernel needs
  // no zero point. Below it, and on CPUs without AMX, oneDNN's int8 x int8 kernel is its scalar
  // reference: uint8 it is.
  int64_t signed_from_rows = std::numeric_limits<int64_t>::max();
};

at::Tensor qlinear_onednn_op(const c10::OperatorHandle& qlinear, const at::Tensor& qx,
                             double x_scale, const Int8Weight& weight, const at::Tensor& w_scale,
                             const std::optional<at::Tensor>& bias, bool gelu);

// The codes the probes below multiply: weight rows of +127 and -127, activations of code 127,
// K = 1040, the largest K whose exact sums (+-127 * 127 * K = +-16,774,160) float32 holds. They
// saturate a pre-VNNI multiply (u8 255 * 127 * 2 = 64770 > 32767 per pair) and show a zero
// point applied in float32 (the uint8 sums reach 255 * 127 * K > 2^24).
constexpr int64_t kProbeK = 1040, kProbeN = 16;
at::Tensor probe_weight_codes() {
  at::Tensor qw = at::full({kProbeN, kProbeK}, 127, at::kChar);
  qw.narrow(0, 0, kProbeN / 2).fill_(-127);
  return qw;
}
at::Tensor probe_expected(int64_t m) {
  return at::matmul(at::full({m, kProbeK}, 127.0, at::kDouble),
                    probe_weight_codes().to(at::kDouble).t())
      .to(at::kFloat);
}

// Runs oneDNN's int8 Linear on the probe codes at the row counts where its kernel choice
// differs (uint8 activations below c.signed_from_rows, int8 from there) and checks every sum is
// exact. Guards against a oneDNN dispatch the CPU-feature rule missed.
bool onednn_sums_exact(const PathChoice& c) {
  const at::Tensor qw = probe_weight_codes();
  torch::jit::Stack stack{c10::IValue(qw), c10::IValue()};
  c.prepack->callBoxed(&stack);
  Int8Weight weight;
  weight.qweight = qw;
  weight.scale = at::ones({kProbeN});
  weight.packed = stack.at(0).toTensor();
  weight.path = Int8GemmPath::kOneDnnQLinear;
  for (int64_t m : {1, 4, 8, 15, 16, 17, 64, 256}) {
    const bool is_signed = m >= c.signed_from_rows;
    const at::Tensor qx = is_signed ? at::full({m, kProbeK}, 127, at::kChar)
                                    : at::full({m, kProbeK}, 255, at::kByte);  // 127 + 128
    const at::Tensor y =
        qlinear_onednn_op(*c.qlinear, qx, 1.0, weight, weight.scale, std::nullopt, false);
    if (!at::equal(y, probe_expected(m))) return false;
  }
  return true;
}

// at::_int_mm on the probe codes (it calls oneDNN's int8 x int8 GEMM on VNNI CPUs).
bool int_mm_sums_exact() {
  const at::Tensor qw_t = probe_weight_codes().t().contiguous();
  for (int64_t m : {1, 7, 16, 64}) {
    const at::Tensor acc = at::_int_mm(at::full({m, kProbeK}, 127, at::kChar), qw_t);
    if (!at::equal(acc.to(at::kFloat), probe_expected(m))) return false;
  }
  return true;
}

const PathChoice& path_choice() {
  static const PathChoice choice = [] {
    PathChoice c;
    const CpuFeatures& cpu = cpu_features();
    const char* env = std::getenv("TQUANT_INT8_GEMM");
    if (at::hasMKLDNN()) {
      c.qlinear = find_op("onednn::qlinear_pointwise");
      c.prepack = find_op("onednn::qlinear_prepack");
      if (c.qlinear == nullptr || c.prepack == nullptr) c.qlinear = c.prepack = nullptr;
    }
    c.onednn_exact = at::hasMKLDNN() && cpu.onednn_int8_exact;
    if (cpu.onednn_amx) c.signed_from_rows = 16;
    if (c.onednn_exact && c.prepack != nullptr && !onednn_sums_exact(c)) c.onednn_exact = false;
    c.int_mm_exact = !at::hasMKLDNN() || !cpu.has_avx512_vnni || c.onednn_exact;
    if (c.int_mm_exact && at::hasMKLDNN() && cpu.has_avx512_vnni) c.int_mm_exact = int_mm_sums_exact();
    const std::string int16 = "tquant's int16 multiply-add kernel (" + to_string(cpu.kernels) +
                              "; exact int32 sums where oneDNN's int8 kernels ";
    if (env != nullptr && std::string(env) == "int_mm") {
      c.path = Int8GemmPath::kIntMm;
      c.reason = "at::_int_mm: forced by TQUANT_INT8_GEMM=int_mm";
      if (!c.int_mm_exact) {
        c.path = Int8GemmPath::kInt16Madd;
        c.reason = int16 + "saturate; TQUANT_INT8_GEMM=int_mm ignored: at::_int_mm is not exact "
                           "on this CPU)";
      }
      return c;
    }
    if (env != nullptr && std::string(env) == "int16_madd") {
      c.reason = int16 + "may saturate; forced by TQUANT_INT8_GEMM=int16_madd)";
      return c;
    }
    if (c.qlinear == nullptr) {
      c.reason = int16 + "are unavailable: " +
                 (at::hasMKLDNN() ? "onednn::qlinear_pointwise is not registered)"
                                  : "this LibTorch has no oneDNN)");
      return c;
    }
    if (!c.onednn_exact) {
      c.reason = int16 + "saturate: no VNNI for oneDNN on this CPU" +
                 (cpu.onednn_cap.empty() ? "" : " under ONEDNN_MAX_CPU_ISA=" + cpu.onednn_cap) +
                 ")";
      return c;
    }
    c.path = Int8GemmPath::kOneDnnQLinear;
    c.reason =
        "onednn::qlinear_pointwise (oneDNN int8 matmul with VNNI, u8 activations with zero point "
        "128, prepacked s8 weight, per-channel scale and bias fused in the epilogue)";
    return c;
  }();
  return choice;
}

// Whether `path` gives exact int32 sums on this CPU (a path that saturates is never used).
void check_path_is_exact(Int8GemmPath path, const char* op) {
  const auto& c = path_choice();
  if (path == Int8GemmPath::kOneDnnQLinear) {
    TORCH_CHECK_VALUE(c.prepack != nullptr, op, ": the oneDNN path was asked for but is "
                      "unavailable (", c.reason, ")");
    TORCH_CHECK_VALUE(c.onednn_exact, op, ": the oneDNN path was asked for, but oneDNN's int8 "
                      "kernels saturate on this CPU (no VNNI; ", cpu_features().to_string(),
                      "); use Int8GemmPath::kInt16Madd or the default path");
  }
  if (path == Int8GemmPath::kIntMm) {
    TORCH_CHECK_VALUE(c.int_mm_exact, op, ": the at::_int_mm path was asked for, but it calls "
                      "oneDNN's int8 kernels, which saturate on this CPU (no VNNI; ",
                      cpu_features().to_string(), "); use the default path");
  }
}

using detail::kernels_use_avx512;


// ---------------------------------------------------------------------------------------------
// Activation quantization: one pass over x, AVX-512. Offset 0 writes int8 codes, offset 128 the
// same codes as uint8 (q + 128) for oneDNN. Rounding: x * inv in float32 then round-half-to-even
// (vcvtps2dq with {rn-sae}), which is what at::round does; clamping before rounding is the same
// as after because the bounds are integers.

// GCC 12's AVX-512 headers build unmasked results from _mm512_undefined_*(), which trips
// -Wmaybe-uninitialized once inlined (GCC bug 105593, fixed in GCC 13); the values are all defined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// Returns false when the row holds a NaN or Inf (x - x is not 0 there): its codes are then
// meaningless and the caller makes the row's output NaN. `mul` (SmoothQuant's 1 / s, or null)
// multiplies x per column before the scale: round((x[i] * mul[i]) * inv).
__attribute__((target("avx512f"))) bool quantize_row_avx512(const float* x, void* q, int64_t n,
                                                            float inv, int32_t offset,
                                                            const float* mul = nullptr) {
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512 lo = _mm512_set1_ps(-kQMax);
  const __m512 hi = _mm512_set1_ps(kQMax);
  const __m512i voff = _mm512_set1_epi32(offset);
  auto* out = static_cast<int8_t*>(q);
  const __m512 zero = _mm512_setzero_ps();
  __mmask16 bad = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(xv, xv), zero, _CMP_NEQ_UQ);
    __m512 v = _mm512_mul_ps(mul ? _mm512_mul_ps(xv, _mm512_loadu_ps(mul + i)) : xv, vinv);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    __m512i r = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_add_epi32(r, voff);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(r));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
    bad |= _mm512_mask_cmp_ps_mask(m, _mm512_sub_ps(xv, xv), zero, _CMP_NEQ_UQ);
    __m512 v = _mm512_mul_ps(mul ? _mm512_mul_ps(xv, _mm512_maskz_loadu_ps(m, mul + i)) : xv,
                             vinv);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    __m512i r = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_add_epi32(r, voff);
    _mm512_mask_cvtepi32_storeu_epi8(out + i, m, r);
  }
  return bad == 0;
}

// max_i |x[i] * mul[i]| (mul as in quantize_row_avx512, or null for max_i |x[i]|).
__attribute__((target("avx512f"))) float row_amax_avx512(const float* x, int64_t n,
                                                         const float* mul = nullptr) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    acc = _mm512_max_ps(acc, _mm512_abs_ps(mul ? _mm512_mul_ps(xv, _mm512_loadu_ps(mul + i)) : xv));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
    acc = _mm512_max_ps(
        acc, _mm512_abs_ps(mul ? _mm512_mul_ps(xv, _mm512_maskz_loadu_ps(m, mul + i)) : xv));
  }
  return _mm512_reduce_max_ps(acc);
}

#pragma GCC diagnostic pop

// The dynamic Linear's epilogue, in place over rows [begin, end) of y [M, N] (oneDNN takes one
// input scale, so it gives y = acc * s_w[n]; the per-row scale and the bias come here, in one
// pass):  y[m, n] = fma(y[m, n], s_x[m], bias[n]),  bias null = 0.
TQUANT_AVX512F void scale_rows_add_bias_avx512(float* y, const float* sx,
                                                                   const float* bias,
                                                                   int64_t begin, int64_t end,
                                                                   int64_t n) {
  for (int64_t r = begin; r < end; ++r) {
    const __m512 s = _mm512_set1_ps(sx[r]);
    float* row = y + r * n;
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 lanes = detail::tail_mask16(n - j);
      const __m512 b = bias ? _mm512_maskz_loadu_ps(lanes, bias + j) : _mm512_setzero_ps();
      _mm512_mask_storeu_ps(row + j, lanes,
                            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(lanes, row + j), s, b));
    }
  }
}

// Rows per parallel task: about 64 KiB of float input each.
int64_t row_grain(int64_t k) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(k, 1)); }

// 1 / scale in float32, as tquant::quantize takes it.
float reciprocal_f32(double scale) { return 1.0f / static_cast<float>(scale); }

// Indices of the rows of x [M, K] that hold a NaN or Inf (ATen ops; the AVX-512 quantizers find
// them on their way instead).
std::vector<int64_t> nonfinite_rows_aten(const at::Tensor& x) {
  const at::Tensor rows = at::isfinite(x).all(1).logical_not().nonzero().reshape({-1}).cpu();
  return std::vector<int64_t>(rows.data_ptr<int64_t>(), rows.data_ptr<int64_t>() + rows.numel());
}

std::vector<int64_t> flagged_rows(const std::vector<char>& flags) {
  std::vector<int64_t> rows;
  for (size_t r = 0; r < flags.size(); ++r) {
    if (flags[r]) rows.push_back(static_cast<int64_t>(r));
  }
  return rows;
}

// Per-tensor quantization of a contiguous float [M, K] into int8 (offset 0) or uint8 (128).
// `nonfinite` (when not null) receives the rows that hold a NaN or Inf. `mult` (float32 [K]
// contiguous, or undefined) multiplies x per column first (SmoothQuant), in the same pass.
at::Tensor quantize_per_tensor_impl(const at::Tensor& x, double scale, int32_t offset,
                                    std::vector<int64_t>* nonfinite = nullptr,
                                    const at::Tensor& mult = {}) {
  RECORD_FUNCTION("tquant::quantize_per_tensor", std::vector<c10::IValue>());
  const auto dtype = offset == 0 ? at::kChar : at::kByte;
  if (!kernels_use_avx512()) {
    if (nonfinite != nullptr) *nonfinite = nonfinite_rows_aten(x);
    // Fallback without AVX-512: a few ATen passes, same rounding.
    const at::Tensor xm = mult.defined() ? x * mult : x;
    auto q = at::round(xm * static_cast<double>(reciprocal_f32(scale))).clamp_(-kQMax, kQMax);
    if (offset != 0) q.add_(offset);
    return q.to(dtype);
  }
  const int64_t m = x.size(0);
  const int64_t k = x.size(1);
  auto q = at::empty({m, k}, x.options().dtype(dtype));
  const float inv = reciprocal_f32(scale);
  const float* xp = x.const_data_ptr<float>();
  const float* mp = mult.defined() ? mult.const_data_ptr<float>() : nullptr;
  auto* qp = static_cast<int8_t*>(q.data_ptr());
  std::vector<char> bad(static_cast<size_t>(m), 0);
  at::parallel_for(0, m, row_grain(k), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      bad[static_cast<size_t>(r)] =
          !quantize_row_avx512(xp + r * k, qp + r * k, k, inv, offset, mp);
    }
  });
  if (nonfinite != nullptr) *nonfinite = flagged_rows(bad);
  return q;
}

// Per-token quantization: s[m] = max(amax_m / 127, eps), as tquant::qparams_from_amax computes it
// (float32 division, then max with FLT_EPSILON); codes with 1 / s[m] in float32.
// `nonfinite` (when not null) receives the rows that hold a NaN or Inf. `mult` as in
// quantize_per_tensor_impl: the scales and codes are those of x * mult.
std::pair<at::Tensor, at::Tensor> quantize_per_token_impl(
    const at::Tensor& x, int32_t offset, std::vector<int64_t>* nonfinite = nullptr,
    const at::Tensor& mult = {}) {
  RECORD_FUNCTION("tquant::quantize_per_token", std::vector<c10::IValue>());
  const auto dtype = offset == 0 ? at::kChar : at::kByte;
  const int64_t m = x.size(0);
  const int64_t k = x.size(1);
  if (!kernels_use_avx512()) {
    if (nonfinite != nullptr) *nonfinite = nonfinite_rows_aten(x);
    const at::Tensor xm = mult.defined() ? x * mult : x;
    auto amax = xm.abs().amax({1}, /*keepdim=*/true);
    auto scale = at::maximum(amax / static_cast<double>(kQMax),
                             at::full({}, static_cast<double>(FLT_EPSILON), amax.options()));
    auto q = at::round(xm * scale.reciprocal()).clamp_(-kQMax, kQMax);
    if (offset != 0) q.add_(offset);
    return {q.to(dtype), scale.reshape({m})};
  }
  auto q = at::empty({m, k}, x.options().dtype(dtype));
  auto scale = at::empty({m}, x.options());
  const float* xp = x.const_data_ptr<float>();
  const float* mp = mult.defined() ? mult.const_data_ptr<float>() : nullptr;
  auto* qp = static_cast<int8_t*>(q.data_ptr());
  float* sp = scale.data_ptr<float>();
  std::vector<char> bad(static_cast<size_t>(m), 0);
  at::parallel_for(0, m, row_grain(k), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float amax = row_amax_avx512(xp + r * k, k, mp);
      const float s = std::max(amax / kQMax, FLT_EPSILON);
      sp[r] = s;
      bad[static_cast<size_t>(r)] =
          !quantize_row_avx512(xp + r * k, qp + r * k, k, 1.0f / s, offset, mp);
    }
  });
  if (nonfinite != nullptr) *nonfinite = flagged_rows(bad);
  return {q, scale};
}

// ---------------------------------------------------------------------------------------------
// Argument checks and the [..., K] <-> [M, K] views.

struct Flat {
  at::Tensor x2d;                  // [M, K] float32 contiguous
  std::vector<int64_t> out_shape;  // [..., N]
};

Flat flatten_input(const at::Tensor& x, const Int8Weight& weight, const char* op) {
  TORCH_CHECK_VALUE(weight.defined(), op, ": the Int8Weight is empty (call prepare_int8_weight)");
  TORCH_CHECK_VALUE(x.defined(), op, ": input tensor is undefined");
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat, op, ": expected a float32 input, got ",
                    x.scalar_type());
  TORCH_CHECK_VALUE(x.device().is_cpu(), op, ": expected a CPU input, got ", x.device());
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": expected an input of shape [..., K], got a 0-dim tensor");
  const int64_t k = weight.in_features();
  TORCH_CHECK_VALUE(x.size(-1) == k, op, ": input of shape ", x.sizes(),
                    " does not match the weight of shape [N, K] = ", weight.qweight.sizes(),
                    ": expected the last dim to be K = ", k, ", got ", x.size(-1));
  Flat f;
  f.x2d = x.reshape({-1, k}).contiguous();
  f.out_shape = x.sizes().vec();
  f.out_shape.back() = weight.out_features();
  return f;
}

void check_bias(const std::optional<at::Tensor>& bias, const Int8Weight& weight, const char* op) {
  if (!bias.has_value() || !bias->defined()) return;
  TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.out_features(), op,
                    ": expected a bias of shape [", weight.out_features(), "], got ",
                    bias->sizes());
  TORCH_CHECK_VALUE(bias->scalar_type() == at::kFloat && bias->device().is_cpu(), op,
                    ": expected a float32 bias on the CPU, got ", bias->scalar_type(), " on ",
                    bias->device());
}

// Float semantics for bad input: an output row whose input row held a NaN or Inf is NaN (the
// int8 codes of such a row are meaningless; float would give NaN there).
at::Tensor nan_rows(at::Tensor y, const std::vector<int64_t>& rows) {
  if (rows.empty()) return y;
  const at::Tensor index = at::tensor(rows, at::kLong);
  return y.index_fill_(0, index, std::numeric_limits<float>::quiet_NaN());
}

std::optional<at::Tensor> defined_bias(const std::optional<at::Tensor>& bias) {
  if (bias.has_value() && bias->defined()) return bias->contiguous();
  return std::nullopt;
}

void check_scale(double s, const char* op) { detail::check_int8_scale(s, op, "input"); }

// The per-input-channel multiplier (SmoothQuant's 1 / s) as the quantizers take it: float32 [K]
// contiguous on the CPU; undefined when none is given.
at::Tensor input_multiplier_of(const std::optional<at::Tensor>& mult, int64_t k, const char* op) {
  if (!mult.has_value() || !mult->defined()) return {};
  TORCH_CHECK_VALUE(mult->dim() == 1 && mult->size(0) == k && mult->scalar_type() == at::kFloat &&
                        mult->device().is_cpu(),
                    op, ": expected an input_multiplier of float32 [", k, "] on the CPU, got ",
                    mult->scalar_type(), " ", mult->sizes(), " on ", mult->device());
  return mult->contiguous();
}

// y = acc * x_scale * w_scale[n] (+ bias) with oneDNN; qx is uint8 (q + 128).
// With `gelu`, oneDNN applies GELU (erf) to y in the same epilogue (post-op "gelu", algorithm
// "none"; bit-equal to at::gelu of the unfused result in tests).
at::Tensor qlinear_onednn_op(const c10::OperatorHandle& qlinear, const at::Tensor& qx,
                             double x_scale, const Int8Weight& weight, const at::Tensor& w_scale,
                             const std::optional<at::Tensor>& bias, bool gelu) {
  auto w_zero_point = at::zeros({weight.out_features()}, at::kInt);
  torch::jit::Stack stack;
  stack.reserve(13);
  stack.emplace_back(qx);
  stack.emplace_back(x_scale);
  // uint8 codes carry the zero point 128 (q + 128), int8 codes none.
  stack.emplace_back(qx.scalar_type() == at::kByte ? kActivationZeroPoint : int64_t{0});
  stack.emplace_back(weight.packed);
  stack.emplace_back(w_scale);
  stack.emplace_back(w_zero_point);
  stack.emplace_back(bias.has_value() ? c10::IValue(*bias) : c10::IValue());
  stack.emplace_back(1.0);                      // output_scale (unused for float output)
  stack.emplace_back(static_cast<int64_t>(0));  // output_zero_point
  stack.emplace_back(at::kFloat);               // output_dtype
  stack.emplace_back(std::string(gelu ? "gelu" : "none"));  // post_op_name
  stack.emplace_back(c10::List<std::optional<at::Scalar>>());
  stack.emplace_back(std::string(gelu ? "none" : ""));  // post_op_algorithm (none = erf)
  qlinear.callBoxed(&stack);
  return stack.at(0).toTensor();
}

at::Tensor qlinear_onednn(const at::Tensor& qx, double x_scale, const Int8Weight& weight,
                          const at::Tensor& w_scale, const std::optional<at::Tensor>& bias,
                          bool gelu = false) {
  return qlinear_onednn_op(*path_choice().qlinear, qx, x_scale, weight, w_scale, bias, gelu);
}

// The activation offset of the oneDNN path for m rows: 128 (uint8 codes) or 0 (int8 codes),
// PathChoice::signed_from_rows.
int32_t onednn_activation_offset(int64_t m) {
  return m >= path_choice().signed_from_rows ? 0 : static_cast<int32_t>(kActivationZeroPoint);
}

// Same contract with at::_int_mm (int32 accumulators) and one dequantization op.
at::Tensor qlinear_int_mm(const at::Tensor& qx_s8, double x_scale, const Int8Weight& weight,
                          const at::Tensor& w_scale, const std::optional<at::Tensor>& bias) {
  auto acc = at::_int_mm(qx_s8, weight.packed);  // [M, N] int32
  auto col = w_scale * x_scale;                  // [N] float32
  return bias.has_value() ? at::addcmul(*bias, acc, col) : at::mul(acc, col);
}

}  // namespace

std::string to_string(Int8GemmPath path) {
  switch (path) {
    case Int8GemmPath::kOneDnnQLinear:
      return "onednn_qlinear";
    case Int8GemmPath::kIntMm:
      return "int_mm";
    case Int8GemmPath::kInt16Madd:
      return "int16_madd";
  }
  return "unknown";
}

Int8GemmPath int8_gemm_path() { return path_choice().path; }
std::string int8_gemm_path_reason() { return path_choice().reason; }

std::vector<Int8GemmPath> int8_gemm_exact_paths() {
  const auto& c = path_choice();
  std::vector<Int8GemmPath> paths{c.path};
  if (c.path != Int8GemmPath::kOneDnnQLinear && c.prepack != nullptr && c.onednn_exact) {
    paths.push_back(Int8GemmPath::kOneDnnQLinear);
  }
  if (c.path != Int8GemmPath::kIntMm && c.int_mm_exact) paths.push_back(Int8GemmPath::kIntMm);
  if (c.path != Int8GemmPath::kInt16Madd) paths.push_back(Int8GemmPath::kInt16Madd);
  return paths;
}

Int8Weight prepare_int8_weight(const at::Tensor& weight, std::optional<Int8GemmPath> path) {
  TORCH_CHECK_VALUE(weight.defined() && weight.dim() == 2,
                    "prepare_int8_weight: expected a weight of shape [N, K], got ",
                    weight.defined() ? weight.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(at::isFloatingType(weight.scalar_type()),
                    "prepare_int8_weight: expected a floating point weight, got ",
                    weight.scalar_type());
  TORCH_CHECK_VALUE(weight.size(0) > 0 && weight.size(1) > 0,
                    "prepare_int8_weight: expected N > 0 and K > 0, got ", weight.sizes());
  auto w = weight.detach().to(at::kCPU, at::kFloat).contiguous();
  auto qp = qparams_from_amax(w.abs().amax({1}), weight_spec());
  return prepare_int8_weight(quantize(w, qp), qp.scale, path);
}

Int8Weight prepare_int8_weight(const at::Tensor& qweight, const at::Tensor& scale,
                               std::optional<Int8GemmPath> path) {
  TORCH_CHECK_VALUE(qweight.defined() && qweight.dim() == 2 && qweight.scalar_type() == at::kChar,
                    "prepare_int8_weight: expected int8 codes of shape [N, K], got ",
                    qweight.defined() ? qweight.sizes() : at::IntArrayRef{}, " of type ",
                    qweight.defined() ? qweight.scalar_type() : at::ScalarType::Undefined);
  TORCH_CHECK_VALUE(scale.defined() && scale.numel() == qweight.size(0),
                    "prepare_int8_weight: expected ", qweight.size(0), " scales, got ",
                    scale.defined() ? scale.numel() : 0);
  TORCH_CHECK_VALUE(qweight.size(0) > 0 && qweight.size(1) > 0,
                    "prepare_int8_weight: expected N > 0 and K > 0, got ", qweight.sizes());
  TORCH_CHECK_VALUE(qweight.size(1) <= kMaxInt8GemmK, "prepare_int8_weight: K = ",
                    qweight.size(1), " is above ", kMaxInt8GemmK,
                    ", where int32 sums of 127 * 127 products may overflow; split the layer "
                    "along K");
  TORCH_CHECK_VALUE(qweight.ge(-127).all().item<bool>(),
                    "prepare_int8_weight: expected narrow-range codes in [-127, 127], found -128");
  Int8Weight out;
  out.qweight = qweight.detach().cpu().contiguous();
  out.scale = scale.detach().to(at::kCPU, at::kFloat).reshape({-1}).contiguous();
  const auto& c = path_choice();
  out.path = path.value_or(c.path);
  check_path_is_exact(out.path, "prepare_int8_weight");
  if (out.path == Int8GemmPath::kInt16Madd) {
    out.packed = detail::pack_weight_for_int16_madd(out.qweight);
  } else if (out.path == Int8GemmPath::kOneDnnQLinear) {
    // No x_shape hint: measured as fast as a hint with the run-time M, and M varies per call.
    torch::jit::Stack stack{c10::IValue(out.qweight), c10::IValue()};
    c.prepack->callBoxed(&stack);
    out.packed = stack.at(0).toTensor();
  } else {
    // q^T as [K, N] with row stride N. Not qweight.t().contiguous(): for K = 1 that is a no-op
    // view with strides (1, 1), from which LibTorch 2.11's _int_mm returned garbage (a
    // poisoned-neighbour test, tests/kernel_neighbour_test.cpp, found it).
    out.packed = at::empty({out.in_features(), out.out_features()}, out.qweight.options());
    out.packed.copy_(out.qweight.t());
  }
  return out;
}

at::Tensor int8_linear_static(const at::Tensor& x, double input_scale, const Int8Weight& weight,
                              const std::optional<at::Tensor>& bias,
                              const std::optional<at::Tensor>& input_multiplier, bool gelu) {
  constexpr const char* op = "int8_linear_static";
  RECORD_FUNCTION("tquant::int8_linear_static", std::vector<c10::IValue>());
  check_scale(input_scale, op);
  check_bias(bias, weight, op);
  auto f = flatten_input(x, weight, op);
  const at::Tensor mult = input_multiplier_of(input_multiplier, weight.in_features(), op);
  if (f.x2d.size(0) == 0) return at::zeros(f.out_shape, x.options());
  // The GEMM epilogue sees the scale as float32; round it once here so the reference agrees.
  const double sx = static_cast<float>(input_scale);
  at::Tensor y;
  std::vector<int64_t> nonfinite;
  if (weight.path == Int8GemmPath::kInt16Madd) {
    y = detail::int8_linear_int16_madd(f.x2d, input_scale, weight.packed, weight.out_features(),
                                       weight.scale, defined_bias(bias), mult, &nonfinite);
    if (gelu) y = at::gelu_(y);
  } else if (weight.path == Int8GemmPath::kOneDnnQLinear) {
    auto qx =
        quantize_per_tensor_impl(f.x2d, input_scale, onednn_activation_offset(f.x2d.size(0)),
                                 &nonfinite, mult);
    y = qlinear_onednn(qx, sx, weight, weight.scale, defined_bias(bias), gelu);
  } else {
    auto qx = quantize_per_tensor_impl(f.x2d, input_scale, 0, &nonfinite, mult);
    y = qlinear_int_mm(qx, sx, weight, weight.scale, defined_bias(bias));
    if (gelu) y = at::gelu_(y);
  }
  return nan_rows(y, nonfinite).view(f.out_shape);
}

at::Tensor int8_linear_cpu(const at::Tensor& x, std::optional<double> input_scale,
                           const Int8Weight& weight, const std::optional<at::Tensor>& bias,
                           bool gelu) {
  if (input_scale) return int8_linear_static(x, *input_scale, weight, bias, std::nullopt, gelu);
  at::Tensor y = int8_linear_dynamic(x, weight, bias);
  return gelu ? at::gelu(y) : y;
}

at::Tensor int8_linear_dynamic(const at::Tensor& x, const Int8Weight& weight,
                               const std::optional<at::Tensor>& bias,
                               const std::optional<at::Tensor>& input_multiplier) {
  constexpr const char* op = "int8_linear_dynamic";
  RECORD_FUNCTION("tquant::int8_linear_dynamic", std::vector<c10::IValue>());
  check_bias(bias, weight, op);
  auto f = flatten_input(x, weight, op);
  const at::Tensor mult = input_multiplier_of(input_multiplier, weight.in_features(), op);
  if (f.x2d.size(0) == 0) return at::zeros(f.out_shape, x.options());
  const auto b = defined_bias(bias);
  at::Tensor y;
  std::vector<int64_t> nonfinite;
  if (weight.path == Int8GemmPath::kInt16Madd) {
    y = detail::int8_linear_int16_madd(f.x2d, std::nullopt, weight.packed, weight.out_features(),
                                       weight.scale, b, mult, &nonfinite);
  } else if (weight.path == Int8GemmPath::kOneDnnQLinear) {
    // oneDNN takes one input scale; the per-row scale and the bias go in one extra pass
    // (scale_rows_add_bias_avx512): y = (acc * s_w[n]) * s_x[m] + bias[n].
    auto [qx, sx] = quantize_per_token_impl(f.x2d, onednn_activation_offset(f.x2d.size(0)),
                                            &nonfinite, mult);
    y = qlinear_onednn(qx, 1.0, weight, weight.scale, std::nullopt);
    if (kernels_use_avx512() && y.is_contiguous()) {
      float* yp = y.data_ptr<float>();
      const float* sp = sx.const_data_ptr<float>();
      const float* bp = b.has_value() ? b->const_data_ptr<float>() : nullptr;
      const int64_t n = y.size(1);
      at::parallel_for(0, y.size(0), row_grain(n), [&](int64_t begin, int64_t end) {
        scale_rows_add_bias_avx512(yp, sp, bp, begin, end, n);
      });
    } else {
      y = b.has_value() ? at::addcmul(*b, y, sx.unsqueeze(1)) : y.mul_(sx.unsqueeze(1));
    }
  } else {
    auto [qx, sx] = quantize_per_token_impl(f.x2d, 0, &nonfinite, mult);
    auto acc = at::_int_mm(qx, weight.packed);
    auto outer = sx.unsqueeze(1) * weight.scale.unsqueeze(0);  // [M, N] float32
    y = b.has_value() ? at::addcmul(*b, acc, outer) : at::mul(acc, outer);
  }
  return nan_rows(y, nonfinite).view(f.out_shape);
}

// ---------------------------------------------------------------------------------------------
// Reference twins: tquant::quantize for the codes, int64 matmul for the accumulators (exact),
// float64 for the scales, one rounding to float32 at the end.

namespace {

at::Tensor gemm_ref(const at::Tensor& q, const at::Tensor& row_scale /*[M,1] f64*/,
                    const Int8Weight& weight, const std::optional<at::Tensor>& bias) {
  auto acc = at::matmul(q.to(at::kLong), weight.qweight.to(at::kLong).t());
  auto y = acc.to(at::kDouble) * row_scale * weight.scale.to(at::kDouble).unsqueeze(0);
  if (bias.has_value() && bias->defined()) y = y + bias->to(at::kDouble);
  return y.to(at::kFloat);
}

}  // namespace

at::Tensor int8_linear_static_ref(const at::Tensor& x, double input_scale, const Int8Weight& weight,
                                  const std::optional<at::Tensor>& bias,
                                  const std::optional<at::Tensor>& input_multiplier, bool gelu) {
  constexpr const char* op = "int8_linear_static_ref";
  check_scale(input_scale, op);
  check_bias(bias, weight, op);
  auto f = flatten_input(x, weight, op);
  const at::Tensor mult = input_multiplier_of(input_multiplier, weight.in_features(), op);
  auto q = detail::quantize_per_tensor_int8_ref(mult.defined() ? f.x2d * mult : f.x2d,
                                                input_scale);
  const double sx = static_cast<float>(input_scale);
  auto rs = at::full({1, 1}, sx, at::kDouble);
  at::Tensor y = gemm_ref(q, rs, weight, bias);
  if (gelu) y = at::gelu(y);
  return nan_rows(y, nonfinite_rows_aten(f.x2d)).view(f.out_shape);
}

at::Tensor int8_linear_dynamic_ref(const at::Tensor& x, const Int8Weight& weight,
                                   const std::optional<at::Tensor>& bias,
                                   const std::optional<at::Tensor>& input_multiplier) {
  constexpr const char* op = "int8_linear_dynamic_ref";
  check_bias(bias, weight, op);
  auto f = flatten_input(x, weight, op);
  const at::Tensor mult = input_multiplier_of(input_multiplier, weight.in_features(), op);
  if (f.x2d.size(0) == 0) return at::zeros(f.out_shape, x.options());
  auto [q, s] = detail::quantize_per_token_int8_ref(
      at::nan_to_num(mult.defined() ? f.x2d * mult : f.x2d, 0.0, 0.0, 0.0));
  return nan_rows(gemm_ref(q, s.to(at::kDouble).unsqueeze(1), weight, bias),
                  nonfinite_rows_aten(f.x2d))
      .view(f.out_shape);
}

namespace detail {

bool onednn_int8_sums_exact() { return path_choice().onednn_exact; }

at::Tensor quantize_per_tensor_int8(const at::Tensor& x, double scale) {
  TORCH_CHECK_VALUE(x.dim() == 2 && x.scalar_type() == at::kFloat,
                    "quantize_per_tensor_int8: expected float32 [M, K], got ", x.sizes(), " ",
                    x.scalar_type());
  check_scale(scale, "quantize_per_tensor_int8");
  return quantize_per_tensor_impl(x.contiguous(), scale, 0);
}

std::pair<at::Tensor, at::Tensor> quantize_per_token_int8(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() == 2 && x.scalar_type() == at::kFloat,
                    "quantize_per_token_int8: expected float32 [M, K], got ", x.sizes(), " ",
                    x.scalar_type());
  return quantize_per_token_impl(x.contiguous(), 0);
}

at::Tensor quantize_per_tensor_int8_ref(const at::Tensor& x, double scale) {
  QParams qp{at::full({}, scale, at::kFloat), at::zeros({}, at::kInt), per_tensor_spec()};
  return quantize(x, qp);
}

std::pair<at::Tensor, at::Tensor> quantize_per_token_int8_ref(const at::Tensor& x) {
  auto spec = QuantSpec().narrow_range(true).granularity(Granularity::kPerChannel).axis(0);
  auto qp = qparams_from_amax(x.abs().amax({1}), spec);
  return {quantize(x, qp), qp.scale};
}

at::Tensor int8_gemm_dequant(const at::Tensor& qx, double x_scale, const Int8Weight& weight,
                             const at::Tensor& w_scale, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(
      qx.dim() == 2 && qx.scalar_type() == at::kChar && qx.size(1) == weight.in_features(),
      "int8_gemm_dequant: expected int8 codes of shape [M, ", weight.in_features(), "], got ",
      qx.sizes(), " ", qx.scalar_type());
  auto ws = w_scale.to(at::kFloat).contiguous();
  if (weight.path == Int8GemmPath::kInt16Madd) {
    // The codes as floats quantize to themselves with scale 1; x_scale scales the columns.
    std::vector<int64_t> unused;
    return detail::int8_linear_int16_madd(qx.to(at::kFloat).contiguous(), 1.0, weight.packed,
                                          weight.out_features(), ws * static_cast<float>(x_scale),
                                          defined_bias(bias), at::Tensor(), &unused);
  }
  if (weight.path == Int8GemmPath::kOneDnnQLinear) {
    const int32_t offset = onednn_activation_offset(qx.size(0));
    const at::Tensor codes = offset == 0 ? qx.contiguous() : (qx.to(at::kInt) + offset).to(at::kByte);
    return qlinear_onednn(codes, x_scale, weight, ws, defined_bias(bias));
  }
  return qlinear_int_mm(qx.contiguous(), x_scale, weight, ws, defined_bias(bias));
}

}  // namespace detail

}  // namespace tquant
