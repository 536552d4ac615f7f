// Dequantize-and-logit (multi-scale RealNVP's _pre_process) with its log-determinant, one
// element: written once for the CPU and CUDA kernels (no torch headers). The kernels load,
// convert to the math type T, call these, and store and sum the results. Math supplies log
// for T: cpu::VectorMath (vectorizable) or cuda::DeviceMath.
// Per element of x [B, ...] with uniform noise and the data constraint c:
//   p = ((2·(x·255 + noise)/256 − 1)·c + 1) / 2,   y = log(p) − log(1 − p)
//   ldj = softplus(y) + softplus(−y) − softplus(log(1 − c) − log(c))
//       = −log(p) − log(1 − p) − softplus(log(1 − c) − log(c))
// and sldj[b] = Σ ldj over sample b (float32, or float64 for float64 inputs).
#pragma once

#include <cmath>

#include "host_device.h"

namespace fastflow {

// softplus(log(1 − c) − log(c)) = log(1 + (1 − c)/c) = −log(c)
template <typename T>
FASTFLOW_HOST_DEVICE T softplus_constant(T c) {
  return -log(c);
}

template <typename T>
struct DequantizeLogitForward {
  T y, ldj;
};

// constant: softplus_constant(c).
template <typename Math, typename T>
FASTFLOW_HOST_DEVICE DequantizeLogitForward<T> dequantize_logit_forward(T x, T noise, T c, T constant) {
  const T u = (x * T(255) + noise) / T(256);
  const T p = ((T(2) * u - T(1)) * c + T(1)) / T(2);
  const T log_p = Math::log(p), log_q = Math::log(T(1) - p);
  return {log_p - log_q, -log_p - log_q - constant};
}

}  // namespace fastflow
