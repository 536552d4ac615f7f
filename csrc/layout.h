// Tensor layouts the kernels read, shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>

namespace fastflow {

// A 2-D tensor whose rows are contiguous, any row stride (so the halves of one conditioner
// output, or a column slice of x, are read in place). Anything else is copied.
inline at::Tensor rows_contiguous(const at::Tensor& v) {
  return v.size(1) <= 1 || v.stride(1) == 1 ? v : v.contiguous();
}

}  // namespace fastflow
