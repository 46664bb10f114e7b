#include "demo_cuda.h"

#include <functional>

#include <torch/cuda.h>
#include <torch/torch.h>

#include "latency.h"

namespace bert {

CudaComparison compare_on_cuda(BertClassifierImpl& fp32_model, BertClassifierImpl& int8_model,
                               const DemoBatch& batch, int64_t warmup, int64_t rounds) {
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
  fp32_model.eval();
  // Each call ends in .item(), a device synchronization, so that its time is the GPU's.
  const auto forward = [&on_gpu](BertClassifierImpl& model) -> std::function<void()> {
    return [&model, &on_gpu] {
      (void)model.forward(on_gpu.input_ids, on_gpu.token_type_ids, on_gpu.attention_mask)
          .sum()
          .item<float>();
    };
  };
  const RoundTimes times =
      interleaved_rounds({forward(fp32_model), forward(int8_model)}, warmup, rounds);
  result.bf16_ms = times.median[0];
  result.int8_ms = times.median[1];
  const at::Tensor gpu_logits =
      int8_model.forward(on_gpu.input_ids, on_gpu.token_type_ids, on_gpu.attention_mask);
  result.int8_gpu_vs_cpu_max_abs =
      (gpu_logits.to(torch::kCPU, torch::kFloat32) - cpu_logits).abs().max().item<double>();
  return result;
}

}  // namespace bert
