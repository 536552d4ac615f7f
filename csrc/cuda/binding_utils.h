// Helpers for the CUDA bindings (torch headers): where they register, and the dtype mapping
// for the raw-pointer launchers.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include "dtype.h"

// The library and dispatch key the bindings register under: fastflow's CUDA key. The tests'
// CPU emulation of the CUDA kernels (tests/cuda_cpu) builds these same bindings into a
// library of its own, on the CPU key.
#ifndef FASTFLOW_CUDA_LIBRARY
#define FASTFLOW_CUDA_LIBRARY fastflow
#define FASTFLOW_CUDA_KEY CUDA
#endif

namespace fastflow {

inline cuda::DType cuda_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return cuda::DType::Float32;
    case at::kDouble: return cuda::DType::Float64;
    case at::kHalf: return cuda::DType::Float16;
    case at::kBFloat16: return cuda::DType::BFloat16;
    default: TORCH_CHECK_TYPE(false, "fastflow: unsupported dtype ", type);
  }
}

}  // namespace fastflow
