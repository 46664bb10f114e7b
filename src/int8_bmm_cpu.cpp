// Batched INT8 product of two activations on the CPU (include/tquant/int8_attention.h).

#include <cmath>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include "tquant/int8_attention.h"
#include "tquant/gemm.h"

#include "int8_vnni_gemm.h"

namespace tquant {

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct BmmShape {
  std::vector<int64_t> batch;  // broadcast batch dimensions
  int64_t m, k, n;
};

BmmShape check_bmm_inputs(const at::Tensor& a, const at::Tensor& b, double a_scale,
                          double b_scale) {
  TORCH_CHECK_VALUE(a.defined() && b.defined() && a.dim() >= 2 && b.dim() >= 2,
                    "int8_bmm_cpu: expected a [..., M, K] and b [..., K, N], got ",
                    a.defined() ? a.sizes() : at::IntArrayRef{}, " and ",
                    b.defined() ? b.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(a.size(-1) == b.size(-2), "int8_bmm_cpu: expected equal inner dimensions, "
                    "got a ", a.sizes(), " and b ", b.sizes());
  for (const auto* t : {&a, &b}) {
    TORCH_CHECK_VALUE(at::isFloatingType(t->scalar_type()) && t->device().is_cpu(),
                      "int8_bmm_cpu: expected float CPU tensors, got ", t->scalar_type(), " on ",
                      t->device());
  }
  detail::check_int8_scale(a_scale, "int8_bmm_cpu", "a");
  detail::check_int8_scale(b_scale, "int8_bmm_cpu", "b");
  TORCH_CHECK_VALUE(a.size(-1) <= kMaxInt8GemmK, "int8_bmm_cpu: expected K of at most ",
                    kMaxInt8GemmK, " (int32 sums of 127 * 127 products), got ", a.size(-1));
  return {at::infer_size(a.sizes().slice(0, a.dim() - 2), b.sizes().slice(0, b.dim() - 2)),
          a.size(-2), a.size(-1), b.size(-1)};
}

// x float32 expanded to [batch..., r, c] with unit stride along one of its last two dimensions
// (no copy when it already has one: the transposed keys of attention read as columns).
at::Tensor expanded(const at::Tensor& x, const std::vector<int64_t>& batch) {
  std::vector<int64_t> shape = batch;
  shape.push_back(x.size(-2));
  shape.push_back(x.size(-1));
  at::Tensor e = x.to(at::kFloat).expand(shape);
  return e.stride(-1) == 1 || e.stride(-2) == 1 ? e : e.contiguous().expand(shape);
}

// Element offset of each of the flattened batch entries of x [batch..., r, c] (row-major
// order over the batch dimensions, any strides, 0 for broadcast ones).
std::vector<int64_t> batch_offsets(const at::Tensor& x) {
  const int64_t dims = x.dim() - 2;
  std::vector<int64_t> offsets{0};
  for (int64_t d = 0; d < dims; ++d) {
    std::vector<int64_t> next;
    next.reserve(offsets.size() * static_cast<size_t>(x.size(d)));
    for (int64_t base : offsets) {
      for (int64_t i = 0; i < x.size(d); ++i) next.push_back(base + i * x.stride(d));
    }
    offsets = std::move(next);
  }
  return offsets;
}

}  // namespace

at::Tensor int8_bmm_cpu(const at::Tensor& a_in, const at::Tensor& b_in, double a_scale,
                        double b_scale) {
  RECORD_FUNCTION("tquant::int8_bmm_cpu", std::vector<c10::IValue>());
  const BmmShape s = check_bmm_inputs(a_in, b_in, a_scale, b_scale);
  if (!int8_cpu_kernels_available() || s.m == 0 || s.k == 0 || s.n == 0) {
    return int8_bmm_ref(a_in, b_in, a_scale, b_scale);
  }
  at::Tensor a = expanded(a_in, s.batch);
  if (a.stride(-1) != 1) a = a.contiguous();
  // B's packing reads float rows with unit stride: rows of b (K index) or rows of b^T.
  const at::Tensor b = expanded(b_in, s.batch);
  const bool b_rows = b.stride(-1) == 1;
  const std::vector<int64_t> a_offsets = batch_offsets(a), b_offsets = batch_offsets(b);
  const int64_t batches = static_cast<int64_t>(a_offsets.size());

  at::Tensor out = at::empty({batches, s.m, s.n}, a.options());
  const auto layout = detail::VnniLayout::for_shape(s.k, s.n);
  const int64_t lda = layout.k4 * 4, ldc = layout.n16 * 16;
  const float inv_a = 1.0f / static_cast<float>(a_scale);
  const float inv_b = 1.0f / static_cast<float>(b_scale);
  // One float32 rounding of the exact sum, as the float GEMM of codes then mul_(s_a * s_b).
  const float out_scale = static_cast<float>(a_scale * b_scale);
  const float* ap = a.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, batches, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> qa(static_cast<size_t>(s.m * lda));
    std::vector<int8_t> packed(static_cast<size_t>(layout.bytes()));
    std::vector<int32_t> comp(static_cast<size_t>(ldc));
    std::vector<char> bad_columns(static_cast<size_t>(s.n));
    std::vector<char> row_ok(static_cast<size_t>(s.m));
    std::vector<int32_t> acc(static_cast<size_t>(s.m * ldc));
    std::vector<int8_t> scratch;
    for (int64_t i = begin; i < end; ++i) {
      const float* bi = bp + b_offsets[static_cast<size_t>(i)];
      bool b_finite;
      if (b_rows) {
        b_finite = detail::pack_b_avx512(bi, s.k, s.n, b.stride(-2), inv_b, /*rows_are_k=*/true, layout,
                              packed.data(), comp.data(), bad_columns.data(), scratch);
      } else {
        b_finite = detail::pack_b_avx512(bi, s.n, s.k, b.stride(-1), inv_b, /*rows_are_k=*/false, layout,
                              packed.data(), comp.data(), bad_columns.data(), scratch);
      }
      const float* ai = ap + a_offsets[static_cast<size_t>(i)];
      for (int64_t r = 0; r < s.m; ++r) {
        if (r + detail::kPrefetchRows < s.m) {
          detail::prefetch_row(ai + (r + detail::kPrefetchRows) * a.stride(-2), s.k);
        }
        row_ok[r] = detail::quantize_row_avx512(ai + r * a.stride(-2), s.k, inv_a, 128,
                                                qa.data() + r * lda);
      }
      detail::gemm_u8s8s32_vnni(qa.data(), lda, packed.data(), layout, comp.data(), acc.data(),
                                ldc, s.m, s.n);
      for (int64_t r = 0; r < s.m; ++r) {
        float* orow = op + (i * s.m + r) * s.n;
        if (!row_ok[r]) {
          std::fill(orow, orow + s.n, kNaN);
          continue;
        }
        detail::dequantize_row_avx512(acc.data() + r * ldc, s.n, out_scale, orow);
        if (b_finite) continue;
        for (int64_t c = 0; c < s.n; ++c) {
          if (bad_columns[c]) orow[c] = kNaN;
        }
      }
    }
  });
  std::vector<int64_t> shape = s.batch;
  shape.push_back(s.m);
  shape.push_back(s.n);
  return out.view(shape).to(a_in.scalar_type());
}

at::Tensor int8_bmm_ref(const at::Tensor& a, const at::Tensor& b, double a_scale,
                        double b_scale) {
  const BmmShape s = check_bmm_inputs(a, b, a_scale, b_scale);
  const at::ScalarType dtype = detail::exact_codes_dtype(s.k);
  const at::Tensor acc = at::matmul(detail::int8_codes_or_nan_ref(a, a_scale, dtype),
                                    detail::int8_codes_or_nan_ref(b, b_scale, dtype));
  return acc.to(at::kFloat).mul_(static_cast<float>(a_scale * b_scale)).to(a.scalar_type());
}

}  // namespace tquant
