// Vector affine coupling, one element: the forward and backward formulas of
// affine_coupling.h, written once for the CPU and CUDA kernels (no torch headers). The
// kernels load, convert to the math type T, call these, and store and sum the results.
// Math supplies exp and tanh for T: cpu::VectorMath (vectorizable) or cuda::DeviceMath.
#pragma once

#include "host_device.h"

namespace fastflow {

template <typename T>
struct AffineCouplingForward {
  T y;
  T s_masked;  // the row's logdet is Σ s_masked (−Σ for the reverse)
};

// x, s, t: the element's input and raw conditioner outputs; keep: its mask entry.
template <bool kTanh, bool kReverse, typename Math, typename T>
FASTFLOW_HOST_DEVICE AffineCouplingForward<T> affine_coupling_forward(T x, T s, T t, T keep) {
  const T change = T(1) - keep;
  const T s_masked = (kTanh ? Math::tanh(s) : s) * change;
  const T t_masked = t * change;
  const T y = kReverse ? x * keep + change * ((x - t_masked) * Math::exp(-s_masked))
                       : x * keep + change * (x * Math::exp(s_masked) + t_masked);
  return {y, s_masked};
}

template <typename T>
struct AffineCouplingGradients {
  T x, s, t;
};

// The gradients of the element's x, raw s and t from its grad_y and its row's grad_logdet
// (only the reverse reads t).
template <bool kTanh, bool kReverse, typename Math, typename T>
FASTFLOW_HOST_DEVICE AffineCouplingGradients<T> affine_coupling_backward(T x, T s, T t, T keep,
                                                                         T grad_y, T grad_logdet) {
  const T change = T(1) - keep;
  const T act = kTanh ? Math::tanh(s) : s;
  const T act_grad = kTanh ? T(1) - act * act : T(1);
  const T s_masked = act * change;
  T grad_x, grad_s_masked, grad_t;
  if constexpr (kReverse) {
    const T inv_scale = Math::exp(-s_masked);
    const T t_masked = t * change;
    grad_x = grad_y * (keep + change * inv_scale);
    grad_s_masked = -grad_y * change * (x - t_masked) * inv_scale - grad_logdet;
    grad_t = -grad_y * change * inv_scale * change;
  } else {
    const T scale = Math::exp(s_masked);
    grad_x = grad_y * (keep + change * scale);
    grad_s_masked = grad_y * change * x * scale + grad_logdet;
    grad_t = grad_y * change * change;
  }
  return {grad_x, grad_s_masked * change * act_grad, grad_t};
}

}  // namespace fastflow
