// Masked linear (MADE): argument checks and the degree plan, shared by the CPU and CUDA
// bindings.
//
//   y = x·(W⊙M)ᵀ + b        x [B, K], W [N, K], M [N, K], b [N] or none
//   dX = dY·(W⊙M),   dW = (dYᵀ·X)⊙M,   db = Σ_rows dY
//
// Two ways to give M:
//   masked_linear:         M as a matrix (x's dtype), multiplied into each weight tile as it
//                          is loaded (never materialized as a whole);
//   degree_masked_linear:  M[j, k] = [in_degrees[k] ≤ out_degrees[j]] (MADE's masks;
//                          the output layer's `<` is `≤` with out_degrees − 1). In degree
//                          order the mask is a staircase: sorted output unit r sees exactly
//                          the first row_prefix[r] sorted inputs, so the kernels skip the
//                          weight tiles that are all zero and need no mask on those that are
//                          all one.
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sort.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "checks.h"
#include "layout.h"

namespace fastflow {

inline void check_masked_linear_common(const char* op, const at::Tensor& x,
                                       const at::Tensor& weight,
                                       const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": expected x of shape [B, in_features], got ", x.sizes());
  require_float(op, "x", x);
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(1) == x.size(1), op,
                    ": weight must have shape [out_features, ", x.size(1), "], got ",
                    weight.sizes());
  require_like_x(op, x, "weight", weight);
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(0), op,
                      ": bias must have shape [", weight.size(0), "], got ", bias->sizes());
    require_like_x(op, x, "bias", *bias);
  }
}

inline void check_masked_linear(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& mask, const c10::optional<at::Tensor>& bias) {
  check_masked_linear_common("masked_linear", x, weight, bias);
  TORCH_CHECK_VALUE(mask.sizes() == weight.sizes(), "masked_linear: mask must have weight's shape ",
                    weight.sizes(), ", got ", mask.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(mask.scalar_type()),
                   "masked_linear: mask must be a float tensor, got ", mask.scalar_type());
  require_like_x("masked_linear", x, "mask", mask);
}

inline void check_degree_masked_linear(const at::Tensor& x, const at::Tensor& weight,
                                       const at::Tensor& in_degrees,
                                       const at::Tensor& out_degrees,
                                       const c10::optional<at::Tensor>& bias) {
  check_masked_linear_common("degree_masked_linear", x, weight, bias);
  const auto check_degrees = [&](const char* name, const at::Tensor& degrees, int64_t size) {
    TORCH_CHECK_VALUE(degrees.dim() == 1 && degrees.size(0) == size, "degree_masked_linear: ",
                      name, " must have shape [", size, "], got ", degrees.sizes());
    TORCH_CHECK_TYPE(degrees.scalar_type() == at::kLong, "degree_masked_linear: ", name,
                     " must be int64, got ", degrees.scalar_type());
    TORCH_CHECK_VALUE(degrees.device() == x.device(), "degree_masked_linear: ", name,
                      " must be on x's device ", x.device(), ", got ", degrees.device());
  };
  check_degrees("in_degrees", in_degrees, weight.size(1));
  check_degrees("out_degrees", out_degrees, weight.size(0));
}

inline void check_grad_y(const char* op, const at::Tensor& grad_y, const at::Tensor& x,
                         const at::Tensor& weight) {
  TORCH_CHECK_VALUE(grad_y.dim() == 2 && grad_y.size(0) == x.size(0) &&
                        grad_y.size(1) == weight.size(0) &&
                        grad_y.scalar_type() == x.scalar_type() && grad_y.device() == x.device(),
                    op, ": grad_y must be [", x.size(0), ", ", weight.size(0), "] ",
                    x.scalar_type(), ", got ", grad_y.sizes(), " ", grad_y.scalar_type());
}

// made_mlp: a MADE's network in one call, L masked linear layers with ReLU between, the
// masks given as staircases. The plan is one int64 tensor: the orders of the L + 1 unit
// layers (0: the inputs, L: the outputs; a permutation each: sorted position s holds unit
// order[s]), then the row prefixes of the L layers (non-decreasing each); layer l's mask is
// M_l[order_{l+1}[r], order_l[c]] = [c < prefix_l[r]]. It is small (a few thousand
// integers) and checked in full.
inline void check_made_mlp_plan(const char* op, const at::Tensor& x,
                                const std::vector<int64_t>& widths, const at::Tensor& plan_in) {
  int64_t size = 0;
  for (size_t u = 0; u < widths.size(); ++u) size += widths[u] + (u > 0 ? widths[u] : 0);
  TORCH_CHECK_VALUE(plan_in.dim() == 1 && plan_in.size(0) == size, op,
                    ": plan must have shape [", size, "] (the units' orders, then the layers' "
                    "row prefixes), got ", plan_in.sizes());
  TORCH_CHECK_TYPE(plan_in.scalar_type() == at::kLong, op, ": plan must be int64, got ",
                   plan_in.scalar_type());
  TORCH_CHECK_VALUE(plan_in.device() == x.device(), op, ": plan must be on x's device ",
                    x.device(), ", got ", plan_in.device());
  const at::Tensor plan = plan_in.contiguous();
  const int64_t* p = plan.const_data_ptr<int64_t>();
  for (size_t u = 0; u < widths.size(); ++u) {
    std::vector<bool> seen(widths[u], false);
    for (int64_t s = 0; s < widths[u]; ++s) {
      TORCH_CHECK_VALUE(p[s] >= 0 && p[s] < widths[u] && !seen[p[s]], op, ": plan: order ", u,
                        " must be a permutation of 0..", widths[u] - 1);
      seen[p[s]] = true;
    }
    p += widths[u];
  }
  for (size_t l = 0; l + 1 < widths.size(); ++l) {
    for (int64_t r = 0; r < widths[l + 1]; ++r) {
      TORCH_CHECK_VALUE(p[r] >= 0 && p[r] <= widths[l] && (r == 0 || p[r] >= p[r - 1]), op,
                        ": plan: the row prefixes of layer ", l, " must be non-decreasing, in 0..",
                        widths[l]);
    }
    p += widths[l + 1];
  }
}

inline void check_made_mlp(const at::Tensor& x, at::TensorList weights,
                           const c10::List<c10::optional<at::Tensor>>& biases,
                           const at::Tensor& plan) {
  const char* op = "made_mlp";
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": expected x of shape [B, in_features], got ", x.sizes());
  require_float(op, "x", x);
  TORCH_CHECK_VALUE(!weights.empty(), op, ": weights must hold at least one layer");
  TORCH_CHECK_VALUE(biases.size() == weights.size(), op, ": expected ", weights.size(),
                    " biases (None for a layer without), got ", biases.size());
  std::vector<int64_t> widths{x.size(1)};
  for (size_t l = 0; l < weights.size(); ++l) {
    const at::Tensor& w = weights[l];
    TORCH_CHECK_VALUE(w.dim() == 2 && w.size(1) == widths.back(), op, ": weights[", l,
                      "] must have shape [out_features, ", widths.back(), "], got ", w.sizes());
    TORCH_CHECK_VALUE(w.scalar_type() == x.scalar_type(), op, ": weights[", l,
                      "] must have x's dtype ", x.scalar_type(), ", got ", w.scalar_type());
    TORCH_CHECK_VALUE(w.device() == x.device(), op, ": weights[", l, "] must be on x's device ",
                      x.device(), ", got ", w.device());
    const c10::optional<at::Tensor> bias = biases.get(l);
    if (bias.has_value()) {
      TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == w.size(0), op, ": biases[", l,
                        "] must have shape [", w.size(0), "], got ", bias->sizes());
      TORCH_CHECK_VALUE(bias->scalar_type() == x.scalar_type(), op, ": biases[", l,
                        "] must have x's dtype ", x.scalar_type(), ", got ", bias->scalar_type());
      TORCH_CHECK_VALUE(bias->device() == x.device(), op, ": biases[", l,
                        "] must be on x's device ", x.device(), ", got ", bias->device());
    }
    widths.push_back(w.size(0));
  }
  check_made_mlp_plan(op, x, widths, plan);
}

// made_mlp_backward: made_mlp's own outputs (hidden activations and sorted weights) and plan.
inline void check_made_mlp_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                    at::TensorList hidden, at::TensorList sorted_weights,
                                    const at::Tensor& plan) {
  const char* op = "made_mlp_backward";
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": expected x of shape [B, in_features], got ", x.sizes());
  require_float(op, "x", x);
  TORCH_CHECK_VALUE(!sorted_weights.empty() && hidden.size() + 1 == sorted_weights.size(), op,
                    ": expected one hidden activation fewer than sorted_weights, got ",
                    hidden.size(), " and ", sorted_weights.size());
  std::vector<int64_t> widths{x.size(1)};
  for (size_t l = 0; l < sorted_weights.size(); ++l) {
    const at::Tensor& w = sorted_weights[l];
    TORCH_CHECK_VALUE(w.dim() == 2 && w.size(1) == widths.back() && w.is_contiguous(), op,
                      ": sorted_weights[", l, "] must be contiguous [out_features, ", widths.back(),
                      "], got ", w.sizes());
    require_like_x(op, x, "sorted_weights", w);
    widths.push_back(w.size(0));
    if (l + 1 < sorted_weights.size()) {
      const at::Tensor& h = hidden[l];
      TORCH_CHECK_VALUE(h.dim() == 2 && h.size(0) == x.size(0) && h.size(1) == w.size(0) &&
                            h.is_contiguous(), op, ": hidden[", l, "] must be contiguous [",
                        x.size(0), ", ", w.size(0), "], got ", h.sizes());
      require_like_x(op, x, "hidden", h);
    }
  }
  TORCH_CHECK_VALUE(grad_y.dim() == 2 && grad_y.size(0) == x.size(0) &&
                        grad_y.size(1) == widths.back(), op, ": grad_y must have shape [",
                    x.size(0), ", ", widths.back(), "], got ", grad_y.sizes());
  require_like_x(op, x, "grad_y", grad_y);
  check_made_mlp_plan(op, x, widths, plan);
}

// Degree order: inputs and outputs sorted by degree (stable), and for each sorted output r
// the number of sorted inputs it sees, row_prefix[r] (non-decreasing in r). int64 tensors on
// the degrees' device.
struct DegreePlan {
  at::Tensor in_order, out_order, row_prefix;
};

inline DegreePlan degree_plan(const at::Tensor& in_degrees, const at::Tensor& out_degrees) {
  if (in_degrees.is_cpu()) {
    // A few hundred units: a plain stable sort beats three ATen calls by an order of magnitude.
    const auto order_of = [](const at::Tensor& degrees) {
      const at::Tensor contiguous = degrees.contiguous();
      const int64_t* d = contiguous.const_data_ptr<int64_t>();
      at::Tensor order = at::empty({degrees.numel()}, degrees.options());
      int64_t* o = order.mutable_data_ptr<int64_t>();
      std::iota(o, o + degrees.numel(), int64_t(0));
      std::stable_sort(o, o + degrees.numel(), [d](int64_t a, int64_t b) { return d[a] < d[b]; });
      return std::make_pair(contiguous, order);
    };
    const auto [in_d, in_order] = order_of(in_degrees);
    const auto [out_d, out_order] = order_of(out_degrees);
    at::Tensor row_prefix = at::empty({out_degrees.numel()}, out_degrees.options());
    const int64_t *in_data = in_d.const_data_ptr<int64_t>(), *out_data = out_d.const_data_ptr<int64_t>();
    const int64_t *in_o = in_order.const_data_ptr<int64_t>(), *out_o = out_order.const_data_ptr<int64_t>();
    int64_t* prefix = row_prefix.mutable_data_ptr<int64_t>();
    int64_t seen = 0;  // out degrees rise along the sorted rows: one merge-like sweep
    for (int64_t r = 0; r < out_degrees.numel(); ++r) {
      while (seen < in_degrees.numel() && in_data[in_o[seen]] <= out_data[out_o[r]]) ++seen;
      prefix[r] = seen;
    }
    return {in_order, out_order, row_prefix};
  }
  auto [in_sorted, in_order] = at::sort(in_degrees, /*stable=*/std::optional<bool>(true), /*dim=*/0);
  auto [out_sorted, out_order] = at::sort(out_degrees, /*stable=*/std::optional<bool>(true), /*dim=*/0);
  at::Tensor row_prefix = at::searchsorted(in_sorted, out_sorted, /*out_int32=*/false,
                                           /*right=*/true);
  return {in_order, out_order, row_prefix};
}

}  // namespace fastflow
