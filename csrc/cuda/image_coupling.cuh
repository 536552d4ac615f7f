// Image affine coupling CUDA launchers (math: ../image_coupling_math.h); no torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include "../image_coupling_index.h"
#include "dtype.h"

namespace fastflow::cuda {

// x, st: contiguous NCHW; rescale: [Cc] contiguous; y: like x; partial: [B, Cc] opmath
// type (the plane's logdet), zero-filled by the caller.
cudaError_t launch_image_coupling_forward(const ImageCouplingGeometry& g, DType dtype,
                                          const void* x, const void* st, const void* rescale,
                                          void* y, void* partial, bool reverse,
                                          cudaStream_t stream);

// grad_y: like x; grad_logdet: [B] opmath type; grad_x like x, grad_st like st; partial:
// [B, Cc] opmath type (the plane's rescale gradient), zero-filled by the caller.
cudaError_t launch_image_coupling_backward(const ImageCouplingGeometry& g, DType dtype,
                                           const void* grad_y, const void* grad_logdet,
                                           const void* x, const void* st, const void* rescale,
                                           void* grad_x, void* grad_st, void* partial,
                                           bool reverse, cudaStream_t stream);

}  // namespace fastflow::cuda
