#include "linear_int8_gemm.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "tquant/cuda_int8.h"

namespace tquant::detail {

LinearGemmWeights linear_gemm_weights(const at::Tensor& codes, const at::Tensor& scale) {
  TORCH_INTERNAL_ASSERT(codes.dim() == 2 && (scale.dim() == 1 || scale.dim() == 2) &&
                        scale.size(0) == codes.size(0));
  const int64_t pieces = scale.dim() == 2 ? scale.size(1) : 1;
  TORCH_INTERNAL_ASSERT(codes.size(1) % pieces == 0);
  LinearGemmWeights result;
  result.block_cols = codes.size(1) / pieces;
  for (int64_t b = 0; b < pieces; ++b) {
    at::Tensor c = pieces == 1 ? codes.contiguous()
                               : codes.narrow(1, b * result.block_cols, result.block_cols)
                                     .contiguous();
    at::Tensor s = (scale.dim() == 2 ? scale.select(1, b) : scale).to(at::kFloat).contiguous();
    if (c.is_cpu()) result.packed.push_back(prepare_int8_weight(c, s));
    result.codes.push_back(std::move(c));
    result.scales.push_back(std::move(s));
  }
  return result;
}

namespace {

/// One piece on CUDA: the fused kernels when built and N % 4 == 0 (cuBLASLt's int8 regular
/// ordering), otherwise their exact ATen twin on the GPU (slow; warned once).
at::Tensor piece_cuda(const at::Tensor& x, std::optional<double> input_scale,
                      const at::Tensor& codes, const at::Tensor& scale,
                      const std::optional<at::Tensor>& bias,
                      const std::function<std::string()>& what, bool gelu) {
  const bool built = cuda_int8_built();
  if (built && codes.size(0) % kInt8GemmDimMultiple == 0) {
    return int8_linear_cuda(x, input_scale, codes, scale, bias, gelu);
  }
  TORCH_WARN_ONCE(what(), " on CUDA runs the ATen reference int8_linear_cuda_ref "
                  "(slow) because ", built ? "out_features is not a multiple of 4"
                                           : "tquant was built without CUDA kernels",
                  " (warned once)");
  return int8_linear_cuda_ref(x, input_scale, codes, scale, bias, gelu);
}

}  // namespace

at::Tensor linear_int8_gemm(const at::Tensor& x, std::optional<double> input_scale,
                            const LinearGemmWeights& weights, const at::Tensor& bias,
                            const std::function<std::string()>& what,
                            const at::Tensor& input_multiplier, bool gelu) {
  const size_t pieces = weights.codes.size();
  // One piece takes GELU inside its epilogue (except the CPU dynamic path); otherwise it runs
  // once on the sum.
  const bool gelu_in_piece = gelu && pieces == 1 && (input_scale.has_value() || !x.is_cpu());
  TORCH_INTERNAL_ASSERT(pieces >= 1 && (input_scale.has_value() || pieces == 1));
  TORCH_CHECK_NOT_IMPLEMENTED(x.is_cpu() || x.is_cuda(), what(), " runs on CPU and CUDA tensors, "
                              "got a ", x.device(), " tensor");
  const bool cpu = x.is_cpu();
  TORCH_CHECK_VALUE(weights.codes.front().device() == x.device(), what(), ": the input is on ",
                    x.device(), " but the converted weight on ", weights.codes.front().device(),
                    "; move the module with .to(device)");
  // The CPU GEMMs take float32; on CUDA the pieces of a blocked weight are summed in float32.
  const bool f32 = cpu || pieces > 1;
  const at::Tensor input = f32 ? x.to(at::kFloat) : x;
  at::Tensor y;
  for (size_t b = 0; b < pieces; ++b) {
    const at::Tensor xb =
        pieces == 1 ? input
                    : input.narrow(-1, static_cast<int64_t>(b) * weights.block_cols,
                                   weights.block_cols);
    // The bias is added once, with the first piece.
    std::optional<at::Tensor> piece_bias;
    if (b == 0 && bias.defined()) piece_bias = f32 ? bias.to(at::kFloat) : bias;
    // SmoothQuant's per-channel multiplier, cut like x.
    const at::Tensor mb =
        !input_multiplier.defined() || pieces == 1
            ? input_multiplier
            : input_multiplier.narrow(0, static_cast<int64_t>(b) * weights.block_cols,
                                      weights.block_cols);
    at::Tensor yb;
    if (cpu) {
      const std::optional<at::Tensor> cb =
          piece_bias ? std::optional<at::Tensor>(*piece_bias) : std::nullopt;
      const std::optional<at::Tensor> cm =
          mb.defined() ? std::optional<at::Tensor>(mb) : std::nullopt;
      yb = input_scale
               ? int8_linear_static(xb, *input_scale, weights.packed[b], cb, cm, gelu_in_piece)
               : int8_linear_dynamic(xb, weights.packed[b], cb, cm);
    } else {
      const at::Tensor xm = mb.defined() ? (xb * mb).to(xb.scalar_type()) : xb;
      yb = piece_cuda(xm, input_scale, weights.codes[b], weights.scales[b], piece_bias, what,
                      gelu_in_piece);
    }
    y = b == 0 ? yb : y.add_(yb);
  }
  if (gelu && !gelu_in_piece) y = at::gelu_(y);
  return y.to(x.scalar_type());
}

}  // namespace tquant::detail
