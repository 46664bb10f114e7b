#include "tquant/fake_quantize.h"

#include <ATen/ATen.h>

#include "error_context.h"

namespace tquant {

namespace {

bool flag_value(const at::Tensor& flag) { return flag.item<uint8_t>() != 0; }

void set_flag(at::Tensor& flag, bool enabled) { flag.fill_(enabled ? 1 : 0); }

std::shared_ptr<torch::nn::Module> build_observer(const ObserverFactory& factory,
                                                  const char* owner) {
  TORCH_CHECK_VALUE(static_cast<bool>(factory), owner, ": the observer factory is empty");
  auto module = factory();
  TORCH_CHECK_VALUE(module != nullptr, owner, ": the observer factory returned no module");
  as_observer(*module);  // throws if it is not an observer
  return module;
}

}  // namespace

FakeQuantizeImpl::FakeQuantizeImpl(FakeQuantizeOptions options_) : options(std::move(options_)) {
  reset();
}

void FakeQuantizeImpl::reset() {
  observer = register_module("observer", build_observer(options.observer(), "FakeQuantize"));
  scale = register_buffer("scale", at::empty({0}));
  zero_point = register_buffer("zero_point", at::empty({0}, at::kInt));
  observer_enabled_flag = register_buffer("observer_enabled", at::ones({1}, at::kByte));
  fake_quant_enabled_flag = register_buffer("fake_quant_enabled", at::ones({1}, at::kByte));
  if (options.dynamic()) {
    const auto& spec = observer_ref().quant_spec();
    TORCH_CHECK_VALUE(spec.symmetric() && is_integer(spec.dtype()) &&
                          spec.granularity() == Granularity::kPerTensor,
                      "FakeQuantize: dynamic per-token quantization needs an observer with a "
                      "symmetric integer per-tensor spec, got ", to_string(spec));
  }
}

ObserverBase& FakeQuantizeImpl::observer_ref() const { return as_observer(*observer); }

void FakeQuantizeImpl::enable_observer(bool enabled) { set_flag(observer_enabled_flag, enabled); }
void FakeQuantizeImpl::enable_fake_quant(bool enabled) {
  set_flag(fake_quant_enabled_flag, enabled);
}
bool FakeQuantizeImpl::observer_enabled() const { return flag_value(observer_enabled_flag); }
bool FakeQuantizeImpl::fake_quant_enabled() const { return flag_value(fake_quant_enabled_flag); }

QParams FakeQuantizeImpl::update_qparams() {
  auto qp = detail::named_errors(qualified_name_,
                                 [&] { return observer_ref().calculate_qparams(); });
  scale.set_data(qp.scale.to(scale.device(), at::kFloat));
  zero_point.set_data(qp.zero_point.to(zero_point.device(), at::kInt));
  return qparams();
}

QParams FakeQuantizeImpl::qparams() const {
  if (scale.numel() == 0) return QParams{at::Tensor(), at::Tensor(), observer_ref().quant_spec()};
  return QParams{scale, zero_point, observer_ref().quant_spec()};
}

at::Tensor FakeQuantizeImpl::forward(const at::Tensor& x) {
  return detail::named_errors(qualified_name_, [&] { return forward_unnamed(x); });
}

at::Tensor FakeQuantizeImpl::forward_unnamed(const at::Tensor& x) {
  if (options.dynamic()) {
    if (!fake_quant_enabled()) {
      if (observer_enabled()) observer_ref().observe(x.detach());
      return x;
    }
    TORCH_CHECK_VALUE(x.dim() >= 1 && x.numel() > 0, "FakeQuantize (dynamic): expected a "
                      "non-empty input [..., K], got shape ", x.sizes());
    const at::Tensor rows = x.reshape({-1, x.size(-1)});
    // Scales from the finite values: a NaN / Inf element comes out NaN (fake_quantize), and
    // so does every output of its row in the GEMM that follows, as in float.
    const QParams qparams =
        per_token_qparams(at::nan_to_num(rows.detach(), 0.0, 0.0, 0.0), observer_ref().quant_spec());
    return fake_quantize(rows, qparams, options.gradient()).reshape(x.sizes());
  }
  if (observer_enabled()) {
    observer_ref().observe(x.detach());
    if (fake_quant_enabled()) update_qparams();
  }
  if (!fake_quant_enabled()) return x;
  TORCH_CHECK_VALUE(scale.numel() > 0, "FakeQuantize: fake quantization is enabled but no "
                    "quantization parameters are set; observe data first or call "
                    "update_qparams()");
  return fake_quantize(x, qparams(), options.gradient());
}

void FakeQuantizeImpl::pretty_print(std::ostream& stream) const {
  stream << "tquant::FakeQuantize(" << to_string(observer_ref().quant_spec())
         << (options.dynamic() ? ", dynamic per-token" : "") << ", observer=" << (observer_enabled() ? "on" : "off")
         << ", fake_quant=" << (fake_quant_enabled() ? "on" : "off") << ")";
}

LearnableFakeQuantizeImpl::LearnableFakeQuantizeImpl(LearnableFakeQuantizeOptions options_)
    : options(std::move(options_)) {
  reset();
}

void LearnableFakeQuantizeImpl::reset() {
  observer = register_module("observer",
                             build_observer(options.observer(), "LearnableFakeQuantize"));
  const auto& spec = observer_ref().quant_spec();
  TORCH_CHECK_NOT_IMPLEMENTED(is_integer(spec.dtype()) &&
                                  spec.granularity() != Granularity::kPerBlock,
                              "LearnableFakeQuantize supports per-tensor and per-channel "
                              "integer formats, got ", to_string(spec));
  TORCH_CHECK_VALUE(!options.learn_zero_point() || !spec.symmetric(),
                    "LearnableFakeQuantize: learn_zero_point needs an affine spec, got ",
                    to_string(spec));
  scale = register_parameter("scale", at::empty({0}));
  zero_point = register_parameter("zero_point", at::empty({0}), options.learn_zero_point());
  observer_enabled_flag = register_buffer("observer_enabled", at::ones({1}, at::kByte));
  fake_quant_enabled_flag = register_buffer("fake_quant_enabled", at::ones({1}, at::kByte));
}

ObserverBase& LearnableFakeQuantizeImpl::observer_ref() const { return as_observer(*observer); }

void LearnableFakeQuantizeImpl::enable_observer(bool enabled) {
  set_flag(observer_enabled_flag, enabled);
}
void LearnableFakeQuantizeImpl::enable_fake_quant(bool enabled) {
  set_flag(fake_quant_enabled_flag, enabled);
}
bool LearnableFakeQuantizeImpl::observer_enabled() const {
  return flag_value(observer_enabled_flag);
}
bool LearnableFakeQuantizeImpl::fake_quant_enabled() const {
  return flag_value(fake_quant_enabled_flag);
}

QParams LearnableFakeQuantizeImpl::qparams() const {
  const auto& spec = observer_ref().quant_spec();
  if (scale.numel() == 0) return QParams{at::Tensor(), at::Tensor(), spec};
  const bool per_tensor = spec.granularity() == Granularity::kPerTensor;
  auto s = scale.detach().clamp_min(options.eps());
  auto zp = zero_point.detach().round().clamp(quant_min(spec), quant_max(spec)).to(at::kInt);
  return QParams{per_tensor ? s.reshape({}) : s, per_tensor ? zp.reshape({}) : zp, spec};
}

at::Tensor LearnableFakeQuantizeImpl::forward(const at::Tensor& x) {
  const auto& spec = observer_ref().quant_spec();
  if (observer_enabled()) {
    observer_ref().observe(x.detach());
    auto qp = observer_ref().calculate_qparams();
    const bool per_tensor = spec.granularity() == Granularity::kPerTensor;
    at::NoGradGuard no_grad;
    auto s = qp.scale.to(x.device(), at::kFloat);
    auto zp = qp.zero_point.to(x.device(), at::kFloat);
    scale.set_data(per_tensor ? s.reshape({1}) : s);
    zero_point.set_data(per_tensor ? zp.reshape({1}) : zp);
  }
  if (!fake_quant_enabled()) return x;
  TORCH_CHECK_VALUE(scale.numel() > 0, "LearnableFakeQuantize: fake quantization is enabled but "
                    "the scale is not initialized; observe data first");
  {
    // As torch.ao's _LearnableFakeQuantize: keep the learned scale positive.
    at::NoGradGuard no_grad;
    scale.clamp_min_(options.eps());
  }
  const double grad_factor =
      options.use_grad_scaling() ? lsq_grad_factor(x.numel(), spec) : 1.0;
  return fake_quantize_learnable(x, scale, zero_point, spec, grad_factor);
}

void LearnableFakeQuantizeImpl::pretty_print(std::ostream& stream) const {
  stream << "tquant::LearnableFakeQuantize(" << to_string(observer_ref().quant_spec())
         << ", observer=" << (observer_enabled() ? "on" : "off")
         << ", fake_quant=" << (fake_quant_enabled() ? "on" : "off") << ")";
}

}  // namespace tquant
