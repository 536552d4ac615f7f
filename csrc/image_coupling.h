// Image affine coupling: argument checks and geometry, shared by the CPU and CUDA bindings
// (layout: image_coupling_index.h; math: image_coupling_math.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "checks.h"
#include "image_coupling_index.h"

namespace fastflow {

inline ImageCouplingGeometry image_coupling_geometry(const at::Tensor& x, const at::Tensor& st,
                                                     const at::Tensor& rescale,
                                                     bool channel_wise, bool reverse_mask) {
  TORCH_CHECK_VALUE(x.dim() == 4, "image_coupling: expected x of shape [B, C, H, W], got ",
                    x.sizes());
  require_float("image_coupling", "x", x);
  const int64_t c = x.size(1);
  TORCH_CHECK_VALUE(!channel_wise || c % 2 == 0,
                    "image_coupling: channel-wise coupling needs an even channel count in x, got ", c);
  const int64_t cc = channel_wise ? c / 2 : c;
  TORCH_CHECK_VALUE(st.dim() == 4 && st.size(0) == x.size(0) && st.size(1) == 2 * cc &&
                        st.size(2) == x.size(2) && st.size(3) == x.size(3),
                    "image_coupling: st must have shape [", x.size(0), ", ", 2 * cc, ", ",
                    x.size(2), ", ", x.size(3), "], got ", st.sizes());
  TORCH_CHECK_VALUE(rescale.numel() == cc, "image_coupling: rescale must have ", cc,
                    " entries, got ", rescale.numel());
  require_like_x("image_coupling", x, "st", st);
  require_like_x("image_coupling", x, "rescale", rescale);
  return {x.size(0), c, cc, x.size(2), x.size(3), channel_wise, reverse_mask};
}

inline void check_image_coupling_backward(const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                                          const at::Tensor& x) {
  const auto opmath = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK_VALUE(grad_y.sizes() == x.sizes() && grad_y.scalar_type() == x.scalar_type() &&
                        grad_y.device() == x.device(),
                    "image_coupling_backward: grad_y must match x (", x.sizes(), ", ",
                    x.scalar_type(), "), got ", grad_y.sizes(), ", ", grad_y.scalar_type());
  TORCH_CHECK_VALUE(grad_logdet.dim() == 1 && grad_logdet.size(0) == x.size(0) &&
                        grad_logdet.scalar_type() == opmath && grad_logdet.device() == x.device(),
                    "image_coupling_backward: grad_logdet must be [", x.size(0), "] ", opmath,
                    ", got ", grad_logdet.sizes(), " ", grad_logdet.scalar_type());
}

}  // namespace fastflow
