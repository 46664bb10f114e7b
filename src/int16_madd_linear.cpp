#include "int16_madd_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cfloat>
#include <cstring>

#include "int16_madd_gemm.h"
#include "tquant/cpu_features.h"

namespace tquant::detail {

namespace {

constexpr float kQMax = 127.0f;
// Rows per block: a multiple of the kernels' 6-row tile; with K <= 1536 a block's int16 codes
// (<= 288 KiB) and a 64-column panel of the weight (<= 192 KiB) stay in L2 together.
constexpr int64_t kBlockRows = 96;

int64_t block_rows(int64_t m) {
  // Enough blocks for every thread; multiples of 6 rows.
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t per_thread = (m + threads - 1) / threads;
  return std::max<int64_t>(6, std::min(kBlockRows, (per_thread + 5) / 6 * 6));
}

// In place over rows [0, rows) of y, which hold int32 accumulators:
//   y[r, n] = float(acc[r, n]) * col[n] * (row_scale ? row_scale[r] : 1) + (bias ? bias[n] : 0)
void dequantize_rows(float* y, int64_t rows, int64_t n, const float* col, const float* row_scale,
                     const float* bias) {
  for (int64_t r = 0; r < rows; ++r) {
    float* yr = y + r * n;
    const float s = row_scale != nullptr ? row_scale[r] : 1.0f;
    for (int64_t j = 0; j < n; ++j) {
      int32_t acc;
      std::memcpy(&acc, yr + j, sizeof(acc));
      float v = static_cast<float>(acc) * col[j];
      if (row_scale != nullptr) v *= s;
      yr[j] = bias != nullptr ? v + bias[j] : v;
    }
  }
}

}  // namespace

at::Tensor pack_weight_for_int16_madd(const at::Tensor& qweight) {
  const at::Tensor w = qweight.contiguous();
  const int64_t n = w.size(0), k = w.size(1);
  const auto layout = Int16PairLayout::for_shape(k, n);
  at::Tensor packed = at::empty({layout.elements()}, w.options().dtype(at::kShort));
  pack_weight_int16_pairs(w.const_data_ptr<int8_t>(), n, k, layout, packed.data_ptr<int16_t>());
  return packed;
}

at::Tensor int8_linear_int16_madd(const at::Tensor& x, std::optional<double> input_scale,
                                  const at::Tensor& packed_weight, int64_t out_features,
                                  const at::Tensor& weight_scale,
                                  const std::optional<at::Tensor>& bias, const at::Tensor& mult,
                                  std::vector<int64_t>* nonfinite) {
  RECORD_FUNCTION("tquant::int8_linear_int16_madd", std::vector<c10::IValue>());
  const CpuIsa isa = cpu_isa();
  const int64_t m = x.size(0), k = x.size(1), n = out_features;
  const auto layout = Int16PairLayout::for_shape(k, n);
  const int64_t lda = 2 * layout.k2;
  at::Tensor y = at::empty({m, n}, x.options().dtype(at::kFloat));
  at::Tensor codes = at::empty({m, lda}, x.options().dtype(at::kShort));
  at::Tensor row_scale = input_scale.has_value() ? at::Tensor() : at::empty({m}, x.options());
  // col[n] = s_x * s_w[n] (per tensor), s_w[n] (per token): float32, as the other paths.
  const at::Tensor col = input_scale.has_value()
                             ? weight_scale.to(at::kFloat) * static_cast<float>(*input_scale)
                             : weight_scale.to(at::kFloat).contiguous();
  const float inv_x = input_scale.has_value() ? 1.0f / static_cast<float>(*input_scale) : 0.0f;

  const float* xp = x.const_data_ptr<float>();
  const float* mp = mult.defined() ? mult.const_data_ptr<float>() : nullptr;
  const int16_t* wp = packed_weight.const_data_ptr<int16_t>();
  const float* colp = col.const_data_ptr<float>();
  const float* bp = bias.has_value() ? bias->const_data_ptr<float>() : nullptr;
  int16_t* qp = codes.data_ptr<int16_t>();
  float* sp = row_scale.defined() ? row_scale.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  std::vector<char> bad(static_cast<size_t>(m), 0);

  const int64_t rows_per_block = block_rows(m);
  const int64_t blocks = (m + rows_per_block - 1) / rows_per_block;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t r0 = blk * rows_per_block;
      const int64_t rows = std::min(rows_per_block, m - r0);
      for (int64_t r = r0; r < r0 + rows; ++r) {
        float inv = inv_x;
        if (sp != nullptr) {
          sp[r] = std::max(row_amax(isa, xp + r * k, k, mp) / kQMax, FLT_EPSILON);
          inv = 1.0f / sp[r];
        }
        bad[static_cast<size_t>(r)] = !quantize_row_int16(isa, xp + r * k, k, inv, mp, qp + r * lda);
      }
      // The accumulators go straight into y's rows, then become floats in place.
      int32_t* acc = reinterpret_cast<int32_t*>(yp + r0 * n);
      gemm_s16s16s32(isa, qp + r0 * lda, lda, wp, layout, acc, n, rows, n);
      dequantize_rows(yp + r0 * n, rows, n, colp, sp != nullptr ? sp + r0 : nullptr, bp);
    }
  });
  for (int64_t r = 0; r < m; ++r) {
    if (bad[static_cast<size_t>(r)]) nonfinite->push_back(r);
  }
  return y;
}

}  // namespace tquant::detail
