// Masked linear CUDA launchers (math and the degree plan: ../masked_linear.h); no torch
// headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "dtype.h"

namespace fastflow::cuda {

// The mask is given one of two ways (a flag says which: an empty tensor's pointer may be
// null, so the pointers can't):
//   matrix: mask, a [out_features, in_features] contiguous matrix of the inputs' dtype;
//   degree: the degree plan (int64, contiguous, on the device): in_order [in_features] and
//     out_order [out_features] sort the units by degree, and sorted output r sees exactly
//     the sorted inputs 0 .. row_prefix[r] − 1 (row_prefix non-decreasing), so
//     M[out_order[r], in_order[c]] = [c < row_prefix[r]].
struct MaskedLinearArgs {
  const void* x;          // [batch, in_features], rows contiguous, row stride x_row
  int64_t x_row;
  const void* weight;     // [out_features, in_features] contiguous
  bool degree;            // which form; the other's pointers are unused
  const void* mask;
  const int64_t* in_order;
  const int64_t* out_order;
  const int64_t* row_prefix;
  int64_t batch, in_features, out_features;
  DType dtype;            // accumulation in float32 (float64 for float64)
};

// y [batch, out_features] contiguous = x·(W⊙M)ᵀ + bias (bias [out_features] contiguous, or
// nullptr).
cudaError_t launch_masked_linear_forward(const MaskedLinearArgs& args, const void* bias, void* y,
                                         cudaStream_t stream);

// grad_y [batch, out_features], rows contiguous, row stride grad_y_row. Writes
// grad_x = dY·(W⊙M) [batch, in_features] contiguous unless grad_x is nullptr, and
// grad_weight = (dYᵀ·X)⊙M [out_features, in_features] contiguous, every entry (zeros where
// the mask is zero, and everywhere when batch is 0). The bias gradient is the caller's.
cudaError_t launch_masked_linear_backward(const MaskedLinearArgs& args, const void* grad_y,
                                          int64_t grad_y_row, void* grad_x, void* grad_weight,
                                          cudaStream_t stream);

}  // namespace fastflow::cuda
