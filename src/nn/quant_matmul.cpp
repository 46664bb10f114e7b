#include "tquant/nn/quant_matmul.h"

#include <string>

#include <ATen/ATen.h>

#include "tquant/cuda_int8.h"
#include "tquant/int8_attention.h"

#include "../int8_vnni_gemm.h"
#include "converted_weight.h"
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
  if (mode_ == QuantMode::kConverted) {  // clone() of a converted module
    install_converted(at::ones({}), at::ones({}));
    return;
  }
  restore_quantizers();
}

void QuantMatMulImpl::pretty_print(std::ostream& stream) const {
  stream << "tquant::QuantMatMul(mode=" << to_string(mode_) << ")";
}

void QuantMatMulImpl::install_quantizers() {
  const auto device = current_quantizer_device();
  input_quantizer =
      detail::install_quantizer(*this, "input_quantizer", qconfig_->activation, device, kName);
  other_quantizer =
      detail::install_quantizer(*this, "other_quantizer", qconfig_->activation, device, kName);
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
  if (mode_ == QuantMode::kConverted) return converted_forward(a, b);
  const at::Tensor qa = input_quantizer.is_empty() ? a : input_quantizer(a);
  const at::Tensor qb = other_quantizer.is_empty() ? b : other_quantizer(b);
  return at::matmul(qa, qb);
}

ConvertResult QuantMatMulImpl::convert() {
  if (mode_ == QuantMode::kConverted) return {true, converted_scheme(), ""};
  if (!qconfig_ || mode_ == QuantMode::kFloat) {
    return {false, "", "in float mode (not prepared, or disabled)"};
  }
  if (input_quantizer.is_empty() || other_quantizer.is_empty()) {
    return {false, "", "no activation quantizers (weight-only config): nothing to convert"};
  }
  at::Tensor scales[2];
  FakeQuantize* quantizers[2] = {&input_quantizer, &other_quantizer};
  for (int i = 0; i < 2; ++i) {
    FakeQuantizeImpl& quantizer = **quantizers[i];
    const QuantSpec& spec = quantizer.observer_ref().quant_spec();
    if (!detail::is_int8_gemm_spec(spec) || spec.granularity() != Granularity::kPerTensor ||
        quantizer.options.dynamic()) {
      return {false, "", "no INT8 matmul for operand spec " + to_string(spec) +
                             (quantizer.options.dynamic() ? " (dynamic)" : "") +
                             " (it needs static int8 narrow-range symmetric per-tensor "
                             "operands); stays " + to_string(mode_)};
    }
    QParams qparams = quantizer.qparams();
    if (!qparams.defined() && quantizer.observer_ref().has_data()) {
      qparams = quantizer.update_qparams();
    }
    if (!qparams.defined()) {
      return {false, "", "its quantizers have no scale (not calibrated); run tquant::calibrate "
                         "before convert"};
    }
    scales[i] = qparams.scale.detach().to(at::kFloat).reshape({});
  }
  install_converted(scales[0], scales[1]);
  return {true, converted_scheme(), ""};
}

void QuantMatMulImpl::make_converted(const std::string& scheme) {
  detail::parse_scheme(scheme, {"int8_static"}, kName);
  TORCH_CHECK_VALUE(scheme == "int8_static", kName, ": expected scheme 'int8_static', got '",
                    scheme, "'");
  const auto device = detail::quantizer_device(input_quantizer).value_or(at::Device(at::kCPU));
  install_converted(at::ones({}, at::TensorOptions(device)),
                    at::ones({}, at::TensorOptions(device)));
}

void QuantMatMulImpl::install_converted(at::Tensor a_scale, at::Tensor b_scale) {
  detail::unregister_quantizer(*this, "input_quantizer", input_quantizer);
  detail::unregister_quantizer(*this, "other_quantizer", other_quantizer);
  input_scale = detail::set_buffer(*this, "input_scale", std::move(a_scale));
  other_scale = detail::set_buffer(*this, "other_scale", std::move(b_scale));
  input_scale_host_.set(input_scale);
  other_scale_host_.set(other_scale);
  mode_ = QuantMode::kConverted;
}

at::Tensor QuantMatMulImpl::converted_forward(const at::Tensor& a, const at::Tensor& b) const {
  at::NoGradGuard no_grad;
  const double a_scale = input_scale_host_.get(input_scale);
  const double b_scale = other_scale_host_.get(other_scale);
  if (a.is_cuda() && cuda_int8_built() && a.dim() >= 2 && b.dim() == a.dim() &&
      a.sizes().slice(0, a.dim() - 2) == b.sizes().slice(0, b.dim() - 2) && b.size(-1) % 4 == 0) {
    // cuBLASLt batched int8: a [B, M, K] times b^T stored as [B, N, K].
    const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
    const at::Tensor qa = quantize_per_tensor_int8_cuda(a.reshape({-1, m, k}).contiguous(), a_scale);
    const at::Tensor qb =
        quantize_per_tensor_int8_cuda(b.reshape({-1, k, n}).transpose(1, 2).contiguous(), b_scale);
    const at::Tensor acc = int8_bmm_cuda(qa, qb);
    auto shape = a.sizes().vec();
    shape.back() = n;
    return (acc.to(at::kFloat) * (a_scale * b_scale)).to(a.scalar_type()).reshape(shape);
  }
  if (a.device().is_cpu() && a.dim() >= 2 && b.dim() >= 2) {
    return int8_bmm_cpu(a, b, a_scale, b_scale);
  }
  // Exact integer sums: float32 while every partial sum stays below 2^24, float64 beyond.
  const auto gemm_dtype = detail::exact_codes_dtype(a.size(-1));
  // The codes stay in the GEMM's float type (exact small integers): no int8 round trip.
  const at::Tensor qa = detail::int8_codes_as_float(a, input_scale).to(gemm_dtype);
  const at::Tensor qb = detail::int8_codes_as_float(b, other_scale).to(gemm_dtype);
  return at::matmul(qa, qb).mul_(a_scale * b_scale).to(a.scalar_type());
}

}  // namespace tquant
