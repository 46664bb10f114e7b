#include "tquant/observer.h"

#include <sstream>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace tquant {

ObserverBase& as_observer(torch::nn::Module& module) {
  auto* observer = dynamic_cast<ObserverBase*>(&module);
  TORCH_CHECK_TYPE(observer != nullptr, "expected an observer module (one implementing "
                   "tquant::ObserverBase), got ", module.name());
  return *observer;
}

namespace detail {

void check_observed_input(const at::Tensor& x, const std::string& what) {
  TORCH_CHECK_VALUE(x.defined(), what, ": observed tensor is undefined");
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), what,
                   ": expected a floating-point tensor to observe, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.numel() > 0, what, ": expected a non-empty tensor to observe, got shape ",
                    x.sizes());
}

void report_non_finite(const at::Tensor& x, NonFinitePolicy policy, const std::string& what) {
  const int64_t bad = (~at::isfinite(x)).sum().item<int64_t>();
  TORCH_CHECK_VALUE(policy != NonFinitePolicy::kError, what, ": expected finite values, got ",
                    bad, " NaN or Inf among ", x.numel(), " (shape ", x.sizes(),
                    "); set NonFinitePolicy::kIgnore to leave them out");
  TORCH_WARN(what, ": ignoring ", bad, " NaN or Inf values among ", x.numel());
}

std::pair<at::Tensor, at::Tensor> finite_min_max(const at::Tensor& x, const QuantSpec& spec,
                                                 NonFinitePolicy policy,
                                                 const std::string& what) {
  auto [lo, hi] = reduce_min_max(x, spec, what);
  // NaN and Inf reach the extremes, so a finite result proves the whole batch finite.
  if (at::isfinite(lo).all().item<bool>() && at::isfinite(hi).all().item<bool>()) {
    return {lo, hi};
  }
  report_non_finite(x, policy, what);
  auto finite = at::isfinite(x);
  auto inf = std::numeric_limits<double>::infinity();
  auto lo_f = reduce_min_max(at::where(finite, x, at::full({}, inf, x.options())), spec, what);
  auto hi_f = reduce_min_max(at::where(finite, x, at::full({}, -inf, x.options())), spec, what);
  return {lo_f.first, hi_f.second};
}

namespace {

std::string range_text(const at::Tensor& lo, const at::Tensor& hi) {
  std::ostringstream out;
  if (lo.numel() == 0) return "(no data)";
  if (lo.numel() == 1) {
    out << "[" << lo.item<float>() << ", " << hi.item<float>() << "]";
  } else {
    out << lo.numel() << " ranges within [" << lo.min().item<float>() << ", "
        << hi.max().item<float>() << "]";
  }
  return out.str();
}

}  // namespace

template <typename Derived>
void MinMaxObserverBase<Derived>::reset() {
  check_spec(options.spec());
  TORCH_CHECK_VALUE(options.averaging_constant() >= 0.0 && options.averaging_constant() <= 1.0,
                    "averaging_constant must lie in [0, 1], got ",
                    options.averaging_constant());
  min_val = this->register_buffer("min_val", at::empty({0}));
  max_val = this->register_buffer("max_val", at::empty({0}));
}

template <typename Derived>
at::Tensor MinMaxObserverBase<Derived>::observe(const at::Tensor& x) {
  const std::string what = kind();
  check_observed_input(x, what);
  at::NoGradGuard no_grad;
  auto [lo, hi] = finite_min_max(x.detach(), options.spec(), options.non_finite(), what);
  lo = lo.to(min_val.device(), at::kFloat);
  hi = hi.to(max_val.device(), at::kFloat);
  if (!has_data()) {
    min_val.set_data(lo);
    max_val.set_data(hi);
    return x;
  }
  TORCH_CHECK_VALUE(lo.sizes() == min_val.sizes(), what, ": expected statistics of shape ",
                    min_val.sizes(), " as in earlier batches, got ", lo.sizes(),
                    " from an input of shape ", x.sizes());
  const double c = options.averaging_constant();
  if (c == 0.0) {
    min_val.set_data(at::minimum(lo, min_val));
    max_val.set_data(at::maximum(hi, max_val));
  } else {
    min_val.set_data(min_val + c * (lo - min_val));
    max_val.set_data(max_val + c * (hi - max_val));
  }
  return x;
}

template <typename Derived>
QParams MinMaxObserverBase<Derived>::calculate_qparams() {
  TORCH_CHECK_VALUE(has_data(), kind(), ": no data observed yet; run calibration before "
                    "asking for quantization parameters");
  return tquant::calculate_qparams(min_val, max_val, options.spec(), options.eps());
}

template <typename Derived>
void MinMaxObserverBase<Derived>::reset_stats() {
  min_val.set_data(at::empty({0}, min_val.options()));
  max_val.set_data(at::empty({0}, max_val.options()));
}

template <typename Derived>
void MinMaxObserverBase<Derived>::merge(const ObserverBase& other_base) {
  const auto* other = dynamic_cast<const Derived*>(&other_base);
  TORCH_CHECK_TYPE(other != nullptr, kind(), ": can only merge an observer of the same kind");
  TORCH_CHECK_VALUE(to_string(other->options.spec()) == to_string(options.spec()), kind(),
                    ": cannot merge observers of different specs: ", to_string(options.spec()),
                    " and ", to_string(other->options.spec()));
  if (!other->has_data()) return;
  auto lo = other->min_val.to(min_val.device());
  auto hi = other->max_val.to(max_val.device());
  if (!has_data()) {
    min_val.set_data(lo.clone());
    max_val.set_data(hi.clone());
    return;
  }
  TORCH_CHECK_VALUE(lo.sizes() == min_val.sizes(), kind(), ": cannot merge statistics of shape ",
                    lo.sizes(), " into shape ", min_val.sizes());
  if (options.averaging_constant() == 0.0) {
    min_val.set_data(at::minimum(min_val, lo));
    max_val.set_data(at::maximum(max_val, hi));
  } else {
    // Moving averages of two shards: the mean of the two averages.
    min_val.set_data((min_val + lo) / 2);
    max_val.set_data((max_val + hi) / 2);
  }
}

template <typename Derived>
std::string MinMaxObserverBase<Derived>::describe() const {
  return std::string(kind()) + " " + to_string(options.spec()) + " " +
         range_text(min_val, max_val);
}

template <typename Derived>
void MinMaxObserverBase<Derived>::pretty_print(std::ostream& stream) const {
  stream << "tquant::" << kind() << "(" << to_string(options.spec()) << ")";
}

template class MinMaxObserverBase<MinMaxObserverImpl>;
template class MinMaxObserverBase<MovingAverageMinMaxObserverImpl>;
template class MinMaxObserverBase<PerChannelMinMaxObserverImpl>;
template class MinMaxObserverBase<MovingAveragePerChannelMinMaxObserverImpl>;

}  // namespace detail

namespace {

constexpr double kTorchAoAveragingConstant = 0.01;

MinMaxObserverOptions with_moving_average(MinMaxObserverOptions options) {
  if (options.averaging_constant() == 0.0) options.averaging_constant(kTorchAoAveragingConstant);
  return options;
}

MinMaxObserverOptions with_per_channel(MinMaxObserverOptions options, const char* kind) {
  TORCH_CHECK_VALUE(options.spec().granularity() != Granularity::kPerBlock, kind,
                    " expects per-channel granularity, got per_block");
  options.spec().granularity(Granularity::kPerChannel);
  return options;
}

}  // namespace

MinMaxObserverImpl::MinMaxObserverImpl(MinMaxObserverOptions options_)
    : MinMaxObserverBase(std::move(options_)) {
  TORCH_CHECK_VALUE(options.averaging_constant() == 0.0,
                    "MinMaxObserver keeps running extremes; use MovingAverageMinMaxObserver for "
                    "averaging_constant ", options.averaging_constant());
  reset();
}

MovingAverageMinMaxObserverImpl::MovingAverageMinMaxObserverImpl(MinMaxObserverOptions options_)
    : MinMaxObserverBase(with_moving_average(std::move(options_))) {
  reset();
}

PerChannelMinMaxObserverImpl::PerChannelMinMaxObserverImpl(MinMaxObserverOptions options_)
    : MinMaxObserverBase(with_per_channel(std::move(options_), "PerChannelMinMaxObserver")) {
  TORCH_CHECK_VALUE(options.averaging_constant() == 0.0,
                    "PerChannelMinMaxObserver keeps running extremes; use "
                    "MovingAveragePerChannelMinMaxObserver for averaging_constant ",
                    options.averaging_constant());
  reset();
}

MovingAveragePerChannelMinMaxObserverImpl::MovingAveragePerChannelMinMaxObserverImpl(
    MinMaxObserverOptions options_)
    : MinMaxObserverBase(with_moving_average(
          with_per_channel(std::move(options_), "MovingAveragePerChannelMinMaxObserver"))) {
  reset();
}

}  // namespace tquant
