// One-pass MADE / MAF sampling (docs/design.md, "One-pass MADE/MAF sampling"): the rules and
// the argument checks, shared by the CPU and CUDA bindings.
//
// The network is a chain of masked linear layers l = 0..L − 1, y_l = (W_l⊙M_l)·in_l + b_l
// [+ c_l] [+ y_k], wired by:
//   activated[l]      (L − 1) layer l + 1 reads activation(y_l) (`activation`), or y_l itself
//   skips[l]          (L)     −1, or the layer k <= l − 2 whose y_k is added to y_l (a
//                             residual block's skip; same width)
//   context_biases[l] (L)     None, or a per-sample term c_l [N, n_l] (what a conditional
//                             model's context contributes, computed before the call)
// A plain MADE: activated all true, no skips, no context. Every unit
// has a sorted *position* in its layer: the units of layer l's output are sorted by the step
// at which they become final (their ready step), the inputs by the step at which they are
// sampled. The plan, built once per model from the masks (fastflow/ops/made_plan.py):
//
//   unit_orders[0]        [D]        position -> input dimension (the sampling order)
//   unit_orders[l + 1]    [n_l]      position -> output unit of layer l (for the output
//                                    layer, positions k·i .. k·i + k − 1 are the k outputs
//                                    of dimension order[0][i], in the rule's order: the plan
//                                    maps the model's layout, blocked or interleaved, to this)
//   push_ranges[l]        [m_l, 2]   for each input position of layer l, the half-open range
//                                    of its output positions that its mask connects it to
//   finalize_offsets[l]   [T + 2]    hidden layer l's positions whose ready step is s are
//                                    [offsets[s], offsets[s + 1]), s = 0..T
//   step_offsets          [T + 1]    the dimensions sampled at step t = 1..T are the input
//                                    positions [offsets[t − 1], offsets[t])
//
// The checks here read only the arguments' shapes, dtypes and devices: reading the plan's
// values would be a copy to the host per call on a GPU. The CPU kernel, which reads the plan
// on the host anyway, checks its values; the CUDA kernel clamps every index it reads from it.
//
// Rules (the `rule` argument, by name, with its constants `rule_params`): what a step does
// with the outputs of one dimension and its noise e, and the value v it feeds back into the
// network. Their formulas: made_sample_math.h.
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>

#include "made_sample_math.h"

namespace fastflow {

// The rule of this name (fastflow/ops/made_sample.py's RULES names the same).
inline SampleRule parse_sample_rule(std::string_view name) {
  if (name == "bernoulli") return SampleRule::kBernoulli;
  if (name == "gaussian") return SampleRule::kGaussian;
  if (name == "gaussian_inverse") return SampleRule::kGaussianInverse;
  if (name == "zuko_affine_inverse") return SampleRule::kZukoAffineInverse;
  if (name == "zuko_rqs_inverse") return SampleRule::kZukoRqsInverse;
  if (name == "nflows_affine_inverse") return SampleRule::kNflowsAffineInverse;
  C10_THROW_ERROR(ValueError, c10::str("made_sample: rule must be one of 'bernoulli', 'gaussian', "
                                       "'gaussian_inverse', 'zuko_affine_inverse', "
                                       "'zuko_rqs_inverse', 'nflows_affine_inverse', got '",
                                       name, "'"));
}

// The activation of this name (fastflow/ops/made_sample.py's ACTIVATIONS names the same).
inline Activation parse_activation(std::string_view name) {
  if (name == "relu") return Activation::kRelu;
  if (name == "leaky_relu") return Activation::kLeakyRelu;
  if (name == "elu") return Activation::kElu;
  if (name == "silu") return Activation::kSilu;
  if (name == "tanh") return Activation::kTanh;
  if (name == "sigmoid") return Activation::kSigmoid;
  C10_THROW_ERROR(ValueError, c10::str("made_sample: activation must be one of 'relu', "
                                       "'leaky_relu', 'elu', 'silu', 'tanh', 'sigmoid', got '",
                                       name, "'"));
}

// What check_made_sample reads from the arguments.
struct SampleCall {
  SampleRule rule;
  Activation activation;
  int64_t per_dim;  // network outputs per dimension
};

namespace detail {

// The number of rule_params each rule takes, and its outputs per dimension (0: any k with
// k = 3·bins − 1, bins >= 1, for the spline).
inline int64_t rule_param_count(SampleRule rule) {
  switch (rule) {
    case SampleRule::kZukoAffineInverse: return 1;
    case SampleRule::kZukoRqsInverse: return 2;
    case SampleRule::kNflowsAffineInverse: return 1;
    default: return 0;
  }
}

inline int64_t rule_outputs_per_dim(SampleRule rule) {
  return rule == SampleRule::kBernoulli ? 1 : rule == SampleRule::kZukoRqsInverse ? 0 : 2;
}

inline void check_index_tensor(const char* name, const at::Tensor& t, int64_t size,
                               const at::Device& device) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, "made_sample: ", name, " must be int64, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == size, "made_sample: ", name,
                    " must have shape [", size, "], got ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == device, "made_sample: ", name, " must be on the noise's device ",
                    device, ", got ", t.device());
}

}  // namespace detail

// Checks the shapes, dtypes and devices of fastflow::made_sample's arguments (as the
// dispatcher passes them) and the rule's constants, not the plan's values (see the top).
inline SampleCall check_made_sample(const at::Tensor& noise, at::TensorList weights,
                                    const c10::List<std::optional<at::Tensor>>& biases,
                                    at::TensorList masks, at::TensorList unit_orders,
                                    at::TensorList push_ranges, at::TensorList finalize_offsets,
                                    const at::Tensor& step_offsets, std::string_view rule_name,
                                    at::ArrayRef<double> rule_params,
                                    std::string_view activation_name,
                                    const c10::List<bool>& activated, at::IntArrayRef skips,
                                    const c10::List<std::optional<at::Tensor>>& context_biases) {
  const SampleRule rule = parse_sample_rule(rule_name);
  const Activation activation = parse_activation(activation_name);
  const int64_t param_count = detail::rule_param_count(rule);
  TORCH_CHECK_VALUE(static_cast<int64_t>(rule_params.size()) == param_count, "made_sample: rule '",
                    rule_name, "' takes ", param_count, " rule_params, got ", rule_params.size());
  for (const double p : rule_params) {
    TORCH_CHECK_VALUE(std::isfinite(p), "made_sample: rule_params must be finite, got ", p);
  }
  if (rule == SampleRule::kZukoAffineInverse || rule == SampleRule::kZukoRqsInverse) {
    const double log_slope = rule_params[param_count - 1];
    TORCH_CHECK_VALUE(log_slope < 0.0, "made_sample: the log slope (rule_params[", param_count - 1,
                      "]) must be negative (a slope in (0, 1)), got ", log_slope);
  }
  if (rule == SampleRule::kZukoRqsInverse) {
    TORCH_CHECK_VALUE(rule_params[0] > 0.0, "made_sample: the spline's bound (rule_params[0]) "
                      "must be positive, got ", rule_params[0]);
  }
  if (rule == SampleRule::kNflowsAffineInverse) {
    TORCH_CHECK_VALUE(rule_params[0] > 0.0, "made_sample: epsilon (rule_params[0]) must be "
                      "positive, got ", rule_params[0]);
  }
  TORCH_CHECK_VALUE(noise.dim() == 2, "made_sample: noise must be [N, D], got ", noise.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(noise.scalar_type()), "made_sample: noise must be a float "
                   "tensor, got ", noise.scalar_type());
  const int64_t layers = static_cast<int64_t>(weights.size());
  TORCH_CHECK_VALUE(layers >= 1, "made_sample: weights must hold at least one layer");
  TORCH_CHECK_VALUE(static_cast<int64_t>(biases.size()) == layers &&
                        static_cast<int64_t>(masks.size()) == layers &&
                        static_cast<int64_t>(push_ranges.size()) == layers &&
                        static_cast<int64_t>(unit_orders.size()) == layers + 1 &&
                        static_cast<int64_t>(finalize_offsets.size()) == layers - 1,
                    "made_sample: expected ", layers, " biases, masks and push_ranges, ",
                    layers + 1, " unit_orders and ", layers - 1, " finalize_offsets");
  const int64_t dims = noise.size(1);
  const at::Device device = noise.device();
  TORCH_CHECK_TYPE(step_offsets.scalar_type() == at::kLong && step_offsets.dim() == 1 &&
                       step_offsets.size(0) >= 1,
                   "made_sample: step_offsets must be a non-empty int64 vector");
  const int64_t steps = step_offsets.size(0) - 1;
  detail::check_index_tensor("step_offsets", step_offsets, steps + 1, device);
  int64_t width = dims;
  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor& w = weights[l];
    TORCH_CHECK_VALUE(w.dim() == 2 && w.size(1) == width, "made_sample: weights[", l,
                      "] must be [out, ", width, "], got ", w.sizes());
    TORCH_CHECK_VALUE(w.scalar_type() == noise.scalar_type() && w.device() == device,
                      "made_sample: weights[", l, "] must have the noise's dtype and device");
    TORCH_CHECK_VALUE(masks[l].sizes() == w.sizes() && masks[l].scalar_type() == w.scalar_type() &&
                          masks[l].device() == device,
                      "made_sample: masks[", l, "] must have weights[", l, "]'s shape, dtype "
                      "and device");
    if (const std::optional<at::Tensor> bias = biases.get(l); bias.has_value()) {
      TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == w.size(0) &&
                            bias->scalar_type() == w.scalar_type() && bias->device() == device,
                        "made_sample: biases[", l, "] must be [", w.size(0), "] like weights");
    }
    detail::check_index_tensor("unit_orders", unit_orders[l], width, device);
    const at::Tensor& ranges = push_ranges[l];
    TORCH_CHECK_VALUE(ranges.scalar_type() == at::kLong && ranges.dim() == 2 &&
                          ranges.size(0) == width && ranges.size(1) == 2 && ranges.device() == device,
                      "made_sample: push_ranges[", l, "] must be int64 [", width, ", 2]");
    if (l < layers - 1) {
      detail::check_index_tensor("finalize_offsets", finalize_offsets[l], steps + 2, device);
    }
    width = w.size(0);
  }
  TORCH_CHECK_VALUE(static_cast<int64_t>(activated.size()) == layers - 1 &&
                        static_cast<int64_t>(skips.size()) == layers &&
                        static_cast<int64_t>(context_biases.size()) == layers,
                    "made_sample: expected ", layers - 1, " activated flags, ", layers,
                    " skips and ", layers, " context_biases, got ", activated.size(), ", ",
                    skips.size(), " and ", context_biases.size());
  for (int64_t l = 0; l < layers; ++l) {
    const int64_t k = skips[l];
    TORCH_CHECK_VALUE(k == -1 || (k >= 0 && k <= l - 2 && weights[k].size(0) == weights[l].size(0)),
                      "made_sample: skips[", l, "] must be -1 or a layer k <= l - 2 of the same "
                      "width, got ", k);
    if (const std::optional<at::Tensor> c = context_biases.get(l); c.has_value()) {
      TORCH_CHECK_VALUE(c->dim() == 2 && c->size(0) == noise.size(0) &&
                            c->size(1) == weights[l].size(0) &&
                            c->scalar_type() == noise.scalar_type() && c->device() == device,
                        "made_sample: context_biases[", l, "] must be [", noise.size(0), ", ",
                        weights[l].size(0), "] with the noise's dtype and device, got ",
                        c->scalar_type(), " ", c->sizes(), " on ", c->device());
    }
  }
  int64_t per_dim = detail::rule_outputs_per_dim(rule);
  if (per_dim == 0) {  // the spline: 3·bins − 1 outputs per dimension
    per_dim = dims > 0 && width % dims == 0 ? width / dims : 0;
    TORCH_CHECK_VALUE(dims == 0 || (per_dim >= 2 && (per_dim + 1) % 3 == 0), "made_sample: rule '",
                      rule_name, "' needs 3·bins − 1 outputs per dimension (bins >= 1), got ",
                      width, " outputs for ", dims, " dimensions");
  } else {
    TORCH_CHECK_VALUE(width == per_dim * dims, "made_sample: the last layer must have ",
                      per_dim * dims, " outputs for rule '", rule_name, "', got ", width);
  }
  detail::check_index_tensor("unit_orders", unit_orders[layers], width, device);
  return {rule, activation, per_dim};
}

}  // namespace fastflow
