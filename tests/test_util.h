#pragma once

// Helpers shared by the unit tests.

#include <string>

#include <c10/util/Exception.h>

namespace tquant::test {

/// The message of the c10::Error that `f` throws (without backtrace), or "" if it throws none.
template <typename Fn>
std::string error_message(Fn&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

}  // namespace tquant::test
