// Vector affine coupling CUDA launchers (math: ../affine_coupling.h); no torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "dtype.h"

namespace fastflow::cuda {

struct AffineCouplingArgs {
  const void* x;
  const void* s;
  const void* t;
  const void* mask;         // [dim], contiguous
  int64_t rows, dim;
  int64_t x_row, s_row, t_row;  // row strides; each row is contiguous
  DType dtype;
  bool tanh_scale, reverse;
};

// y: [rows, dim] contiguous; logdet: [rows] of opmath type (float, or double for double).
cudaError_t launch_affine_coupling_forward(const AffineCouplingArgs& args, void* y, void* logdet,
                                           cudaStream_t stream);

// grad_y: rows contiguous with row stride grad_y_row; grad_logdet: [rows] opmath type with
// stride grad_logdet_stride; grad_x, grad_s, grad_t: [rows, dim] contiguous.
cudaError_t launch_affine_coupling_backward(const AffineCouplingArgs& args, const void* grad_y,
                                            int64_t grad_y_row, const void* grad_logdet,
                                            int64_t grad_logdet_stride, void* grad_x,
                                            void* grad_s, void* grad_t, cudaStream_t stream);

}  // namespace fastflow::cuda
