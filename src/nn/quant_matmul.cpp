#include "tquant/nn/quant_matmul.h"

#include <string>

#include <ATen/ATen.h>

#include "quant_module_detail.h"

namespace tquant {

namespace {

constexpr const char* kName = "QuantMatMul";

}  // namespace

QuantMatMulImpl::QuantMatMulImpl() {
  // NOLINTNEXTLINE(clang-analyzer-optin.cplusplus.VirtualCall): as the torch modules.
  QuantMatMulImpl::reset();
}

void QuantMatMulImpl::reset() {
  if (qconfig_) {
    install_quantizers();
    apply_mode();
  }
}

void QuantMatMulImpl::pretty_print(std::ostream& stream) const {
  stream << "tquant::QuantMatMul(mode=" << to_string(mode_) << ")";
}

void QuantMatMulImpl::set_qconfig(const QConfig& qconfig) {
  check_qconfig(qconfig, kName);
  qconfig_ = qconfig;
  install_quantizers();
  apply_mode();
}

void QuantMatMulImpl::install_quantizers() {
  auto device = detail::quantizer_device(input_quantizer);
  if (!device) device = detail::quantizer_device(other_quantizer);
  input_quantizer =
      detail::install_quantizer(*this, "input_quantizer", qconfig_->activation, device, kName);
  other_quantizer =
      detail::install_quantizer(*this, "other_quantizer", qconfig_->activation, device, kName);
}

void QuantMatMulImpl::set_mode(QuantMode mode) {
  TORCH_CHECK_VALUE(mode == QuantMode::kFloat || qconfig_.has_value(), kName, ": set_mode(",
                    to_string(mode), ") needs quantizers; call set_qconfig first");
  mode_ = mode;
  apply_mode();
}

void QuantMatMulImpl::apply_mode() {
  detail::configure_quantizer(input_quantizer, mode_);
  detail::configure_quantizer(other_quantizer, mode_);
}

void QuantMatMulImpl::check_inputs(const at::Tensor& a, const at::Tensor& b) const {
  TORCH_CHECK(a.defined() && b.defined(), kName, ": expected two input tensors, got ",
              a.defined() ? "an undefined b" : "an undefined a");
  TORCH_CHECK(a.dim() >= 1 && b.dim() >= 1, kName,
              ": expected inputs with at least one dimension, got shapes ", a.sizes(), " and ",
              b.sizes());
  const int64_t inner_b = b.dim() == 1 ? b.size(0) : b.size(-2);
  TORCH_CHECK(a.size(-1) == inner_b, kName,
              ": expected a [..., n, k] and b [..., k, m] with equal inner dimensions k, got a "
              "of shape ",
              a.sizes(), " (k = ", a.size(-1), ") and b of shape ", b.sizes(), " (k = ", inner_b,
              ")");
}

at::Tensor QuantMatMulImpl::forward(const at::Tensor& a, const at::Tensor& b) {
  check_inputs(a, b);
  if (mode_ == QuantMode::kFloat) return at::matmul(a, b);
  const at::Tensor qa = input_quantizer.is_empty() ? a : input_quantizer(a);
  const at::Tensor qb = other_quantizer.is_empty() ? b : other_quantizer(b);
  return at::matmul(qa, qb);
}

}  // namespace tquant
