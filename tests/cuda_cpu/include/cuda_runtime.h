// CUDA runtime of the CPU emulation (tests/cuda_cpu): the API of cuda_runtime_api.h.
#pragma once

#include "cuda_runtime_api.h"
