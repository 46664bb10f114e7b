#include "demo_cuda.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include "demo_train.h"

namespace bert {

CudaComparison compare_on_cuda(BertClassifierImpl& fp32_model, BertClassifierImpl& int8_model,
                               const DemoBatch& batch, int64_t warmup, int64_t runs) {
  TORCH_CHECK(torch::cuda::is_available(), "compare_on_cuda: no CUDA device is visible");
  torch::NoGradGuard no_grad;
  int8_model.eval();
  const at::Tensor cpu_logits =
      int8_model.forward(batch.input_ids, batch.token_type_ids, batch.attention_mask);

  const torch::Device gpu(torch::kCUDA, 0);
  const DemoBatch on_gpu{batch.input_ids.to(gpu), batch.token_type_ids.to(gpu),
                         batch.attention_mask.to(gpu), batch.labels.to(gpu)};
  fp32_model.to(gpu, torch::kBFloat16);
  int8_model.to(gpu);

  CudaComparison result;
  result.device = "cuda:0 of " + std::to_string(torch::cuda::device_count());
  result.bf16_ms = median_latency_ms(fp32_model, on_gpu, warmup, runs);
  result.int8_ms = median_latency_ms(int8_model, on_gpu, warmup, runs);
  const at::Tensor gpu_logits =
      int8_model.forward(on_gpu.input_ids, on_gpu.token_type_ids, on_gpu.attention_mask);
  result.int8_gpu_vs_cpu_max_abs =
      (gpu_logits.to(torch::kCPU, torch::kFloat32) - cpu_logits).abs().max().item<double>();
  return result;
}

}  // namespace bert
