// What the CUDA part of the library was compiled for (no torch headers).
#pragma once

namespace fastflow::cuda {

// The toolkit version that compiled the kernels, e.g. "13.0".
const char* cuda_version();
// The architectures compiled for, from nvcc's __CUDA_ARCH_LIST__, e.g. "800,900".
const char* cuda_arch_list();

}  // namespace fastflow::cuda
