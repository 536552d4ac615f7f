// Dequantize-and-logit CUDA kernel: one block per sample, a block sum for its logdet.
#include <type_traits>

#include "../dequantize_logit_math.h"
#include "dequantize_logit.cuh"
#include "dtype.cuh"

namespace fastflow::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    dequantize_logit_kernel(const T* __restrict__ x, const T* __restrict__ noise,
                            const T* __restrict__ constraint, T* __restrict__ y,
                            opmath_t<T>* __restrict__ sldj, int64_t n) {
  using acc_t = opmath_t<T>;
  const int64_t b = blockIdx.x;
  const acc_t c = to_opmath(constraint[0]);
  const acc_t constant = softplus_constant(c);
  acc_t sum = 0;
  for (int64_t i = b * n + threadIdx.x; i < (b + 1) * n; i += kThreads) {
    const auto out =
        dequantize_logit_forward<DeviceMath>(to_opmath(x[i]), to_opmath(noise[i]), c, constant);
    y[i] = from_opmath<T>(out.y);
    sum += out.ldj;
  }
  sum = block_sum<kThreads>(sum);
  if (threadIdx.x == 0) sldj[b] = sum;
}

}  // namespace

cudaError_t launch_dequantize_logit(DType dtype, const void* x, const void* noise,
                                    const void* constraint, void* y, void* sldj, int64_t batch,
                                    int64_t n, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  dispatch_dtype(dtype, [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    dequantize_logit_kernel<T><<<static_cast<unsigned>(batch), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(noise), static_cast<const T*>(constraint),
        static_cast<T*>(y), static_cast<opmath_t<T>*>(sldj), n);
  });
  return cudaGetLastError();
}

}  // namespace fastflow::cuda
