// Turns runtime bools into compile-time ones for kernel templates (no torch headers).
#pragma once

#include <type_traits>

namespace fastflow {

// Calls f(std::bool_constant<a>{}) for the runtime a.
template <typename F>
void dispatch_flag(bool a, F&& f) {
  a ? f(std::true_type{}) : f(std::false_type{});
}

// Calls f(std::bool_constant<a>{}, std::bool_constant<b>{}) for the runtime a and b.
template <typename F>
void dispatch_flags(bool a, bool b, F&& f) {
  if (a) {
    b ? f(std::true_type{}, std::true_type{}) : f(std::true_type{}, std::false_type{});
  } else {
    b ? f(std::false_type{}, std::true_type{}) : f(std::false_type{}, std::false_type{});
  }
}

}  // namespace fastflow
