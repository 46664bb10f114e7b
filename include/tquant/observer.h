#pragma once

#include <functional>
#include <memory>
#include <string>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "tquant/qparams.h"

namespace tquant {

/// What an observer does with NaN and +-Inf in the data it watches.
///   kError:  throw, naming the observer and the number of non-finite values (default);
///   kIgnore: drop them, raise a TORCH_WARN once per call, and record the finite values only.
enum class NonFinitePolicy { kError, kIgnore };

/// The interface every observer module implements, next to torch::nn::Module.
///
/// An observer watches tensors and turns what it saw into QParams. All of its state lives in
/// registered buffers, so state_dict, to(device) and clone() carry it.
class ObserverBase {
 public:
  virtual ~ObserverBase() = default;

  /// Records statistics of x (detached) and returns x unchanged.
  virtual at::Tensor observe(const at::Tensor& x) = 0;
  /// Quantization parameters for what was observed; throws if nothing was observed.
  virtual QParams calculate_qparams() = 0;
  /// True once at least one tensor was observed.
  virtual bool has_data() const = 0;
  /// Forgets everything observed.
  virtual void reset_stats() = 0;
  /// Combines the statistics of another observer of the same kind and spec into this one
  /// (e.g. observers that watched different shards of the calibration data).
  virtual void merge(const ObserverBase& other) = 0;
  /// The spec the observer computes parameters for.
  virtual const QuantSpec& quant_spec() const = 0;
  /// One line for reports, e.g. "MinMaxObserver int8 symmetric per_tensor [-1.2, 3.4]".
  virtual std::string describe() const = 0;
};

/// Builds a fresh observer module; QConfig and FakeQuantize hold these.
using ObserverFactory = std::function<std::shared_ptr<torch::nn::Module>()>;

/// Returns a factory for observer holder type H built with `options`.
///   auto factory = tquant::observer_factory<tquant::MinMaxObserver>(tquant::MinMaxObserverOptions());
template <typename H, typename Options>
ObserverFactory observer_factory(Options options) {
  return [options]() -> std::shared_ptr<torch::nn::Module> { return H(options).ptr(); };
}

/// The observer interface of a module built by an ObserverFactory; throws if it is none.
ObserverBase& as_observer(torch::nn::Module& module);

/// Options shared by the min-max family.
///
/// Example:
///   auto options = tquant::MinMaxObserverOptions()
///                      .spec(tquant::QuantSpec().granularity(tquant::Granularity::kPerChannel));
struct MinMaxObserverOptions {
  MinMaxObserverOptions() = default;
  explicit MinMaxObserverOptions(QuantSpec spec) : spec_(spec) {}
  TORCH_ARG(QuantSpec, spec);
  /// Smallest scale (see calculate_qparams).
  TORCH_ARG(double, eps) = kDefaultScaleEps;
  /// Moving-average weight of a new batch: min = min + c * (batch_min - min); 0 keeps the
  /// running extremes. torch.ao's moving-average observers use 0.01.
  TORCH_ARG(double, averaging_constant) = 0.0;
  TORCH_ARG(NonFinitePolicy, non_finite) = NonFinitePolicy::kError;
};

// Internal: the shared implementation of the four min-max observers (their base class, so it
// must be visible here). Use the observers and ObserverBase; detail:: may change in any
// release without deprecation.
namespace detail {

/// Min-max statistics for any granularity; the four public observers below only choose
/// defaults and check their options.
template <typename Derived>
class MinMaxObserverBase : public torch::nn::Cloneable<Derived>, public ObserverBase {
 public:
  explicit MinMaxObserverBase(MinMaxObserverOptions options_) : options(std::move(options_)) {}

  void reset() override;
  at::Tensor forward(const at::Tensor& x) { return observe(x); }

  at::Tensor observe(const at::Tensor& x) override;
  QParams calculate_qparams() override;
  bool has_data() const override { return min_val.numel() > 0; }
  void reset_stats() override;
  void merge(const ObserverBase& other) override;
  const QuantSpec& quant_spec() const override { return options.spec(); }
  std::string describe() const override;
  void pretty_print(std::ostream& stream) const override;

  MinMaxObserverOptions options;
  /// Running minimum and maximum, shaped by the granularity; empty before the first batch.
  at::Tensor min_val;
  at::Tensor max_val;

 protected:
  virtual const char* kind() const = 0;
};

}  // namespace detail

/// Running min / max of everything observed (torch.ao MinMaxObserver); any granularity.
class MinMaxObserverImpl : public detail::MinMaxObserverBase<MinMaxObserverImpl> {
 public:
  explicit MinMaxObserverImpl(MinMaxObserverOptions options_ = {});

 protected:
  const char* kind() const override { return "MinMaxObserver"; }
};
TORCH_MODULE(MinMaxObserver);

/// Exponential moving average of per-batch min / max (torch.ao MovingAverageMinMaxObserver,
/// averaging constant 0.01 unless set).
class MovingAverageMinMaxObserverImpl
    : public detail::MinMaxObserverBase<MovingAverageMinMaxObserverImpl> {
 public:
  explicit MovingAverageMinMaxObserverImpl(MinMaxObserverOptions options_ = {});

 protected:
  const char* kind() const override { return "MovingAverageMinMaxObserver"; }
};
TORCH_MODULE(MovingAverageMinMaxObserver);

/// Running min / max per channel (default axis 0, symmetric int8: the usual weight observer).
class PerChannelMinMaxObserverImpl
    : public detail::MinMaxObserverBase<PerChannelMinMaxObserverImpl> {
 public:
  explicit PerChannelMinMaxObserverImpl(MinMaxObserverOptions options_ = {});

 protected:
  const char* kind() const override { return "PerChannelMinMaxObserver"; }
};
TORCH_MODULE(PerChannelMinMaxObserver);

/// Moving average of per-channel min / max (averaging constant 0.01 unless set).
class MovingAveragePerChannelMinMaxObserverImpl
    : public detail::MinMaxObserverBase<MovingAveragePerChannelMinMaxObserverImpl> {
 public:
  explicit MovingAveragePerChannelMinMaxObserverImpl(MinMaxObserverOptions options_ = {});

 protected:
  const char* kind() const override { return "MovingAveragePerChannelMinMaxObserver"; }
};
TORCH_MODULE(MovingAveragePerChannelMinMaxObserver);

namespace detail {

/// Checks a calibration tensor: defined, real floating point, non-empty.
void check_observed_input(const at::Tensor& x, const std::string& what);

/// Called when x holds NaN or Inf: throws for kError, warns for kIgnore. Names `what` and
/// the number of non-finite values.
void report_non_finite(const at::Tensor& x, NonFinitePolicy policy, const std::string& what);

/// Min and max of x at the spec's granularity, applying the non-finite policy: with kIgnore,
/// NaN and Inf are left out (an all-non-finite slice gives min +inf, max -inf).
std::pair<at::Tensor, at::Tensor> finite_min_max(const at::Tensor& x, const QuantSpec& spec,
                                                 NonFinitePolicy policy, const std::string& what);

}  // namespace detail

}  // namespace tquant
