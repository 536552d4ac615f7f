// The fastflow library: every op schema (ops_schema.h). Kernels register per dispatch key in
// csrc/cpu/ and csrc/cuda/; fake implementations and autograd are registered from
// Python (fastflow/ops/).
#include <torch/library.h>

#include <string>

#include "ops_schema.h"

#ifdef FASTFLOW_WITH_CUDA
#include "cuda/build_info.h"
#endif

TORCH_LIBRARY(fastflow, m) { fastflow::define_ops(m); }

// What this library was built with, read by fastflow/_extension.py through ctypes:
// "cuda=0" or "cuda=1;cuda_version=13.0;cuda_arch=900".
extern "C" const char* fastflow_build_info() {
#ifdef FASTFLOW_WITH_CUDA
  static const std::string info = std::string("cuda=1;cuda_version=") +
                                  fastflow::cuda::cuda_version() +
                                  ";cuda_arch=" + fastflow::cuda::cuda_arch_list();
  return info.c_str();
#else
  return "cuda=0";
#endif
}
