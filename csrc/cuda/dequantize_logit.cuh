// Dequantize-and-logit CUDA launcher (math: ../dequantize_logit_math.h); no torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "dtype.h"

namespace fastflow::cuda {

// x, noise: [batch, n] contiguous; constraint: one element on the device (read there, so
// no host synchronisation); y: like x; sldj: [batch] of the opmath type.
cudaError_t launch_dequantize_logit(DType dtype, const void* x, const void* noise,
                                    const void* constraint, void* y, void* sldj, int64_t batch,
                                    int64_t n, cudaStream_t stream);

}  // namespace fastflow::cuda
