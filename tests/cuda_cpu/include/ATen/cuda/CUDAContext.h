// The CPU emulation's stand-in for torch's header (tests/cuda_cpu): the current stream.
// The emulated kernels run synchronously, so the stream is only passed along.
#pragma once

#include <cuda_runtime_api.h>

namespace at::cuda {

struct EmulatedStream {
  operator cudaStream_t() const { return nullptr; }
};

inline EmulatedStream getCurrentCUDAStream() { return {}; }

}  // namespace at::cuda
