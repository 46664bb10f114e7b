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

// ---- LSQ (learned scale): shared by FakeQuantize::learnable and LearnableFakeQuantize ----

void check_learnable_spec(const QuantSpec& spec, const LearnableScaleOptions& options,
                          const char* owner) {
  TORCH_CHECK_NOT_IMPLEMENTED(is_integer(spec.dtype()) &&
                                  spec.granularity() != Granularity::kPerBlock,
                              owner, ": learnable scales support per-tensor and per-channel "
                              "integer formats, got ", to_string(spec));
  TORCH_CHECK_VALUE(!options.learn_zero_point() || !spec.symmetric(), owner,
                    ": learn_zero_point needs an affine spec, got ", to_string(spec));
}

/// A diverged step (NaN loss, too large a learning rate) leaves a NaN or Inf scale; clamping
/// cannot repair it and quantizing with it would give garbage, so it is an error.
void check_learned_scale_finite(const at::Tensor& scale) {
  TORCH_CHECK_VALUE(at::isfinite(scale.detach()).all().item<bool>(),
                    "expected a finite learned scale, got ", scale.detach().cpu(),
                    " (a diverged training step: lower the learning rate, or re-initialize the "
                    "scale from the observer with enable_observer(true) and a forward)");
}

/// Copies `value` into a parameter or buffer: no autograd, and a copy so that an optimizer
/// stepping the parameter in place never writes into the observer's tensors.
void assign(at::Tensor& target, const at::Tensor& value, c10::ScalarType dtype) {
  at::NoGradGuard no_grad;
  target.set_data(value.detach().to(target.device(), dtype).clone());
}

/// The learned parameters as QParams: scale clamped to eps, zero point rounded and clamped to
/// int32 [qmin, qmax]; per-tensor as 0-dim tensors.
QParams learned_qparams(const at::Tensor& scale, const at::Tensor& zero_point,
                        const QuantSpec& spec, double eps) {
  if (scale.numel() == 0) return QParams{at::Tensor(), at::Tensor(), spec};
  check_learned_scale_finite(scale);
  const bool per_tensor = spec.granularity() == Granularity::kPerTensor;
  auto s = scale.detach().clamp_min(eps);
  auto zp = zero_point.detach();
  if (zp.is_floating_point()) zp = zp.round().clamp(quant_min(spec), quant_max(spec));
  zp = zp.to(at::kInt);
  return QParams{per_tensor ? s.reshape({}) : s, per_tensor ? zp.reshape({}) : zp, spec};
}

/// LSQ's forward as torch.ao's _LearnableFakeQuantize runs it: the scale is clamped to eps in
/// place (outside autograd, so it stays a leaf the optimizer owns), then
/// fake_quantize_learnable with the gradient factor 1 / sqrt(numel * qmax) when
/// use_grad_scaling. An int32 zero point (not learned) enters as a float constant.
at::Tensor learned_fake_quantize(const at::Tensor& x, at::Tensor& scale,
                                 const at::Tensor& zero_point, const QuantSpec& spec,
                                 const LearnableScaleOptions& options) {
  check_learned_scale_finite(scale);
  {
    at::NoGradGuard no_grad;
    scale.clamp_min_(options.eps());
  }
  const double grad_factor =
      options.use_grad_scaling() ? lsq_grad_factor(x.numel(), spec) : 1.0;
  return fake_quantize_learnable(x, scale, zero_point.to(at::kFloat), spec, grad_factor);
}

}  // namespace

FakeQuantizeImpl::FakeQuantizeImpl(FakeQuantizeOptions options_) : options(std::move(options_)) {
  reset();
}

void FakeQuantizeImpl::reset() {
  observer = register_module("observer", build_observer(options.observer(), "FakeQuantize"));
  if (is_learnable()) {
    const auto& learned = *options.learnable();
    check_learnable_spec(observer_ref().quant_spec(), learned, "FakeQuantize");
    TORCH_CHECK_VALUE(!options.dynamic(), "FakeQuantize: a learnable scale cannot be dynamic "
                      "(per-token scales come from the data), got learnable and dynamic");
    TORCH_CHECK_VALUE(options.gradient() == GradientMode::kSteClipped, "FakeQuantize: a "
                      "learnable scale passes LSQ's gradient (clipped straight-through for the "
                      "input), got gradient kSte");
    // Same names and shapes as the buffers below, so state_dict keys do not change.
    scale = register_parameter("scale", at::empty({0}));
    zero_point = learned.learn_zero_point()
                     ? register_parameter("zero_point", at::empty({0}))
                     : register_buffer("zero_point", at::empty({0}, at::kInt));
  } else {
    scale = register_buffer("scale", at::empty({0}));
    zero_point = register_buffer("zero_point", at::empty({0}, at::kInt));
  }
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
  // A learned scale is the model's own once the observer is off: keep it.
  if (is_learnable() && scale.numel() > 0 && !observer_enabled()) return qparams();
  auto qp = detail::named_errors(qualified_name_,
                                 [&] { return observer_ref().calculate_qparams(); });
  assign(scale, qp.scale, at::kFloat);
  assign(zero_point, qp.zero_point, zero_point.scalar_type());
  return qparams();
}

QParams FakeQuantizeImpl::qparams() const {
  const auto& spec = observer_ref().quant_spec();
  if (is_learnable()) {
    return detail::named_errors(qualified_name_, [&] {
      return learned_qparams(scale, zero_point, spec, options.learnable()->eps());
    });
  }
  if (scale.numel() == 0) return QParams{at::Tensor(), at::Tensor(), spec};
  return QParams{scale, zero_point, spec};
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
  if (is_learnable()) {
    return learned_fake_quantize(x, scale, zero_point, observer_ref().quant_spec(),
                                 *options.learnable());
  }
  return fake_quantize(x, qparams(), options.gradient());
}

void FakeQuantizeImpl::pretty_print(std::ostream& stream) const {
  stream << "tquant::FakeQuantize(" << to_string(observer_ref().quant_spec())
         << (options.dynamic() ? ", dynamic per-token" : "")
         << (is_learnable() ? ", learnable scale" : "") << ", observer=" << (observer_enabled() ? "on" : "off")
         << ", fake_quant=" << (fake_quant_enabled() ? "on" : "off") << ")";
}

LearnableFakeQuantizeImpl::LearnableFakeQuantizeImpl(LearnableFakeQuantizeOptions options_)
    : options(std::move(options_)) {
  reset();
}

void LearnableFakeQuantizeImpl::reset() {
  observer = register_module("observer",
                             build_observer(options.observer(), "LearnableFakeQuantize"));
  check_learnable_spec(observer_ref().quant_spec(), options.scale_options(),
                       "LearnableFakeQuantize");
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
  return learned_qparams(scale, zero_point, observer_ref().quant_spec(), options.eps());
}

at::Tensor LearnableFakeQuantizeImpl::forward(const at::Tensor& x) {
  const auto& spec = observer_ref().quant_spec();
  if (observer_enabled()) {
    observer_ref().observe(x.detach());
    auto qp = observer_ref().calculate_qparams();
    // torch.ao's layout: [1] per tensor.
    const bool per_tensor = spec.granularity() == Granularity::kPerTensor;
    assign(scale, per_tensor ? qp.scale.reshape({1}) : qp.scale, at::kFloat);
    assign(zero_point, per_tensor ? qp.zero_point.reshape({1}) : qp.zero_point, at::kFloat);
  }
  if (!fake_quant_enabled()) return x;
  TORCH_CHECK_VALUE(scale.numel() > 0, "LearnableFakeQuantize: fake quantization is enabled but "
                    "the scale is not initialized; observe data first");
  return learned_fake_quantize(x, scale, zero_point, spec, options.scale_options());
}

void LearnableFakeQuantizeImpl::pretty_print(std::ostream& stream) const {
  stream << "tquant::LearnableFakeQuantize(" << to_string(observer_ref().quant_spec())
         << ", observer=" << (observer_enabled() ? "on" : "off")
         << ", fake_quant=" << (fake_quant_enabled() ? "on" : "off") << ")";
}

}  // namespace tquant
