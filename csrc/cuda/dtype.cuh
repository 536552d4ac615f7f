// Device-side helpers of the CUDA kernels (included by .cu files only): storage types, the
// type math is done in (float, or double for double), conversions, and reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "dtype.h"

namespace fastflow::cuda {

template <typename T> struct OpMath { using type = float; };
template <> struct OpMath<double> { using type = double; };
template <typename T> using opmath_t = typename OpMath<T>::type;

__device__ __forceinline__ float to_opmath(float v) { return v; }
__device__ __forceinline__ double to_opmath(double v) { return v; }
__device__ __forceinline__ float to_opmath(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_opmath(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_opmath(opmath_t<T> v);
template <> __device__ __forceinline__ float from_opmath<float>(float v) { return v; }
template <> __device__ __forceinline__ double from_opmath<double>(double v) { return v; }
template <> __device__ __forceinline__ __half from_opmath<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_opmath<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float exp_(float v) { return expf(v); }
__device__ __forceinline__ double exp_(double v) { return exp(v); }
__device__ __forceinline__ float tanh_(float v) { return tanhf(v); }
__device__ __forceinline__ double tanh_(double v) { return tanh(v); }
__device__ __forceinline__ float log_(float v) { return logf(v); }
__device__ __forceinline__ double log_(double v) { return log(v); }
__device__ __forceinline__ float log1p_(float v) { return log1pf(v); }
__device__ __forceinline__ double log1p_(double v) { return log1p(v); }
__device__ __forceinline__ float sqrt_(float v) { return sqrtf(v); }
__device__ __forceinline__ double sqrt_(double v) { return sqrt(v); }

// The device's math, the Math policy of the per-element formulas (../<op>_math.h).
struct DeviceMath {
  template <typename T> static __device__ __forceinline__ T exp(T v) { return exp_(v); }
  template <typename T> static __device__ __forceinline__ T tanh(T v) { return tanh_(v); }
  template <typename T> static __device__ __forceinline__ T log(T v) { return log_(v); }
  template <typename T> static __device__ __forceinline__ T log1p(T v) { return log1p_(v); }
  template <typename T> static __device__ __forceinline__ T sqrt(T v) { return sqrt_(v); }
};

// Calls f with a null pointer of the storage type for `dtype` (to pick a template).
template <typename F>
__host__ auto dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float64: return f(static_cast<double*>(nullptr));
    case DType::Float16: return f(static_cast<__half*>(nullptr));
    case DType::BFloat16: return f(static_cast<__nv_bfloat16*>(nullptr));
    default: return f(static_cast<float*>(nullptr));
  }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

}  // namespace fastflow::cuda

namespace fastflow::cuda {

// Sum over a block of kThreads threads (a multiple of 32); the result is valid in thread 0.
template <int kThreads, typename T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T partial[kThreads / 32];
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : T(0);
  if (threadIdx.x < 32) v = warp_sum(v);
  return v;
}

}  // namespace fastflow::cuda
