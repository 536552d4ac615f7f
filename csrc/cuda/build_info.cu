#include "build_info.h"

#define FASTFLOW_STRINGIFY_(...) #__VA_ARGS__
#define FASTFLOW_STRINGIFY(...) FASTFLOW_STRINGIFY_(__VA_ARGS__)

namespace fastflow::cuda {

const char* cuda_version() {
  return FASTFLOW_STRINGIFY(__CUDACC_VER_MAJOR__) "." FASTFLOW_STRINGIFY(__CUDACC_VER_MINOR__);
}

const char* cuda_arch_list() { return FASTFLOW_STRINGIFY(__CUDA_ARCH_LIST__); }

}  // namespace fastflow::cuda
