#pragma once

/// tquant: post-training quantization and quantization-aware training for LibTorch.
///
/// Layers (each uses only those above it):
///   formats.h            dtypes, symmetric / affine, granularity, QuantSpec
///   qparams.h            QParams and min/max -> scale / zero point
///   functional.h         quantize, dequantize, fake_quantize (STE, clipped STE, LSQ)
///   histogram_search.h   percentile, entropy and MSE range searches on a histogram
///   observer.h           min-max observers (running, moving average, per channel)
///   histogram_observer.h histogram observer (per tensor and per channel)
///   fake_quantize.h      FakeQuantize and LearnableFakeQuantize modules
///   qconfig.h            QConfig (activation / weight quantizer factories) and presets
///   nn/quant_linear.h    QuantLinear: drop-in torch::nn::Linear twin with float / observe / fake-quant modes
///   qconfig_mapping.h    QConfigMapping: which module gets which QConfig (name, pattern, type, skip)
///   report.h             PrepareReport, CalibrationReport (printable)
///   quantize.h           prepare, prepare_qat, calibrate, set_quantizers_enabled, set_calibration_method,
///                        convert, quantize_dynamic
///   fuse.h               fuse Conv2d + BatchNorm2d (+ ReLU)
///   sensitivity.h        per-module sensitivity analysis and mixed-precision fallback
///   smooth_quant.h       SmoothQuant: per-input-channel factors moved from activations to weights
///   gemm.h               CPU INT8 Linear (oneDNN / _int_mm)
///   int4_pack.h          int4 codes packed two per byte (W4A8 weights)
///   cuda_int8.h          CUDA INT8 GEMM (cuBLASLt) and fused quantize / dequantize kernels
///   serialize.h          save_state / load_state (safetensors)

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
#include "tquant/gemm.h"
#include "tquant/int4_pack.h"
#include "tquant/int8_attention.h"
#include "tquant/add_layer_norm.h"
#include "tquant/cuda_int8.h"
#include "tquant/safetensors.h"
#include "tquant/serialize.h"
#include "tquant/distributed.h"
