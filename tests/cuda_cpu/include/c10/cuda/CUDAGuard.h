// The CPU emulation's stand-in for torch's header (tests/cuda_cpu): one emulated device, so
// the guard has nothing to switch.
#pragma once

#include <c10/core/Device.h>

namespace c10::cuda {

struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};

}  // namespace c10::cuda
