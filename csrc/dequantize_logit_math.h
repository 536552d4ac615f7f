// Dequantize-and-logit (seed 001's RealNVP._pre_process) with its log-determinant; shared
// by the CPU and CUDA kernels (no torch headers).
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

}  // namespace fastflow
