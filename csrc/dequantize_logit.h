// Dequantize-and-logit: argument checks shared by the CPU and CUDA bindings (math:
// dequantize_logit_math.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace fastflow {

inline void check_dequantize_logit(const at::Tensor& x, const at::Tensor& noise,
                                   const at::Tensor& constraint) {
  TORCH_CHECK_VALUE(x.dim() >= 1, "dequantize_logit: x needs a batch dimension, got a scalar");
  TORCH_CHECK_VALUE(noise.sizes() == x.sizes(), "dequantize_logit: noise must have x's shape ",
                    x.sizes(), ", got ", noise.sizes());
  TORCH_CHECK_VALUE(constraint.numel() == 1,
                    "dequantize_logit: constraint must have one element, got ", constraint.numel());
  for (const auto* other : {&noise, &constraint}) {
    TORCH_CHECK_VALUE(other->scalar_type() == x.scalar_type(),
                     "dequantize_logit: x, noise and constraint must share a dtype, got ",
                     x.scalar_type(), " and ", other->scalar_type());
    TORCH_CHECK_VALUE(other->device() == x.device(),
                      "dequantize_logit: x, noise and constraint must be on one device");
  }
}

}  // namespace fastflow
