// Vector affine coupling CUDA kernels: one warp per row (coalesced loads along the row, a
// shuffle reduction for the row's logdet), grid-stride over rows.
#include <type_traits>

#include "../affine_coupling_math.h"
#include "../dispatch_flags.h"
#include "dtype.cuh"
#include "affine_coupling.cuh"

namespace fastflow::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int64_t kMaxBlocks = 65536;

template <typename T, bool kTanh, bool kReverse>
__global__ void __launch_bounds__(kThreads)
    affine_coupling_forward_kernel(AffineCouplingArgs a, T* __restrict__ y,
                                   opmath_t<T>* __restrict__ logdet) {
  using acc_t = opmath_t<T>;
  const auto* x = static_cast<const T*>(a.x);
  const auto* s = static_cast<const T*>(a.s);
  const auto* t = static_cast<const T*>(a.t);
  const auto* mask = static_cast<const T*>(a.mask);
  const int lane = threadIdx.x % 32;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  for (int64_t row = first; row < a.rows; row += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    acc_t sum = 0;
    for (int64_t d = lane; d < a.dim; d += 32) {
      const auto out = affine_coupling_forward<kTanh, kReverse, DeviceMath>(
          to_opmath(x[row * a.x_row + d]), to_opmath(s[row * a.s_row + d]),
          to_opmath(t[row * a.t_row + d]), to_opmath(mask[d]));
      y[row * a.dim + d] = from_opmath<T>(out.y);
      sum += out.s_masked;
    }
    sum = warp_sum(sum);
    if (lane == 0) logdet[row] = kReverse ? -sum : sum;
  }
}

template <typename T, bool kTanh, bool kReverse>
__global__ void __launch_bounds__(kThreads)
    affine_coupling_backward_kernel(AffineCouplingArgs a, AffineCouplingGrads g) {
  using acc_t = opmath_t<T>;
  const auto* grad_y = static_cast<const T*>(g.grad_y);
  const auto* grad_logdet = static_cast<const opmath_t<T>*>(g.grad_logdet);
  auto* grad_x = static_cast<T*>(g.grad_x);
  auto* grad_s = static_cast<T*>(g.grad_s);
  auto* grad_t = static_cast<T*>(g.grad_t);
  const auto* x = static_cast<const T*>(a.x);
  const auto* s = static_cast<const T*>(a.s);
  const auto* t = static_cast<const T*>(a.t);
  const auto* mask = static_cast<const T*>(a.mask);
  const int lane = threadIdx.x % 32;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  for (int64_t row = first; row < a.rows; row += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const acc_t g_logdet = grad_logdet[row * g.grad_logdet_stride];
    for (int64_t d = lane; d < a.dim; d += 32) {
      const auto grad = affine_coupling_backward<kTanh, kReverse, DeviceMath>(
          to_opmath(x[row * a.x_row + d]), to_opmath(s[row * a.s_row + d]),
          to_opmath(t[row * a.t_row + d]), to_opmath(mask[d]),
          to_opmath(grad_y[row * g.grad_y_row + d]), g_logdet);
      grad_x[row * a.dim + d] = from_opmath<T>(grad.x);
      grad_s[row * g.grad_s_row + d] = from_opmath<T>(grad.s);
      grad_t[row * g.grad_t_row + d] = from_opmath<T>(grad.t);
    }
  }
}

unsigned blocks_for(int64_t rows) {
  const int64_t needed = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  return static_cast<unsigned>(needed < kMaxBlocks ? needed : kMaxBlocks);
}

}  // namespace

cudaError_t launch_affine_coupling_forward(const AffineCouplingArgs& a, void* y, void* logdet,
                                           cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  dispatch_dtype(a.dtype, [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    dispatch_flags(a.tanh_scale, a.reverse, [&](auto tanh_flag, auto reverse_flag) {
      affine_coupling_forward_kernel<T, decltype(tanh_flag)::value, decltype(reverse_flag)::value>
          <<<blocks_for(a.rows), kThreads, 0, stream>>>(a, static_cast<T*>(y),
                                                         static_cast<opmath_t<T>*>(logdet));
    });
  });
  return cudaGetLastError();
}

cudaError_t launch_affine_coupling_backward(const AffineCouplingArgs& a,
                                            const AffineCouplingGrads& grads,
                                            cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  dispatch_dtype(a.dtype, [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    dispatch_flags(a.tanh_scale, a.reverse, [&](auto tanh_flag, auto reverse_flag) {
      affine_coupling_backward_kernel<T, decltype(tanh_flag)::value, decltype(reverse_flag)::value>
          <<<blocks_for(a.rows), kThreads, 0, stream>>>(a, grads);
    });
  });
  return cudaGetLastError();
}

}  // namespace fastflow::cuda
