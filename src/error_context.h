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

/// Throws a copy of `error` as the first of the types E... that it is (the last, c10::Error,
/// always matches).
template <typename E, typename... Rest>
[[noreturn]] void throw_as_first_match(const c10::Error& error, std::string message) {
  if constexpr (sizeof...(Rest) == 0) {
    throw_as<E>(error, std::move(message));
  } else {
    if (dynamic_cast<const E*>(&error) != nullptr) throw_as<E>(error, std::move(message));
    throw_as_first_match<Rest...>(error, std::move(message));
  }
}

/// Throws a copy of `error` (same c10 error type, same backtrace and context) whose message is
/// "name: <message>". A message that already starts with "name: " is rethrown unchanged, so
/// nested scopes do not repeat a name. Call it from inside a catch block.
[[noreturn]] inline void rethrow_with_name(const c10::Error& error, const std::string& name) {
  const std::string prefix = name + ": ";
  if (error.msg().rfind(prefix, 0) == 0) throw;
  // The c10 error types TORCH_CHECK_* raise; callers catch them by type.
  throw_as_first_match<c10::ValueError, c10::TypeError, c10::IndexError, c10::NotImplementedError,
                       c10::LinAlgError, c10::OutOfMemoryError, c10::Error>(error,
                                                                            prefix + error.msg());
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
