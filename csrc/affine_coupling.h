// Vector affine coupling: argument checks shared by the CPU and CUDA bindings.
//
// From x [B, D], the conditioner's raw s and t [B, D] and a mask m [D]:
//   s' = act(s)·(1−m) (act: identity or tanh), t' = t·(1−m)
//   forward: y = x·m + (1−m)·(x·exp(s') + t'),     logdet = Σ_d s'
//   reverse: y = x·m + (1−m)·(y_in − t')·exp(−s'),  logdet = −Σ_d s'
// s and t may be strided views (two halves of one conditioner output) as long as each row
// is contiguous; logdet is float32 (float64 for float64 inputs).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <tuple>
#include <utility>

#include "checks.h"
#include "layout.h"

namespace fastflow {

inline void check_affine_coupling(const at::Tensor& x, const at::Tensor& s, const at::Tensor& t,
                                  const at::Tensor& mask) {
  constexpr const char* op = "affine_coupling";
  TORCH_CHECK_VALUE(x.dim() == 2, "affine_coupling: expected x of shape [B, D], got ", x.sizes());
  require_float(op, "x", x);
  TORCH_CHECK_VALUE(s.sizes() == x.sizes(), "affine_coupling: s must have x's shape ", x.sizes(),
                    ", got ", s.sizes());
  TORCH_CHECK_VALUE(t.sizes() == x.sizes(), "affine_coupling: t must have x's shape ", x.sizes(),
                    ", got ", t.sizes());
  TORCH_CHECK_VALUE(mask.dim() == 1 && mask.size(0) == x.size(1),
                    "affine_coupling: mask must have shape [", x.size(1),
                    "] (one entry per column of x), got ", mask.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(mask.scalar_type()),
                   "affine_coupling: mask must be a float tensor, got ", mask.scalar_type());
  require_like_x(op, x, "s", s);
  require_like_x(op, x, "t", t);
  require_like_x(op, x, "mask", mask);
}

inline at::ScalarType logdet_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_affine_coupling_backward(const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                                           const at::Tensor& x) {
  TORCH_CHECK_VALUE(grad_y.sizes() == x.sizes() && grad_y.scalar_type() == x.scalar_type() &&
                        grad_y.device() == x.device(),
                    "affine_coupling_backward: grad_y must match x (", x.sizes(), ", ",
                    x.scalar_type(), "), got ", grad_y.sizes(), ", ", grad_y.scalar_type());
  TORCH_CHECK_VALUE(grad_logdet.dim() == 1 && grad_logdet.size(0) == x.size(0) &&
                        grad_logdet.scalar_type() == logdet_dtype(x) &&
                        grad_logdet.device() == x.device(),
                    "affine_coupling_backward: grad_logdet must be [", x.size(0), "] ",
                    logdet_dtype(x), ", got ", grad_logdet.sizes(), " ",
                    grad_logdet.scalar_type());
}

// The packed form: st [B, 2D] holds s = st[:, :D] and t = st[:, D:] (the 2-D RealNVP's
// st_net output); returns the two halves as views.
inline std::pair<at::Tensor, at::Tensor> split_packed(const at::Tensor& x, const at::Tensor& st) {
  TORCH_CHECK_VALUE(x.dim() == 2, "affine_coupling_packed: expected x of shape [B, D], got ",
                    x.sizes());
  TORCH_CHECK_VALUE(st.dim() == 2 && st.size(0) == x.size(0) && st.size(1) == 2 * x.size(1),
                    "affine_coupling_packed: st must have shape [", x.size(0), ", ",
                    2 * x.size(1), "], got ", st.sizes());
  return {st.narrow(1, 0, x.size(1)), st.narrow(1, x.size(1), x.size(1))};
}

// The backward ops around one device's kernel. `backward_into(grad_y, grad_logdet, x, s, t,
// mask, tanh_scale, reverse, grad_x, grad_s, grad_t)` writes the gradients into grad_x
// (contiguous) and grad_s, grad_t (rows contiguous, any row stride).
template <typename BackwardInto>
std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling_backward_op(
    BackwardInto backward_into, const at::Tensor& grad_y, const at::Tensor& grad_logdet,
    const at::Tensor& x, const at::Tensor& s, const at::Tensor& t, const at::Tensor& mask,
    bool tanh_scale, bool reverse) {
  check_affine_coupling(x, s, t, mask);
  check_affine_coupling_backward(grad_y, grad_logdet, x);
  const auto options = x.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor grad_x = at::empty(x.sizes(), options);
  at::Tensor grad_s = at::empty(x.sizes(), options);
  at::Tensor grad_t = at::empty(x.sizes(), options);
  if (x.size(0) > 0) {
    backward_into(grad_y, grad_logdet, x, s, t, mask, tanh_scale, reverse, grad_x, grad_s, grad_t);
  }
  return {grad_x, grad_s, grad_t};
}

// The packed op's backward: st's gradient as one [B, 2D] tensor, its halves written in place.
template <typename BackwardInto>
std::tuple<at::Tensor, at::Tensor> affine_coupling_packed_backward_op(
    BackwardInto backward_into, const at::Tensor& grad_y, const at::Tensor& grad_logdet,
    const at::Tensor& x, const at::Tensor& st, const at::Tensor& mask, bool tanh_scale,
    bool reverse) {
  const auto [s, t] = split_packed(x, st);
  check_affine_coupling(x, s, t, mask);
  check_affine_coupling_backward(grad_y, grad_logdet, x);
  const auto options = x.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor grad_x = at::empty(x.sizes(), options);
  at::Tensor grad_st = at::empty(st.sizes(), options);
  auto [grad_s, grad_t] = split_packed(x, grad_st);
  if (x.size(0) > 0) {
    backward_into(grad_y, grad_logdet, x, s, t, mask, tanh_scale, reverse, grad_x, grad_s, grad_t);
  }
  return {grad_x, grad_st};
}

}  // namespace fastflow
