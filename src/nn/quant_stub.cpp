#include "tquant/nn/quant_stub.h"

#include "quant_module_detail.h"

namespace tquant {

QuantStubImpl::QuantStubImpl() {
  // NOLINTNEXTLINE(clang-analyzer-optin.cplusplus.VirtualCall): as the torch modules.
  QuantStubImpl::reset();
}

void QuantStubImpl::reset() {
  if (qconfig_) {
    install_quantizers();
    apply_mode();
  }
}

void QuantStubImpl::pretty_print(std::ostream& stream) const {
  stream << "tquant::QuantStub(mode=" << to_string(mode_) << ")";
}

void QuantStubImpl::set_qconfig(const QConfig& qconfig) {
  check_qconfig(qconfig, "QuantStub");
  qconfig_ = qconfig;
  install_quantizers();
  apply_mode();
}

void QuantStubImpl::install_quantizers() {
  input_quantizer =
      detail::install_quantizer(*this, "input_quantizer", qconfig_->activation,
                                detail::quantizer_device(input_quantizer), "QuantStub");
}

void QuantStubImpl::set_mode(QuantMode mode) {
  detail::check_mode_change(mode_, mode, "QuantStub");
  TORCH_CHECK_VALUE(mode == QuantMode::kFloat || qconfig_.has_value(), "QuantStub: set_mode(",
                    to_string(mode), ") needs quantizers; call set_qconfig first");
  mode_ = mode;
  apply_mode();
}

void QuantStubImpl::apply_mode() { detail::configure_quantizer(input_quantizer, mode_); }

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

void DeQuantStubImpl::set_qconfig(const QConfig& qconfig) {
  check_qconfig(qconfig, "DeQuantStub");
  qconfig_ = qconfig;
}

void DeQuantStubImpl::set_mode(QuantMode mode) {
  TORCH_CHECK_VALUE(mode == QuantMode::kFloat || qconfig_.has_value(), "DeQuantStub: set_mode(",
                    to_string(mode), ") needs a QConfig; call set_qconfig first");
  mode_ = mode;
}

}  // namespace tquant
