// squeeze_2x2 CUDA launcher: raw pointers and sizes, no torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace fastflow::cuda {

struct Squeeze2x2Args {
  const void* x;          // input, strided
  void* out;              // output, contiguous NCHW
  int64_t batch;          // B
  int64_t channels;       // C of the full tensor [B, C, 2h, 2w]
  int64_t height;         // h of the squeezed tensor [B, 4C, h, w]
  int64_t width;          // w of the squeezed tensor
  int64_t x_stride[4];    // strides of x, in elements
  int element_size;       // 2, 4 or 8 bytes: the kernel moves bits, whatever the float type
  bool reverse;
  bool alt_order;
};

cudaError_t launch_squeeze_2x2(const Squeeze2x2Args& args, cudaStream_t stream);

}  // namespace fastflow::cuda
