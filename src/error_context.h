#pragma once

// Internal: errors raised while a pass or a module forward runs carry the qualified name of the
// module or quantizer they come from ("fc1.input_quantizer: HistogramObserver: expected ...").

#include <string>
#include <utility>

#include <c10/util/Exception.h>

namespace tquant::detail {

template <typename E>
[[noreturn]] void throw_as(const c10::Error& error, std::string message) {
  E copy(std::move(message), error.backtrace(), error.caller());
  for (const auto& context : error.context()) copy.add_context(context);
  throw copy;
}

/// Throws a copy of `error` (same c10 error type, same backtrace and context) whose message is
/// "name: <message>". A message that already starts with "name: " is rethrown unchanged, so
/// nested scopes do not repeat a name. Call it from inside a catch block.
[[noreturn]] inline void rethrow_with_name(const c10::Error& error, const std::string& name) {
  const std::string prefix = name + ": ";
  if (error.msg().rfind(prefix, 0) == 0) throw;
  std::string message = prefix + error.msg();
  // The c10 error types TORCH_CHECK_* raise; callers catch them by type.
  if (dynamic_cast<const c10::ValueError*>(&error) != nullptr) {
    throw_as<c10::ValueError>(error, std::move(message));
  }
  if (dynamic_cast<const c10::TypeError*>(&error) != nullptr) {
    throw_as<c10::TypeError>(error, std::move(message));
  }
  if (dynamic_cast<const c10::IndexError*>(&error) != nullptr) {
    throw_as<c10::IndexError>(error, std::move(message));
  }
  if (dynamic_cast<const c10::NotImplementedError*>(&error) != nullptr) {
    throw_as<c10::NotImplementedError>(error, std::move(message));
  }
  if (dynamic_cast<const c10::LinAlgError*>(&error) != nullptr) {
    throw_as<c10::LinAlgError>(error, std::move(message));
  }
  if (dynamic_cast<const c10::OutOfMemoryError*>(&error) != nullptr) {
    throw_as<c10::OutOfMemoryError>(error, std::move(message));
  }
  throw_as<c10::Error>(error, std::move(message));
}

/// Runs fn(); a c10::Error it raises is rethrown with `name` in front of its message (nothing
/// is added when name is empty). Other exceptions pass through untouched.
template <typename Fn>
decltype(auto) named_errors(const std::string& name, Fn&& fn) {
  if (name.empty()) return std::forward<Fn>(fn)();
  try {
    return std::forward<Fn>(fn)();
  } catch (const c10::Error& error) {
    rethrow_with_name(error, name);
  }
}

}  // namespace tquant::detail
