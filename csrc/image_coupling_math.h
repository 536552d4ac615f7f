// Image affine coupling, one element: the forward and backward formulas, written once for
// the CPU and CUDA kernels (no torch headers; which elements change and which conditioner
// channel changes them: image_coupling_index.h). The kernels load, convert to the math
// type T, call these, and store and sum the results. Math supplies exp and tanh for T:
// cpu::VectorMath (vectorizable) or cuda::DeviceMath.
//
// With s' = rescale[cc]·tanh(s)·change, t' = t·change (change: changed_pixel):
//   forward: y = (x + t')·exp(s'), logdet += s';  reverse: y = x·exp(−s') − t', logdet −= s'
#pragma once

#include "host_device.h"

namespace fastflow {

template <typename T>
struct ImageCouplingForward {
  T y;
  T s_masked;  // the plane's logdet is Σ s_masked (−Σ for the reverse)
};

// x, s, t: the element's input and raw conditioner outputs; weight: rescale[cc].
template <bool kReverse, typename Math, typename T>
FASTFLOW_HOST_DEVICE ImageCouplingForward<T> image_coupling_forward(T x, T s, T t, T weight,
                                                                    T change) {
  const T s_masked = weight * Math::tanh(s) * change;
  const T t_masked = t * change;
  const T y = kReverse ? x * Math::exp(-s_masked) - t_masked : (x + t_masked) * Math::exp(s_masked);
  return {y, s_masked};
}

template <typename T>
struct ImageCouplingGradients {
  T x, s, t;
  T weight;  // this element's term of rescale[cc]'s gradient
};

// The gradients from the element's grad_y and its sample's grad_logdet (the reverse does
// not read t).
template <bool kReverse, typename Math, typename T>
FASTFLOW_HOST_DEVICE ImageCouplingGradients<T> image_coupling_backward(T x, T s, T t, T weight,
                                                                       T change, T grad_y,
                                                                       T grad_logdet) {
  const T act = Math::tanh(s);
  const T s_masked = weight * act * change;
  T grad_x, grad_t, grad_s_masked;
  if constexpr (kReverse) {
    const T inv_scale = Math::exp(-s_masked);
    grad_x = grad_y * inv_scale;
    grad_t = -grad_y * change;
    grad_s_masked = -grad_y * x * inv_scale - grad_logdet;
  } else {
    const T scale = Math::exp(s_masked);
    const T t_masked = t * change;
    grad_x = grad_y * scale;
    grad_t = grad_y * scale * change;
    grad_s_masked = grad_y * (x + t_masked) * scale + grad_logdet;
  }
  return {grad_x, grad_s_masked * change * weight * (T(1) - act * act), grad_t,
          grad_s_masked * change * act};
}

}  // namespace fastflow
