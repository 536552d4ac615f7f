// Helpers for the CUDA bindings (torch headers): dtype mapping for the raw-pointer launchers.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include "dtype.h"

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
