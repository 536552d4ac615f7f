// One-pass MADE / MAF sampling (docs/design.md, "One-pass MADE/MAF sampling"): the rules and
// the argument checks, shared by the CPU and CUDA bindings.
//
// The network is a stack of masked linear layers l = 0..L with ReLU between them. Every unit
// has a sorted *position* in its layer: the units of layer l's output are sorted by the step
// at which they become final (their ready step), the inputs by the step at which they are
// sampled. The plan, built once per model from the masks (fastflow/ops/made_plan.py):
//
//   unit_orders[0]        [D]        position -> input dimension (the sampling order)
//   unit_orders[l + 1]    [n_l]      position -> output unit of layer l (for the output
//                                    layer: dimension order[0][i]'s units, one per dimension
//                                    for Bernoulli logits, two (μ, α) for the Gaussian rules)
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
// Rules (the `rule` argument, by name): what a step does with the outputs of one dimension
// and its noise e, and the value v it feeds back into the network:
//   "bernoulli":        logit l, v = [e < sigmoid(l)], log term += log p(v | l)  (the MADE)
//   "gaussian":         μ, α, v = μ + e·exp(α), log term −= α   (Gaussian MADE, MAF)
//   "gaussian_inverse": μ, α, v = (e − μ)·exp(−α), log term −= α (an IAF's slow direction)
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "made_sample_math.h"

namespace fastflow {

inline int64_t outputs_per_dim(SampleRule rule) { return rule == SampleRule::kBernoulli ? 1 : 2; }

// The rule of this name (fastflow/ops/made_sample.py's OUTPUTS_PER_DIM names the same).
inline SampleRule parse_sample_rule(std::string_view name) {
  if (name == "bernoulli") return SampleRule::kBernoulli;
  if (name == "gaussian") return SampleRule::kGaussian;
  if (name == "gaussian_inverse") return SampleRule::kGaussianInverse;
  C10_THROW_ERROR(ValueError, c10::str("made_sample: rule must be one of 'bernoulli', "
                                       "'gaussian', 'gaussian_inverse', got '", name, "'"));
}

namespace detail {

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
// dispatcher passes them), not the plan's values (see the top). Returns the rule.
inline SampleRule check_made_sample(const at::Tensor& noise, at::TensorList weights,
                                    const c10::List<std::optional<at::Tensor>>& biases,
                                    at::TensorList masks, at::TensorList unit_orders,
                                    at::TensorList push_ranges, at::TensorList finalize_offsets,
                                    const at::Tensor& step_offsets, std::string_view rule_name) {
  const SampleRule rule = parse_sample_rule(rule_name);
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
  TORCH_CHECK_VALUE(width == outputs_per_dim(rule) * dims, "made_sample: the last layer must have ",
                    outputs_per_dim(rule) * dims, " outputs for this rule, got ", width);
  detail::check_index_tensor("unit_orders", unit_orders[layers], width, device);
  return rule;
}

}  // namespace fastflow
