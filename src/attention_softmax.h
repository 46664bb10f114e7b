#pragma once

// Internal: the softmax rule shared by every mode of attention (float, fake-quant, converted
// kernel and its reference), docs/api.md "Non-finite values":
//   - a query row whose every score is -inf (fully masked: it attends to nothing) gets
//     probabilities 0, so its output is 0, as LibTorch's SDPA gives on CPU;
//   - a row holding a NaN or +inf score (NaN input, +inf in an additive mask, an overflowing
//     score) is NaN, as softmax gives.

#include <ATen/ATen.h>

#include <limits>

namespace tquant::detail {

/// softmax(scores, -1) under the rule above. Fully masked rows go through softmax as zeros and
/// come out as zeros, so their backward is zero, not NaN.
inline at::Tensor attention_softmax(const at::Tensor& scores) {
  const at::Tensor fully_masked =
      scores.eq(-std::numeric_limits<double>::infinity()).all(-1, /*keepdim=*/true);
  const at::Tensor zero = at::zeros({}, scores.options());
  return at::where(fully_masked, zero, at::softmax(at::where(fully_masked, zero, scores), -1));
}

}  // namespace tquant::detail
