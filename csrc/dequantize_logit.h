// Dequantize-and-logit (seed 001's RealNVP._pre_process) with its log-determinant.
// Per element of x [B, ...] with uniform noise and the data constraint c:
//   p = ((2·(x·255 + noise)/256 − 1)·c + 1) / 2,   y = log(p) − log(1 − p)
//   ldj = softplus(y) + softplus(−y) − softplus(log(1 − c) − log(c))
//       = −log(p) − log(1 − p) − softplus(log(1 − c) − log(c))
// and sldj[b] = Σ ldj over sample b (float32, or float64 for float64 inputs).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "host_device.h"

namespace fastflow {

template <typename T>
FASTFLOW_HOST_DEVICE T softplus_constant(T c) {
  // softplus(log(1 − c) − log(c)) = log(1 + (1 − c)/c) = −log(c)
  return -log(c);
}

inline void check_dequantize_logit(const at::Tensor& x, const at::Tensor& noise,
                                   const at::Tensor& constraint) {
  TORCH_CHECK_VALUE(x.dim() >= 1, "dequantize_logit: x needs a batch dimension, got a scalar");
  TORCH_CHECK_VALUE(noise.sizes() == x.sizes(), "dequantize_logit: noise must have x's shape ",
                    x.sizes(), ", got ", noise.sizes());
  TORCH_CHECK_VALUE(constraint.numel() == 1,
                    "dequantize_logit: constraint must have one element, got ", constraint.numel());
  for (const auto* other : {&noise, &constraint}) {
    TORCH_CHECK_TYPE(other->scalar_type() == x.scalar_type(),
                     "dequantize_logit: x, noise and constraint must share a dtype, got ",
                     x.scalar_type(), " and ", other->scalar_type());
    TORCH_CHECK_VALUE(other->device() == x.device(),
                      "dequantize_logit: x, noise and constraint must be on one device");
  }
}

}  // namespace fastflow
