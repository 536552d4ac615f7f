// Argument checks shared by the ops' C++ schemas, in the words of fastflow/ops/_checks.py:
// each op checks once, in the code that runs it, and says the same thing on every backend.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace fastflow {

inline void require_float(const char* op, const char* name, const at::Tensor& t) {
  const auto dtype = t.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                       dtype == at::kBFloat16,
                   op, ": ", name, " must be float32, float64, float16 or bfloat16, got ", dtype);
}

// `t` has x's dtype and device (a ValueError: each dtype may be fine alone, the arguments
// disagree).
inline void require_like_x(const char* op, const at::Tensor& x, const char* name,
                           const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.scalar_type() == x.scalar_type(), op, ": ", name, " must have x's dtype ",
                    x.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", name, " must be on x's device ",
                    x.device(), ", got ", t.device());
}

}  // namespace fastflow
