// Image affine coupling CUDA kernels: one block per (b, c) plane of x, threads striding
// over the plane; the plane's logdet (or rescale gradient) is a block sum written to a
// [B, Cc] partials buffer that the binding reduces.
#include <type_traits>

#include "../dispatch_flags.h"
#include "../image_coupling_math.h"
#include "dtype.cuh"
#include "image_coupling.cuh"

namespace fastflow::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, bool kReverse>
__global__ void __launch_bounds__(kThreads)
    image_coupling_forward_kernel(ImageCouplingGeometry g, const T* __restrict__ x,
                                  const T* __restrict__ st, const T* __restrict__ rescale,
                                  T* __restrict__ y, opmath_t<T>* __restrict__ partial) {
  using acc_t = opmath_t<T>;
  const int64_t plane = blockIdx.x, hw = g.height * g.width;
  const int64_t b = plane / g.channels, cc = conditioner_channel(g, plane % g.channels);
  const T* x_plane = x + plane * hw;
  T* y_plane = y + plane * hw;
  if (cc < 0) {  // a channel kept whole
    for (int64_t i = threadIdx.x; i < hw; i += kThreads) y_plane[i] = x_plane[i];
    return;
  }
  const T* s = st + (b * 2 * g.cond_channels + cc) * hw;
  const T* t = s + g.cond_channels * hw;
  const acc_t weight = to_opmath(rescale[cc]);
  acc_t sum = 0;
  for (int64_t i = threadIdx.x; i < hw; i += kThreads) {
    const auto out = image_coupling_forward<kReverse, DeviceMath>(
        to_opmath(x_plane[i]), to_opmath(s[i]), to_opmath(t[i]), weight,
        changed_pixel<acc_t>(g, i / g.width, i % g.width));
    y_plane[i] = from_opmath<T>(out.y);
    sum += out.s_masked;
  }
  sum = block_sum<kThreads>(sum);
  if (threadIdx.x == 0) partial[b * g.cond_channels + cc] = kReverse ? -sum : sum;
}

template <typename T, bool kReverse>
__global__ void __launch_bounds__(kThreads)
    image_coupling_backward_kernel(ImageCouplingGeometry g, const T* __restrict__ grad_y,
                                   const opmath_t<T>* __restrict__ grad_logdet,
                                   const T* __restrict__ x, const T* __restrict__ st,
                                   const T* __restrict__ rescale, T* __restrict__ grad_x,
                                   T* __restrict__ grad_st, opmath_t<T>* __restrict__ partial) {
  using acc_t = opmath_t<T>;
  const int64_t plane = blockIdx.x, hw = g.height * g.width;
  const int64_t b = plane / g.channels, cc = conditioner_channel(g, plane % g.channels);
  const T* grad_y_plane = grad_y + plane * hw;
  T* grad_x_plane = grad_x + plane * hw;
  if (cc < 0) {  // a channel kept whole: its gradient passes through
    for (int64_t i = threadIdx.x; i < hw; i += kThreads) grad_x_plane[i] = grad_y_plane[i];
    return;
  }
  const int64_t s_offset = (b * 2 * g.cond_channels + cc) * hw;
  const int64_t t_offset = s_offset + g.cond_channels * hw;
  const T* x_plane = x + plane * hw;
  const acc_t weight = to_opmath(rescale[cc]);
  const acc_t g_logdet = grad_logdet[b];
  acc_t grad_weight = 0;
  for (int64_t i = threadIdx.x; i < hw; i += kThreads) {
    const auto grad = image_coupling_backward<kReverse, DeviceMath>(
        to_opmath(x_plane[i]), to_opmath(st[s_offset + i]), to_opmath(st[t_offset + i]), weight,
        changed_pixel<acc_t>(g, i / g.width, i % g.width), to_opmath(grad_y_plane[i]), g_logdet);
    grad_x_plane[i] = from_opmath<T>(grad.x);
    grad_st[s_offset + i] = from_opmath<T>(grad.s);
    grad_st[t_offset + i] = from_opmath<T>(grad.t);
    grad_weight += grad.weight;
  }
  grad_weight = block_sum<kThreads>(grad_weight);
  if (threadIdx.x == 0) partial[b * g.cond_channels + cc] = grad_weight;
}

}  // namespace

cudaError_t launch_image_coupling_forward(const ImageCouplingGeometry& g, DType dtype,
                                          const void* x, const void* st, const void* rescale,
                                          void* y, void* partial, bool reverse,
                                          cudaStream_t stream) {
  const int64_t planes = g.batch * g.channels;
  if (planes == 0 || g.height * g.width == 0) return cudaSuccess;
  dispatch_dtype(dtype, [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    dispatch_flag(reverse, [&](auto reverse_flag) {
      image_coupling_forward_kernel<T, decltype(reverse_flag)::value>
          <<<static_cast<unsigned>(planes), kThreads, 0, stream>>>(
              g, static_cast<const T*>(x), static_cast<const T*>(st),
              static_cast<const T*>(rescale), static_cast<T*>(y),
              static_cast<opmath_t<T>*>(partial));
    });
  });
  return cudaGetLastError();
}

cudaError_t launch_image_coupling_backward(const ImageCouplingGeometry& g, DType dtype,
                                           const void* grad_y, const void* grad_logdet,
                                           const void* x, const void* st, const void* rescale,
                                           void* grad_x, void* grad_st, void* partial,
                                           bool reverse, cudaStream_t stream) {
  const int64_t planes = g.batch * g.channels;
  if (planes == 0 || g.height * g.width == 0) return cudaSuccess;
  dispatch_dtype(dtype, [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    dispatch_flag(reverse, [&](auto reverse_flag) {
      image_coupling_backward_kernel<T, decltype(reverse_flag)::value>
          <<<static_cast<unsigned>(planes), kThreads, 0, stream>>>(
              g, static_cast<const T*>(grad_y), static_cast<const opmath_t<T>*>(grad_logdet),
              static_cast<const T*>(x), static_cast<const T*>(st),
              static_cast<const T*>(rescale), static_cast<T*>(grad_x), static_cast<T*>(grad_st),
              static_cast<opmath_t<T>*>(partial));
    });
  });
  return cudaGetLastError();
}

}  // namespace fastflow::cuda
