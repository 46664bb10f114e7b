#pragma once

/// tquant: post-training quantization and quantization-aware training for LibTorch.
///
/// Headers, roughly from building blocks to passes (a header may use any other; the list is a
/// reading order, not a dependency rule):
///   formats.h            dtypes, symmetric / affine, granularity, QuantSpec
///   qparams.h            QParams and min/max -> scale / zero point, per-token quantization
///   functional.h         quantize, dequantize, fake_quantize (STE, clipped STE, LSQ)
///   histogram_search.h   percentile, entropy and MSE range searches on a histogram
///   observer.h           min-max observers (running, moving average, per channel)
///   histogram_observer.h histogram observer (per tensor and per channel, streaming or shared grid)
///   fake_quantize.h      FakeQuantize (fixed or learnable scale) and LearnableFakeQuantize
///   qconfig.h            QConfig (activation / weight quantizer factories) and presets
///   nn/quantizable.h     Quantizable: the interface the passes drive, QuantizableBase
///   nn/quant_mode.h      QuantMode: float, observe, fake-quant, converted
///   nn/quant_linear.h    QuantLinear: torch::nn::Linear twin (SmoothQuant factors, fused GELU)
///   nn/quant_conv2d.h    QuantConv2d: torch::nn::Conv2d twin (fused ReLU)
///   nn/quant_matmul.h    QuantMatMul: a quantized matrix product of two activations
///   nn/quant_attention.h QuantAttention: fused INT8 scaled-dot-product attention
///   nn/quant_embedding.h QuantEmbedding: torch::nn::Embedding twin (weight-only)
///   nn/quant_stub.h      QuantStub / DeQuantStub
///   qconfig_mapping.h    QConfigMapping: which module gets which QConfig (name, pattern, type, skip)
///   report.h             PrepareReport, CalibrationReport, ConvertReport (printable)
///   quantize.h           prepare, prepare_qat, calibrate, enable_quantizers, enable_observers,
///                        set_calibration_method, convert, quantize_dynamic
///   fuse.h               fuse Conv2d + BatchNorm2d (+ ReLU)
///   sensitivity.h        per-module sensitivity analysis and mixed-precision fallback
///   smooth_quant.h       SmoothQuant: per-input-channel factors moved from activations to weights
///   capabilities.h       capabilities(): what this machine runs (CPU level, kernels, CUDA)
///   cpu_features.h       the CPU's instruction sets and the cap that selects tquant's kernels
///   gemm.h               CPU INT8 Linear (oneDNN / _int_mm / int16 multiply-add)
///   int4_pack.h          int4 codes packed two per byte (W4A8 weights)
///   int8_attention.h     CPU INT8 attention and batched matmul kernels
///   add_layer_norm.h     residual add + LayerNorm in one pass
///   cuda_int8.h          CUDA INT8 GEMM (cuBLASLt) and fused quantize / dequantize kernels
///   safetensors.h        safetensors files (read / write)
///   serialize.h          save_state / load_state (safetensors)
///   distributed.h        calibration and QAT across processes (c10d), launch_local
///
/// Diagnostics: the library returns reports the caller prints; it warns through TORCH_WARN
/// (stderr by default, c10::WarningHandler to redirect) and otherwise prints nothing.

#include "tquant/formats.h"
#include "tquant/qparams.h"
#include "tquant/functional.h"
#include "tquant/histogram_search.h"
#include "tquant/observer.h"
#include "tquant/histogram_observer.h"
#include "tquant/fake_quantize.h"
#include "tquant/qconfig.h"
#include "tquant/nn/quantizable.h"
#include "tquant/nn/quant_linear.h"
#include "tquant/nn/quant_conv2d.h"
#include "tquant/nn/quant_matmul.h"
#include "tquant/nn/quant_attention.h"
#include "tquant/nn/quant_embedding.h"
#include "tquant/nn/quant_stub.h"
#include "tquant/qconfig_mapping.h"
#include "tquant/report.h"
#include "tquant/quantize.h"
#include "tquant/fuse.h"
#include "tquant/sensitivity.h"
#include "tquant/smooth_quant.h"
#include "tquant/cpu_features.h"
#include "tquant/capabilities.h"
#include "tquant/gemm.h"
#include "tquant/int4_pack.h"
#include "tquant/int8_attention.h"
#include "tquant/add_layer_norm.h"
#include "tquant/cuda_int8.h"
#include "tquant/safetensors.h"
#include "tquant/serialize.h"
#include "tquant/distributed.h"
