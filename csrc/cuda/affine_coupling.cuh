// Vector affine coupling CUDA launchers (math: ../affine_coupling_math.h); no torch headers.
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

// Gradient buffers of the backward: grad_y rows contiguous (row stride grad_y_row);
// grad_logdet [rows] of the opmath type; grad_x [rows, dim] contiguous; grad_s and grad_t
// rows contiguous with their own row strides (the halves of one [rows, 2·dim] tensor for
// the packed op).
struct AffineCouplingGrads {
  const void* grad_y;
  int64_t grad_y_row;
  const void* grad_logdet;
  int64_t grad_logdet_stride;
  void* grad_x;
  void* grad_s;
  int64_t grad_s_row;
  void* grad_t;
  int64_t grad_t_row;
};

cudaError_t launch_affine_coupling_backward(const AffineCouplingArgs& args,
                                            const AffineCouplingGrads& grads,
                                            cudaStream_t stream);

}  // namespace fastflow::cuda
