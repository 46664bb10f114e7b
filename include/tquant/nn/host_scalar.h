#pragma once

// Internal, not part of tquant's API: the module headers include it only for their private
// members, so it must be installed with them. Anything in tquant::detail may change in any
// release without deprecation; user code should not name it.

#include <cstdint>
#include <mutex>

#include <ATen/core/Tensor.h>

namespace tquant::detail {

/// A host copy of a one-element tensor, such as a converted module's "input_scale" buffer, so
/// that forward reads a double instead of calling .item() on a CUDA tensor: .item() waits for
/// the GPU on every call and cannot be captured in a CUDA graph.
///
/// set(t) reads t now (at convert, and when make_converted installs the placeholder before a
/// load). get(t) returns the copy while t still has the storage and version counter that were
/// read; once t has changed (load_state's copy_, to(device), any in-place write) the first get
/// reads it again, once. Thread-safe; a copy (Module::clone) keeps the value.
///
/// How a module uses it (a module with a scale buffer `input_scale`):
///   input_scale_host_.set(input_scale);                  // convert / make_converted
///   const double s = input_scale_host_.get(input_scale);  // forward: no device sync
class HostScalar {
 public:
  HostScalar() = default;
  HostScalar(const HostScalar& other) { *this = other; }
  HostScalar& operator=(const HostScalar& other) {
    if (this == &other) return *this;
    std::scoped_lock lock(mutex_, other.mutex_);
    value_ = other.value_;
    data_ = other.data_;
    version_ = other.version_;
    return *this;
  }

  /// Reads t (one element, any device) now.
  void set(const at::Tensor& t) {
    std::lock_guard<std::mutex> lock(mutex_);
    read(t);
  }

  /// The value of t, read again only if t changed since the last read.
  double get(const at::Tensor& t) const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (data_ == nullptr || data_ != t.const_data_ptr() || version_ != version_of(t)) read(t);
    return value_;
  }

  /// Forgets the copy (the tensor it mirrored is gone).
  void reset() {
    std::lock_guard<std::mutex> lock(mutex_);
    data_ = nullptr;
    version_ = -1;
  }

 private:
  // Inference tensors have no version counter; their in-place writes are not seen.
  static int64_t version_of(const at::Tensor& t) {
    return t.is_inference() ? 0 : static_cast<int64_t>(t._version());
  }
  void read(const at::Tensor& t) const {
    value_ = t.item<double>();
    data_ = t.const_data_ptr();
    version_ = version_of(t);
  }

  mutable std::mutex mutex_;
  mutable double value_ = 0.0;
  mutable const void* data_ = nullptr;
  mutable int64_t version_ = -1;
};

}  // namespace tquant::detail
