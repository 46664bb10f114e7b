#pragma once

#include <optional>
#include <ostream>
#include <string>

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "tquant/fake_quantize.h"
#include "tquant/nn/host_scalar.h"
#include "tquant/nn/quant_mode.h"
#include "tquant/nn/quantizable.h"
#include "tquant/qconfig.h"

namespace tquant {

/// Quantizable matrix product of two activations:  forward(a, b) = at::matmul(a, b).
///
/// For the products in attention that have no weight: scores = q @ k^T and
/// context = probs @ v. It has no parameters; set_qconfig registers two children built from
/// the QConfig's activation factory: "input_quantizer" for a and "other_quantizer" for b
/// (the QConfig's weight factory is not used). A weight-only QConfig leaves both products in
/// floating point: no quantizer is registered and every mode computes at::matmul(a, b).
///
/// Modes, as QuantLinear:
///   kFloat:     at::matmul(a, b);
///   kObserve:   the same output, while the two quantizers record a and b;
///   kFakeQuant: at::matmul(fq_a(a), fq_b(b)), straight-through gradients to a and b.
///   kConverted: after convert() with static per-tensor int8 narrow symmetric quantizers: a and b
///               are rounded to int8 codes with the calibrated "input_scale" / "other_scale"
///               buffers, multiplied exactly in integers, and scaled by input_scale *
///               other_scale. On CPU (2-D and more) it runs tquant::int8_bmm_cpu, tquant's
///               own AVX-512 VNNI kernel (LibTorch ships no batched int8 GEMM for CPU;
///               include/tquant/int8_attention.h); a NaN / Inf in a row of a gives a NaN
///               output row, in b a NaN column. Elsewhere the codes are multiplied as a float
///               GEMM (exact while k * 127^2 < 2^24, float64 beyond).
/// For attention, QuantAttention fuses both products and the softmax into one kernel.
/// Switching to kFakeQuant freezes calibrated quantizers exactly as QuantLinear does.
///
/// With no parameters to follow, new quantizers are built where the previous ones were (CPU
/// for the first set_qconfig); call to(device) after set_qconfig to move them.
///
/// Example (BERT-style attention):
///   tquant::QuantMatMul scores_matmul, context_matmul;
///   auto scores = scores_matmul(q, k.transpose(-2, -1)) / std::sqrt(head_dim);
///   auto context = context_matmul(scores.softmax(-1), v);
class QuantMatMulImpl : public torch::nn::Cloneable<QuantMatMulImpl>, public QuantizableBase {
 public:
  QuantMatMulImpl();

  /// Registers the quantizers when a QConfig is set (used by clone()).
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  /// at::matmul(a, b) as the mode says. The inner dimensions must agree:
  /// a.size(-1) == b.size(-2) (b.size(0) for a 1-D b); batch dimensions broadcast.
  at::Tensor forward(const at::Tensor& a, const at::Tensor& b);

  // set_qconfig, qconfig(), set_mode (kObserve and kFakeQuant need a QConfig) and mode()
  // come from QuantizableBase.
  std::string quant_type_name() const override { return "QuantMatMul"; }

  /// Converts when both quantizers are static per-tensor int8 narrow symmetric and calibrated
  /// (scheme "int8_static"); otherwise returns the reason and stays as it is.
  ConvertResult convert() override;
  std::string converted_scheme() const override {
    return mode_ == QuantMode::kConverted ? "int8_static" : "";
  }
  void make_converted(const std::string& scheme) override;

  /// Quantizer of the left operand a; empty without an activation factory.
  FakeQuantize input_quantizer{nullptr};
  /// Quantizer of the right operand b; empty without an activation factory.
  FakeQuantize other_quantizer{nullptr};
  /// Converted state (kConverted only): the scales [] of a and b.
  at::Tensor input_scale;
  at::Tensor other_scale;

 private:
  void install_converted(at::Tensor a_scale, at::Tensor b_scale);
  at::Tensor converted_forward(const at::Tensor& a, const at::Tensor& b) const;
  // ---- QuantizableBase hooks ----
  std::vector<FakeQuantize*> quantizers() override { return {&input_quantizer, &other_quantizer}; }
  void install_quantizers() override;

  void check_inputs(const at::Tensor& a, const at::Tensor& b) const;

  /// Host copies of input_scale / other_scale: forward never waits for the GPU to read them.
  detail::HostScalar input_scale_host_, other_scale_host_;
};
TORCH_MODULE(QuantMatMul);

}  // namespace tquant
