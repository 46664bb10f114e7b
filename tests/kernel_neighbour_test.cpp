// "Poisoned neighbour" tests of the CPU kernels: every input is a view into a larger buffer
// whose elements just before and just after the view (and between its rows) are NaN. A kernel
// that reads one element too many, through a masked AVX-512 load that AddressSanitizer does not
// see, or a stride it ignores, turns that NaN into a NaN output row; a correct one gives exactly
// the output of a clean contiguous copy. Odd sizes hit the vector tails.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <vector>

#include "tquant/tquant.h"

namespace tquant {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A [rows, cols] view starting one element into a NaN-filled buffer, with row stride cols + 1
// (strided) or cols (contiguous, then the element after the last row is NaN too).
at::Tensor poisoned_view(const at::Tensor& values, bool strided) {
  const int64_t rows = values.size(0), cols = values.size(1);
  const int64_t stride = strided ? cols + 1 : cols;
  at::Tensor buffer = at::full({rows * stride + 2}, kNaN);
  at::Tensor view = buffer.as_strided({rows, cols}, {stride, 1}, /*storage_offset=*/1);
  view.copy_(values);
  return view;
}

TEST(KernelNeighbours, Int8LinearReadsOnlyItsView) {
  torch::manual_seed(70);
  for (const auto path : int8_gemm_exact_paths()) {
    for (int64_t k : {1, 15, 17, 33}) {
      const Int8Weight weight = prepare_int8_weight(at::randn({19, k}), path);
      const at::Tensor bias = at::randn({19});
      for (bool strided : {false, true}) {
        const at::Tensor clean = at::randn({7, k});
        const at::Tensor x = poisoned_view(clean, strided);
        EXPECT_TRUE(at::equal(int8_linear_static(x, 0.02, weight, bias),
                              int8_linear_static(clean, 0.02, weight, bias)))
            << to_string(path) << " K " << k << " strided " << strided;
        EXPECT_TRUE(at::equal(int8_linear_dynamic(x, weight, bias),
                              int8_linear_dynamic(clean, weight, bias)))
            << to_string(path) << " K " << k << " strided " << strided;
      }
    }
  }
}

TEST(KernelNeighbours, QuantizersReadOnlyTheirView) {
  torch::manual_seed(71);
  for (int64_t k : {1, 15, 16, 17, 33}) {
    const at::Tensor clean = at::randn({5, k});
    const at::Tensor x = poisoned_view(clean, /*strided=*/false);
    EXPECT_TRUE(at::equal(detail::quantize_per_tensor_int8(x, 0.02),
                          detail::quantize_per_tensor_int8(clean, 0.02)))
        << "K " << k;
    EXPECT_TRUE(at::equal(detail::quantize_per_token_int8(x).first,
                          detail::quantize_per_token_int8(clean).first))
        << "K " << k;
  }
}

TEST(KernelNeighbours, AttentionReadsOnlyItsHeads) {
  torch::manual_seed(72);
  // q, k, v as slices of one [B, L, 3, H, D + 1] buffer whose last column is NaN: each head's
  // row of D values is followed by a NaN, and the heads sit at a non-unit batch stride.
  const int64_t b = 2, l = 9, h = 3, d = 17;
  at::Tensor buffer = at::randn({b, l, 3, h, d + 1});
  buffer.select(4, d).fill_(kNaN);
  const at::Tensor qkv = buffer.narrow(4, 0, d);
  const at::Tensor q = qkv.select(2, 0).transpose(1, 2);  // [B, H, L, D], strided views
  const at::Tensor k = qkv.select(2, 1).transpose(1, 2);
  const at::Tensor v = qkv.select(2, 2).transpose(1, 2);
  AttentionScales scales;
  scales.query = scales.key = scales.value = 3.0 / 127;
  scales.probs = 1.0 / 127;
  const at::Tensor out = int8_attention_cpu(q, k, v, {}, scales);
  EXPECT_TRUE(out.isfinite().all().item<bool>());
  EXPECT_TRUE(at::equal(out, int8_attention_cpu(q.contiguous(), k.contiguous(), v.contiguous(),
                                                {}, scales)));
  const at::Tensor product = int8_bmm_cpu(q, k.transpose(-2, -1), 0.02, 0.02);
  EXPECT_TRUE(product.isfinite().all().item<bool>());
  EXPECT_TRUE(at::equal(product, int8_bmm_cpu(q.contiguous(), k.transpose(-2, -1).contiguous(),
                                              0.02, 0.02)));
}

TEST(KernelNeighbours, AddLayerNormReadsOnlyItsRows) {
  torch::manual_seed(73);
  for (int64_t hidden : {1, 15, 17, 33}) {
    const at::Tensor x_clean = at::randn({6, hidden}), r_clean = at::randn({6, hidden});
    const at::Tensor weight = at::randn({hidden}), bias = at::randn({hidden});
    for (bool strided : {false, true}) {
      const at::Tensor y = add_layer_norm(poisoned_view(x_clean, strided),
                                          poisoned_view(r_clean, strided), weight, bias, 1e-12);
      EXPECT_TRUE(at::equal(y, add_layer_norm(x_clean, r_clean, weight, bias, 1e-12)))
          << "H " << hidden << " strided " << strided;
    }
  }
}

TEST(KernelNeighbours, FakeQuantizeNonFiniteCheckReadsOnlyItsView) {
  // fake_quantize scans its input for NaN / Inf (AVX-512 where the CPU has it) to keep them NaN.
  const QParams qp = qparams_from_amax(at::full({}, 3.0f), QuantSpec().narrow_range(true));
  for (int64_t n : {1, 15, 16, 17, 33}) {
    const at::Tensor clean = at::randn({3, n});
    const at::Tensor y = fake_quantize(poisoned_view(clean, /*strided=*/false), qp);
    EXPECT_TRUE(at::equal(y, fake_quantize(clean, qp))) << "n " << n;
  }
}

}  // namespace
}  // namespace tquant
