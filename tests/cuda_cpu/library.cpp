// The emulation's op library: fastflow's schemas under `fastflow_emulated`, whose CPU
// kernels are the CUDA bindings of csrc/cuda built against the emulation.
#include <torch/library.h>

#include "ops_schema.h"

TORCH_LIBRARY(fastflow_emulated, m) { fastflow::define_ops(m); }
