#include "tquant/nn/quant_stub.h"

#include "quant_module_detail.h"

namespace tquant {

QuantStubImpl::QuantStubImpl() {
  // NOLINTNEXTLINE(clang-analyzer-optin.cplusplus.VirtualCall): as the torch modules.
  QuantStubImpl::reset();
}

void QuantStubImpl::reset() { restore_quantizers(); }

void QuantStubImpl::pretty_print(std::ostream& stream) const {
  stream << "tquant::QuantStub(mode=" << to_string(mode_) << ")";
}

void QuantStubImpl::install_quantizers() {
  input_quantizer =
      detail::install_quantizer(*this, "input_quantizer", qconfig_->activation,
                                current_quantizer_device(), "QuantStub");
}

at::Tensor QuantStubImpl::forward(const at::Tensor& input) {
  TORCH_CHECK(input.defined(), "QuantStub: expected an input tensor, got an undefined one");
  if (mode_ == QuantMode::kFloat || input_quantizer.is_empty()) return input;
  return input_quantizer(input);
}

void DeQuantStubImpl::pretty_print(std::ostream& stream) const {
  stream << "tquant::DeQuantStub(mode=" << to_string(mode_) << ")";
}

at::Tensor DeQuantStubImpl::forward(const at::Tensor& input) {
  TORCH_CHECK(input.defined(), "DeQuantStub: expected an input tensor, got an undefined one");
  return input;
}

void DeQuantStubImpl::set_mode(QuantMode mode) {
  TORCH_CHECK_VALUE(mode == QuantMode::kFloat || qconfig_.has_value(), "DeQuantStub: set_mode(",
                    to_string(mode), ") needs a QConfig; call set_qconfig first");
  mode_ = mode;
}

}  // namespace tquant
