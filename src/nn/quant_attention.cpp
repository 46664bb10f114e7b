#include "tquant/nn/quant_attention.h"

#include "../attention_softmax.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "tquant/int8_attention.h"

#include "converted_weight.h"
#include "quant_module_detail.h"

namespace tquant {

namespace {

constexpr const char* kName = "QuantAttention";
constexpr const char* kQuantizerNames[4] = {"query_quantizer", "key_quantizer",
                                            "probs_quantizer", "value_quantizer"};

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& attn_mask) {
  TORCH_CHECK_VALUE(q.defined() && k.defined() && v.defined(), kName,
                    ": expected q, k and v tensors, got an undefined one");
  TORCH_CHECK_VALUE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, kName,
                    ": expected q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv], got shapes ",
                    q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK_VALUE(k.size(0) == q.size(0) && v.size(0) == q.size(0) && k.size(1) == q.size(1) &&
                        v.size(1) == q.size(1) && k.size(3) == q.size(3) &&
                        v.size(2) == k.size(2),
                    kName, ": expected q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv] with "
                    "equal B, H, D and Lk, got shapes ", q.sizes(), ", ", k.sizes(), ", ",
                    v.sizes());
  TORCH_CHECK_VALUE(q.size(0) > 0 && q.size(2) > 0 && k.size(2) > 0, kName,
                    ": expected a non-empty batch and sequences, got q ", q.sizes(), " and k ",
                    k.sizes());
  for (const auto* t : {&k, &v}) {
    TORCH_CHECK_VALUE(t->device() == q.device() && t->scalar_type() == q.scalar_type(), kName,
                      ": expected q, k and v on one device with one dtype, got q ",
                      q.scalar_type(), " on ", q.device(), " and ", t->scalar_type(), " on ",
                      t->device());
  }
  TORCH_CHECK_VALUE(at::isFloatingType(q.scalar_type()), kName,
                    ": expected floating-point q, k, v, got ", q.scalar_type());
  if (attn_mask.defined()) {
    TORCH_CHECK_VALUE(attn_mask.device() == q.device(), kName, ": expected attn_mask on ",
                      q.device(), ", got ", attn_mask.device());
    const bool broadcasts =
        attn_mask.dim() <= 4 && at::infer_size(attn_mask.sizes(), {q.size(0), q.size(1),
                                                                   q.size(2), k.size(2)}) ==
                                    std::vector<int64_t>{q.size(0), q.size(1), q.size(2),
                                                         k.size(2)};
    TORCH_CHECK_VALUE(broadcasts, kName, ": expected attn_mask broadcastable to [B, H, Lq, Lk] = ",
                      at::IntArrayRef({q.size(0), q.size(1), q.size(2), k.size(2)}), ", got ",
                      attn_mask.sizes());
  }
}

// Additive float form of a bool mask (true = attend), for the written-out modes.
at::Tensor additive(const at::Tensor& mask, c10::ScalarType dtype) {
  if (!mask.defined() || mask.scalar_type() != at::kBool) return mask;
  return at::zeros(mask.sizes(), mask.options().dtype(dtype))
      .masked_fill_(mask.logical_not(), -std::numeric_limits<double>::infinity());
}

}  // namespace

QuantAttentionImpl::QuantAttentionImpl(QuantAttentionOptions options_)
    : options(std::move(options_)) {
  // NOLINTNEXTLINE(clang-analyzer-optin.cplusplus.VirtualCall): as the torch modules.
  QuantAttentionImpl::reset();
}

void QuantAttentionImpl::reset() {
  TORCH_CHECK_VALUE(options.dropout() >= 0.0 && options.dropout() < 1.0, kName,
                    ": expected dropout in [0, 1), got ", options.dropout());
  TORCH_CHECK_VALUE(!options.scale() || (std::isfinite(*options.scale()) && *options.scale() > 0),
                    kName, ": expected a finite scale > 0, got ", options.scale().value_or(0));
  if (mode_ == QuantMode::kConverted) {  // clone() of a converted module
    const at::Tensor ones[4] = {at::ones({}), at::ones({}), at::ones({}), at::ones({})};
    install_converted(ones);
    return;
  }
  restore_quantizers();
}

void QuantAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << "tquant::QuantAttention(dropout=" << options.dropout()
         << ", mode=" << to_string(mode_) << ")";
}

void QuantAttentionImpl::install_quantizers() {
  const auto device = current_quantizer_device();
  const std::vector<FakeQuantize*> holders = quantizers();
  for (size_t i = 0; i < holders.size(); ++i) {
    *holders[i] = detail::install_quantizer(*this, kQuantizerNames[i], qconfig_->activation,
                                            device, kName);
  }
}


double QuantAttentionImpl::softmax_scale(const at::Tensor& q) const {
  return options.scale().value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
}

at::Tensor QuantAttentionImpl::forward(const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, const at::Tensor& attn_mask) {
  check_inputs(q, k, v, attn_mask);
  if (mode_ == QuantMode::kConverted) return converted_forward(q, k, v, attn_mask);
  if (mode_ == QuantMode::kFloat || query_quantizer.is_empty()) {
    const std::optional<at::Tensor> mask =
        attn_mask.defined() ? std::optional<at::Tensor>(attn_mask) : std::nullopt;
    return at::scaled_dot_product_attention(q, k, v, mask,
                                            is_training() ? options.dropout() : 0.0,
                                            /*is_causal=*/false, softmax_scale(q));
  }
  return quantized_forward(q, k, v, attn_mask);
}

at::Tensor QuantAttentionImpl::quantized_forward(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v,
                                                 const at::Tensor& attn_mask) {
  at::Tensor scores = at::matmul(query_quantizer(q), key_quantizer(k).transpose(-2, -1));
  // A fresh tensor its backward does not need: scale and mask in place.
  scores.mul_(softmax_scale(q));
  if (attn_mask.defined()) scores.add_(additive(attn_mask, scores.scalar_type()));
  at::Tensor probs = detail::attention_softmax(scores);
  if (is_training() && options.dropout() > 0) probs = at::dropout(probs, options.dropout(), true);
  return at::matmul(probs_quantizer(probs), value_quantizer(v));
}

at::Tensor QuantAttentionImpl::converted_forward(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v,
                                                 const at::Tensor& attn_mask) const {
  at::NoGradGuard no_grad;
  AttentionScales scales;
  scales.query = scale_host_[0].get(query_scale);
  scales.key = scale_host_[1].get(key_scale);
  scales.probs = scale_host_[2].get(probs_scale);
  scales.value = scale_host_[3].get(value_scale);
  if (q.device().is_cpu()) return int8_attention_cpu(q, k, v, attn_mask, scales, softmax_scale(q));
  return int8_attention_ref(q, k, v, attn_mask, scales, softmax_scale(q));
}

ConvertResult QuantAttentionImpl::convert() {
  if (mode_ == QuantMode::kConverted) return {true, converted_scheme(), ""};
  if (!qconfig_ || mode_ == QuantMode::kFloat) {
    return {false, "", "in float mode (not prepared, or disabled)"};
  }
  if (query_quantizer.is_empty()) {
    return {false, "", "no activation quantizers (weight-only config): nothing to convert"};
  }
  FakeQuantize* holders[4] = {&query_quantizer, &key_quantizer, &probs_quantizer,
                              &value_quantizer};
  at::Tensor scales[4];
  for (int i = 0; i < 4; ++i) {
    FakeQuantizeImpl& quantizer = **holders[i];
    const QuantSpec& spec = quantizer.observer_ref().quant_spec();
    if (!detail::is_int8_gemm_spec(spec) || spec.granularity() != Granularity::kPerTensor ||
        quantizer.options.dynamic()) {
      return {false, "", std::string(kQuantizerNames[i]) + " has spec " + to_string(spec) +
                             (quantizer.options.dynamic() ? " (dynamic)" : "") +
                             "; the INT8 attention kernel needs static int8 narrow-range "
                             "symmetric per-tensor operands; stays " + to_string(mode_)};
    }
    QParams qparams = quantizer.qparams();
    if (!qparams.defined() && quantizer.observer_ref().has_data()) {
      qparams = quantizer.update_qparams();
    }
    if (!qparams.defined()) {
      return {false, "", std::string(kQuantizerNames[i]) +
                             " has no scale (not calibrated); run tquant::calibrate before "
                             "convert"};
    }
    scales[i] = qparams.scale.detach().to(at::kFloat).reshape({});
  }
  install_converted(scales);
  return {true, converted_scheme(), ""};
}

void QuantAttentionImpl::make_converted(const std::string& scheme) {
  detail::parse_scheme(scheme, {"int8_static"}, kName);
  TORCH_CHECK_VALUE(scheme == "int8_static", kName, ": expected scheme 'int8_static', got '",
                    scheme, "'");
  const auto device = detail::quantizer_device(query_quantizer).value_or(at::Device(at::kCPU));
  const auto on = at::TensorOptions(device);
  const at::Tensor ones[4] = {at::ones({}, on), at::ones({}, on), at::ones({}, on),
                              at::ones({}, on)};
  install_converted(ones);
}

void QuantAttentionImpl::install_converted(const at::Tensor scales[4]) {
  FakeQuantize* holders[4] = {&query_quantizer, &key_quantizer, &probs_quantizer,
                              &value_quantizer};
  for (int i = 0; i < 4; ++i) detail::unregister_quantizer(*this, kQuantizerNames[i], *holders[i]);
  query_scale = detail::set_buffer(*this, "query_scale", scales[0]);
  key_scale = detail::set_buffer(*this, "key_scale", scales[1]);
  probs_scale = detail::set_buffer(*this, "probs_scale", scales[2]);
  value_scale = detail::set_buffer(*this, "value_scale", scales[3]);
  const at::Tensor* registered[4] = {&query_scale, &key_scale, &probs_scale, &value_scale};
  for (int i = 0; i < 4; ++i) scale_host_[i].set(*registered[i]);
  mode_ = QuantMode::kConverted;
}

}  // namespace tquant
