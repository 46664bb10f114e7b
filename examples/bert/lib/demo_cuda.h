#pragma once

#include <string>

#include "bert_model.h"
#include "demo_data.h"

namespace bert {

/// The GPU half of the demo's step 5: the converted INT8 model against the FP32 model cast to
/// bf16, both on the first CUDA device, on the same batch as the CPU latency.
struct CudaComparison {
  std::string device;        ///< which device ("cuda:0 of N")
  double bf16_ms = 0.0;      ///< median latency of the bf16 model
  double int8_ms = 0.0;      ///< median latency of the converted model (cuBLASLt INT8 GEMMs)
  /// Largest |logit| difference between the converted model on the GPU and on the CPU: both
  /// run integer GEMMs, so only the float parts (quantize rounding at ties, epilogues,
  /// LayerNorm, softmax) may differ.
  double int8_gpu_vs_cpu_max_abs = 0.0;
};

/// Moves both models to cuda:0 (`fp32_model` as bf16) and measures them as the CPU latency
/// is measured (interleaved_rounds, lib/latency.h: `warmup` forwards each, then the median of
/// `rounds` interleaved rounds; each forward ends in a device synchronization). Both models are left on
/// the GPU. Throws if no CUDA device is visible or a CUDA step fails (e.g. tquant was built
/// without its CUDA kernels).
CudaComparison compare_on_cuda(BertClassifierImpl& fp32_model, BertClassifierImpl& int8_model,
                               const DemoBatch& batch, int64_t warmup, int64_t rounds);

}  // namespace bert
