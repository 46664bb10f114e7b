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

#include "tquant/functional.h"
#include "tquant/gemm.h"
#include "tquant/qparams.h"

#include "avx512_util.h"

namespace tquant {

namespace {

// Narrow-range symmetric int8: codes -127..127, scale = amax / 127.
constexpr float kQMax = 127.0f;
// oneDNN's VNNI kernels take unsigned activations (vpdpbusd is u8 x s8). A signed code q is
// passed as q + 128 with zero point 128; oneDNN subtracts 128 * sum_k w[n, k] (precomputed at
// prepack) so the accumulator is exactly sum_k q[m, k] * w[n, k]. Passing int8 activations
// directly makes oneDNN 3.10 fall back to its scalar reference matmul (measured: ref_matmul_int8).
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
  Int8GemmPath path = Int8GemmPath::kIntMm;
  std::string reason;
  const c10::OperatorHandle* qlinear = nullptr;
  const c10::OperatorHandle* prepack = nullptr;
};

const PathChoice& path_choice() {
  static const PathChoice choice = [] {
    PathChoice c;
    const char* env = std::getenv("TQUANT_INT8_GEMM");
    if (at::hasMKLDNN()) {
      c.qlinear = find_op("onednn::qlinear_pointwise");
      c.prepack = find_op("onednn::qlinear_prepack");
    }
    if (!at::hasMKLDNN()) {
      c.reason = "at::_int_mm: this LibTorch has no oneDNN (mkldnn)";
      return c;
    }
    if (c.qlinear == nullptr || c.prepack == nullptr) {
      c.qlinear = c.prepack = nullptr;
      c.reason = "at::_int_mm: onednn::qlinear_pointwise / qlinear_prepack are not registered";
      return c;
    }
    if (env != nullptr && std::string(env) == "int_mm") {
      c.reason = "at::_int_mm: forced by TQUANT_INT8_GEMM=int_mm";
      return c;
    }
    c.path = Int8GemmPath::kOneDnnQLinear;
    c.reason =
        "onednn::qlinear_pointwise (oneDNN int8 matmul, u8 activations with zero point 128, "
        "prepacked s8 weight, per-channel scale and bias fused in the epilogue)";
    return c;
  }();
  return choice;
}

using detail::cpu_has_avx512f;

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
  if (!cpu_has_avx512f()) {
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
  if (!cpu_has_avx512f()) {
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

void check_bias(const c10::optional<at::Tensor>& bias, const Int8Weight& weight, const char* op) {
  if (!bias.has_value() || !bias->defined()) return;
  TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.out_features(), op,
                    ": expected a bias of shape [", weight.out_features(), "], got ",
                    bias->sizes());
  TORCH_CHECK_VALUE(bias->scalar_type() == at::kFloat, op, ": expected a float32 bias, got ",
                    bias->scalar_type());
}

// Float semantics for bad input: an output row whose input row held a NaN or Inf is NaN (the
// int8 codes of such a row are meaningless; float would give NaN there).
at::Tensor nan_rows(at::Tensor y, const std::vector<int64_t>& rows) {
  if (rows.empty()) return y;
  const at::Tensor index = at::tensor(rows, at::kLong);
  return y.index_fill_(0, index, std::numeric_limits<float>::quiet_NaN());
}

c10::optional<at::Tensor> defined_bias(const c10::optional<at::Tensor>& bias) {
  if (bias.has_value() && bias->defined()) return bias->contiguous();
  return c10::nullopt;
}

void check_scale(double s, const char* op) {
  TORCH_CHECK_VALUE(std::isfinite(s) && s > 0.0, op, ": expected a finite input scale > 0, got ",
                    s);
}

// The per-input-channel multiplier (SmoothQuant's 1 / s) as the quantizers take it: float32 [K]
// contiguous on the CPU; undefined when none is given.
at::Tensor input_multiplier_of(const c10::optional<at::Tensor>& mult, int64_t k, const char* op) {
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
at::Tensor qlinear_onednn(const at::Tensor& qx_u8, double x_scale, const Int8Weight& weight,
                          const at::Tensor& w_scale, const c10::optional<at::Tensor>& bias,
                          bool gelu = false) {
  const auto& c = path_choice();
  auto w_zero_point = at::zeros({weight.out_features()}, at::kInt);
  torch::jit::Stack stack;
  stack.reserve(13);
  stack.emplace_back(qx_u8);
  stack.emplace_back(x_scale);
  stack.emplace_back(kActivationZeroPoint);
  stack.emplace_back(weight.packed);
  stack.emplace_back(w_scale);
  stack.emplace_back(w_zero_point);
  stack.emplace_back(bias.has_value() ? c10::IValue(*bias) : c10::IValue());
  stack.emplace_back(1.0);                      // output_scale (unused for float output)
  stack.emplace_back(static_cast<int64_t>(0));  // output_zero_point
  stack.emplace_back(at::kFloat);               // output_dtype
  stack.emplace_back(std::string(gelu ? "gelu" : "none"));  // post_op_name
  stack.emplace_back(c10::List<c10::optional<at::Scalar>>());
  stack.emplace_back(std::string(gelu ? "none" : ""));  // post_op_algorithm (none = erf)
  c.qlinear->callBoxed(&stack);
  return stack.at(0).toTensor();
}

// Same contract with at::_int_mm (int32 accumulators) and one dequantization op.
at::Tensor qlinear_int_mm(const at::Tensor& qx_s8, double x_scale, const Int8Weight& weight,
                          const at::Tensor& w_scale, const c10::optional<at::Tensor>& bias) {
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
  }
  return "unknown";
}

Int8GemmPath int8_gemm_path() { return path_choice().path; }
std::string int8_gemm_path_reason() { return path_choice().reason; }

Int8Weight prepare_int8_weight(const at::Tensor& weight, c10::optional<Int8GemmPath> path) {
  TORCH_CHECK_VALUE(weight.defined() && weight.dim() == 2,
                    "prepare_int8_weight: expected a weight of shape [N, K], got ",
                    weight.defined() ? weight.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(at::isFloatingType(weight.scalar_type()),
                    "prepare_int8_weight: expected a floating point weight, got ",
                    weight.scalar_type());
  auto w = weight.detach().to(at::kCPU, at::kFloat).contiguous();
  auto qp = qparams_from_amax(w.abs().amax({1}), weight_spec());
  return prepare_int8_weight(quantize(w, qp), qp.scale, path);
}

Int8Weight prepare_int8_weight(const at::Tensor& qweight, const at::Tensor& scale,
                               c10::optional<Int8GemmPath> path) {
  TORCH_CHECK_VALUE(qweight.defined() && qweight.dim() == 2 && qweight.scalar_type() == at::kChar,
                    "prepare_int8_weight: expected int8 codes of shape [N, K], got ",
                    qweight.defined() ? qweight.sizes() : at::IntArrayRef{}, " of type ",
                    qweight.defined() ? qweight.scalar_type() : at::ScalarType::Undefined);
  TORCH_CHECK_VALUE(scale.defined() && scale.numel() == qweight.size(0),
                    "prepare_int8_weight: expected ", qweight.size(0), " scales, got ",
                    scale.defined() ? scale.numel() : 0);
  TORCH_CHECK_VALUE(qweight.size(1) > 0, "prepare_int8_weight: expected K > 0, got ",
                    qweight.sizes());
  TORCH_CHECK_VALUE(qweight.ge(-127).all().item<bool>(),
                    "prepare_int8_weight: expected narrow-range codes in [-127, 127], found -128");
  Int8Weight out;
  out.qweight = qweight.detach().cpu().contiguous();
  out.scale = scale.detach().to(at::kCPU, at::kFloat).reshape({-1}).contiguous();
  const auto& c = path_choice();
  out.path = path.value_or(c.path);
  TORCH_CHECK_VALUE(out.path != Int8GemmPath::kOneDnnQLinear || c.prepack != nullptr,
                    "prepare_int8_weight: the oneDNN path was asked for but is unavailable (",
                    c.reason, ")");
  if (out.path == Int8GemmPath::kOneDnnQLinear) {
    // No x_shape hint: measured as fast as a hint with the run-time M, and M varies per call.
    torch::jit::Stack stack{c10::IValue(out.qweight), c10::IValue()};
    c.prepack->callBoxed(&stack);
    out.packed = stack.at(0).toTensor();
  } else {
    out.packed = out.qweight.t().contiguous();  // [K, N] for _int_mm
  }
  return out;
}

at::Tensor int8_linear_static(const at::Tensor& x, double input_scale, const Int8Weight& weight,
                              const c10::optional<at::Tensor>& bias,
                              const c10::optional<at::Tensor>& input_multiplier, bool gelu) {
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
  if (weight.path == Int8GemmPath::kOneDnnQLinear) {
    auto qx =
        quantize_per_tensor_impl(f.x2d, input_scale, kActivationZeroPoint, &nonfinite, mult);
    y = qlinear_onednn(qx, sx, weight, weight.scale, defined_bias(bias), gelu);
  } else {
    auto qx = quantize_per_tensor_impl(f.x2d, input_scale, 0, &nonfinite, mult);
    y = qlinear_int_mm(qx, sx, weight, weight.scale, defined_bias(bias));
    if (gelu) y = at::gelu_(y);
  }
  return nan_rows(y, nonfinite).view(f.out_shape);
}

at::Tensor int8_linear_dynamic(const at::Tensor& x, const Int8Weight& weight,
                               const c10::optional<at::Tensor>& bias,
                               const c10::optional<at::Tensor>& input_multiplier) {
  constexpr const char* op = "int8_linear_dynamic";
  RECORD_FUNCTION("tquant::int8_linear_dynamic", std::vector<c10::IValue>());
  check_bias(bias, weight, op);
  auto f = flatten_input(x, weight, op);
  const at::Tensor mult = input_multiplier_of(input_multiplier, weight.in_features(), op);
  if (f.x2d.size(0) == 0) return at::zeros(f.out_shape, x.options());
  const auto b = defined_bias(bias);
  at::Tensor y;
  std::vector<int64_t> nonfinite;
  if (weight.path == Int8GemmPath::kOneDnnQLinear) {
    // oneDNN takes one input scale; the per-row scale and the bias go in one extra pass
    // (scale_rows_add_bias_avx512): y = (acc * s_w[n]) * s_x[m] + bias[n].
    auto [qx, sx] = quantize_per_token_impl(f.x2d, kActivationZeroPoint, &nonfinite, mult);
    y = qlinear_onednn(qx, 1.0, weight, weight.scale, c10::nullopt);
    if (cpu_has_avx512f() && y.is_contiguous()) {
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
                    const Int8Weight& weight, const c10::optional<at::Tensor>& bias) {
  auto acc = at::matmul(q.to(at::kLong), weight.qweight.to(at::kLong).t());
  auto y = acc.to(at::kDouble) * row_scale * weight.scale.to(at::kDouble).unsqueeze(0);
  if (bias.has_value() && bias->defined()) y = y + bias->to(at::kDouble);
  return y.to(at::kFloat);
}

}  // namespace

at::Tensor int8_linear_static_ref(const at::Tensor& x, double input_scale, const Int8Weight& weight,
                                  const c10::optional<at::Tensor>& bias,
                                  const c10::optional<at::Tensor>& input_multiplier, bool gelu) {
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
                                   const c10::optional<at::Tensor>& bias,
                                   const c10::optional<at::Tensor>& input_multiplier) {
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
                             const at::Tensor& w_scale, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(
      qx.dim() == 2 && qx.scalar_type() == at::kChar && qx.size(1) == weight.in_features(),
      "int8_gemm_dequant: expected int8 codes of shape [M, ", weight.in_features(), "], got ",
      qx.sizes(), " ", qx.scalar_type());
  auto ws = w_scale.to(at::kFloat).contiguous();
  if (weight.path == Int8GemmPath::kOneDnnQLinear) {
    auto qu = (qx.to(at::kInt) + kActivationZeroPoint).to(at::kByte);
    return qlinear_onednn(qu, x_scale, weight, ws, defined_bias(bias));
  }
  return qlinear_int_mm(qx.contiguous(), x_scale, weight, ws, defined_bias(bias));
}

}  // namespace detail

}  // namespace tquant
