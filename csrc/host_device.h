// FASTFLOW_HOST_DEVICE: inline functions shared by the CPU and CUDA kernels. On the host
// they are always inlined: the CPU kernels' `#pragma omp simd` loops call them, and only
// inlined code is vectorized (and contracted to FMA in the AVX2 build of a loop).
#pragma once

#if defined(__CUDACC__)
#define FASTFLOW_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTFLOW_HOST_DEVICE inline __attribute__((always_inline))
#endif
