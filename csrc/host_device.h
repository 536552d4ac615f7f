// FASTFLOW_HOST_DEVICE: inline functions shared by the CPU and CUDA kernels.
#pragma once

#if defined(__CUDACC__)
#define FASTFLOW_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTFLOW_HOST_DEVICE inline
#endif
