#pragma once

// Internal, not part of tquant's API: the module headers include it only for their private
// members, so it must be installed with them. Anything in tquant::detail may change in any
// release without deprecation; user code should not name it.

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <vector>

#include <ATen/core/Tensor.h>

namespace tquant::detail {

/// Something a converted module derives from its buffers once (a prepacked weight), kept until
/// those buffers change, and safe to read from many threads at once: forward calls of one module
/// from several threads never build it twice, never see it half built, and a value handed out
/// stays valid (shared_ptr) even if another thread rebuilds it.
///
/// Keyed by the data pointer and version counter of every source tensor, so load_state's copy_,
/// to(device) or any in-place write makes the next get() build again (once, under the lock).
/// A copy (Module::clone) starts empty: the clone's buffers are new tensors.
///
/// How QuantLinear uses it (its prepacked int8 weight; called at convert so the first forward
/// finds it built, and in every forward):
///   std::shared_ptr<const Int8Weight> w = packed_.get(
///       {&weight_int8, &weight_scale}, [&] { return prepare_int8_weight(weight_int8, weight_scale); });
template <typename T>
class DerivedCache {
 public:
  using Sources = std::initializer_list<const at::Tensor*>;

  DerivedCache() = default;
  DerivedCache(const DerivedCache&) {}
  DerivedCache& operator=(const DerivedCache&) {
    clear();
    return *this;
  }

  /// The value for the current sources, built by `make` first if they changed.
  template <typename Build>
  std::shared_ptr<const T> get(Sources sources, const Build& make) {
    std::vector<int64_t> key = key_of(sources);
    std::lock_guard<std::mutex> lock(mutex_);
    if (!value_ || key_ != key) {
      value_ = std::make_shared<const T>(make());
      key_ = std::move(key);
    }
    return value_;
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    value_.reset();
    key_.clear();
  }

 private:
  static std::vector<int64_t> key_of(Sources sources) {
    std::vector<int64_t> key;
    for (const at::Tensor* t : sources) {
      key.push_back(reinterpret_cast<int64_t>(t->defined() ? t->const_data_ptr() : nullptr));
      // Inference tensors have no version counter; their in-place writes are not seen.
      key.push_back(t->defined() && !t->is_inference() ? t->_version() : 0);
    }
    return key;
  }

  std::mutex mutex_;
  std::shared_ptr<const T> value_;
  std::vector<int64_t> key_;
};

}  // namespace tquant::detail
