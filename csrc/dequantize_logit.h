// Dequantize-and-logit: argument checks shared by the CPU and CUDA bindings (math:
// dequantize_logit_math.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "checks.h"

namespace fastflow {

inline void check_dequantize_logit(const at::Tensor& x, const at::Tensor& noise,
                                   const at::Tensor& constraint) {
  constexpr const char* op = "dequantize_logit";
  TORCH_CHECK_VALUE(x.dim() >= 1, "dequantize_logit: x needs a batch dimension, got a scalar");
  require_float(op, "x", x);
  TORCH_CHECK_VALUE(noise.sizes() == x.sizes(), "dequantize_logit: noise must have x's shape ",
                    x.sizes(), ", got ", noise.sizes());
  TORCH_CHECK_VALUE(constraint.numel() == 1,
                    "dequantize_logit: constraint must have one element, got ", constraint.numel());
  require_like_x(op, x, "noise", noise);
  require_like_x(op, x, "constraint", constraint);
}

}  // namespace fastflow
