// The CPU emulation's stand-in for torch's header (tests/cuda_cpu): a failed CUDA call
// raises with the emulator's account of it (which limit a launch broke, which thread
// faulted).
#pragma once

#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#define C10_CUDA_CHECK(EXPR)                                                              \
  do {                                                                                    \
    const cudaError_t fastflow_emulated_error = (EXPR);                                   \
    TORCH_CHECK(fastflow_emulated_error == cudaSuccess, "CUDA error (emulated on the CPU): ", \
                cudaGetErrorString(fastflow_emulated_error));                             \
  } while (0)
