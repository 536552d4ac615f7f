// squeeze_2x2: argument checks and output shape, shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>

#include "checks.h"

namespace fastflow {

// Validates x (same messages as the reference squeeze_2x2 and fastflow/ops/squeeze_2x2.py)
// and returns the output shape.
inline std::array<int64_t, 4> squeeze_2x2_output_shape(const at::Tensor& x, bool reverse,
                                                       bool alt_order) {
  TORCH_CHECK_VALUE(x.dim() == 4, "squeeze_2x2: expected a 4-D NCHW tensor x, got shape ",
                    x.sizes());
  require_float("squeeze_2x2", "x", x);
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  if (reverse) {
    if (alt_order) {
      TORCH_CHECK_VALUE(c % 4 == 0, "Number of channels must be divisible by 4, got ", c, ".");
    } else {
      TORCH_CHECK_VALUE(c % 4 == 0, "Number of channels ", c, " is not divisible by 4");
    }
    return {b, c / 4, 2 * h, 2 * w};
  }
  if (alt_order) {
    TORCH_CHECK_VALUE(h % 2 == 0, "Height must be divisible by 2, got ", h, ".");
    // The original's message says 4; the check (and this one) is for 2.
    TORCH_CHECK_VALUE(w % 2 == 0, "Width must be divisible by 4, got ", w, ".");
  } else {
    TORCH_CHECK_VALUE(h % 2 == 0 && w % 2 == 0, "Expected even spatial dims HxW, got ", h, "x",
                      w);
  }
  return {b, 4 * c, h / 2, w / 2};
}

}  // namespace fastflow
