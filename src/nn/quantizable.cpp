#include "tquant/nn/quantizable.h"

#include "quant_module_detail.h"

namespace tquant {

void QuantizableBase::set_qconfig(const QConfig& qconfig) {
  check_qconfig(qconfig, error_name());
  check_module_qconfig(qconfig);
  qconfig_ = qconfig;
  install_quantizers();
  apply_mode();
}

void QuantizableBase::set_mode(QuantMode mode) {
  const std::string what = error_name();
  detail::check_mode_change(mode_, mode, what);
  TORCH_CHECK_VALUE(mode == QuantMode::kFloat || qconfig_.has_value(), what, ": set_mode(",
                    to_string(mode), ") needs quantizers; call set_qconfig first");
  check_module_mode(mode);
  mode_ = mode;
  apply_mode();
}

void QuantizableBase::apply_mode() {
  for (FakeQuantize* quantizer : quantizers()) detail::configure_quantizer(*quantizer, mode_);
}

void QuantizableBase::restore_quantizers() {
  if (!qconfig_) return;
  install_quantizers();
  apply_mode();
}

std::optional<c10::Device> QuantizableBase::current_quantizer_device() {
  for (FakeQuantize* quantizer : quantizers()) {
    if (auto device = detail::quantizer_device(*quantizer)) return device;
  }
  return std::nullopt;
}

}  // namespace tquant
