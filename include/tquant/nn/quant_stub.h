#pragma once

#include <optional>
#include <ostream>
#include <string>

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "tquant/fake_quantize.h"
#include "tquant/nn/quant_mode.h"
#include "tquant/nn/quantizable.h"
#include "tquant/qconfig.h"

namespace tquant {

/// An explicit quantize-dequantize point (torch.ao's QuantStub) for activations that no
/// quantizable module's own input quantizer covers, e.g. the model input or a residual sum.
///
/// set_qconfig registers "input_quantizer", built from the QConfig's activation factory (the
/// weight factory is not used; a weight-only QConfig registers nothing and the stub stays an
/// identity). Modes, as QuantLinear:
///   kFloat:     returns x;
///   kObserve:   returns x while input_quantizer records it;
///   kFakeQuant: returns QDQ(x), straight-through gradient.
/// Switching to kFakeQuant freezes a calibrated quantizer exactly as QuantLinear does. With no
/// parameters to follow, new quantizers are built where the previous one was (CPU for the first
/// set_qconfig); call to(device) after set_qconfig to move them.
///
/// Example:
///   tquant::QuantStub quant;
///   quant->set_qconfig(tquant::int8_static_qconfig());
///   quant->set_mode(tquant::QuantMode::kObserve);
///   at::Tensor y = quant(x);   // x, recorded
class QuantStubImpl : public torch::nn::Cloneable<QuantStubImpl>, public QuantizableBase {
 public:
  QuantStubImpl();

  /// Registers the quantizer when a QConfig is set (used by clone()).
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  at::Tensor forward(const at::Tensor& input);

  // set_qconfig, qconfig(), set_mode (kObserve and kFakeQuant need a QConfig) and mode()
  // come from QuantizableBase.
  std::string quant_type_name() const override { return "QuantStub"; }

  /// Quantizer of the input; empty without a QConfig or an activation factory.
  FakeQuantize input_quantizer{nullptr};

 private:
  // ---- QuantizableBase hooks ----
  std::vector<FakeQuantize*> quantizers() override { return {&input_quantizer}; }
  void install_quantizers() override;
};
TORCH_MODULE(QuantStub);

/// Marks where a tensor leaves the quantized region (torch.ao's DeQuantStub). In the float,
/// observe and fake-quant modes tensors are already floating point, so forward returns its
/// input unchanged in every mode; it holds no quantizer and no state. After conversion it will
/// mark where INT8 tensors are dequantized back to float.
///
/// It implements Quantizable so the passes set its QConfig and mode like any other tquant
/// module and report it.
class DeQuantStubImpl : public torch::nn::Cloneable<DeQuantStubImpl>, public QuantizableBase {
 public:
  DeQuantStubImpl() = default;

  void reset() override {}
  void pretty_print(std::ostream& stream) const override;

  /// Returns input unchanged.
  at::Tensor forward(const at::Tensor& input);

  // set_qconfig (QuantizableBase's) checks and stores the QConfig; nothing is registered.
  /// kObserve and kFakeQuant need a QConfig, as for the other tquant modules. Unlike
  /// QuantizableBase::set_mode, every change is allowed (there is nothing to convert).
  void set_mode(QuantMode mode) override;
  std::string quant_type_name() const override { return "DeQuantStub"; }

 private:
  // ---- QuantizableBase hooks: no quantizers ----
  std::vector<FakeQuantize*> quantizers() override { return {}; }
  void install_quantizers() override {}
};
TORCH_MODULE(DeQuantStub);

}  // namespace tquant
