// Registers the one-pass MADE / MAF sampling CUDA kernel under the CUDA dispatch key. The
// layers are packed here with ATen ops, as the CPU kernel packs them: W⊙M in the opmath type,
// rows = input positions, columns = output positions, biases in sorted positions.
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <string_view>
#include <tuple>
#include <vector>

#include "../made_sample.h"
#include "binding_utils.h"
#include "made_sample.cuh"

namespace fastflow {
namespace {

// A flat 1-D concatenation; an empty list gives an empty tensor with `options`.
at::Tensor flat_cat(const std::vector<at::Tensor>& parts, const at::TensorOptions& options) {
  if (parts.empty()) return at::empty({0}, options);
  return at::cat(parts);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> made_sample_cuda(
    const at::Tensor& noise_in, at::TensorList weights,
    const c10::List<std::optional<at::Tensor>>& biases, at::TensorList masks,
    at::TensorList unit_orders, at::TensorList push_ranges, at::TensorList finalize_offsets,
    const at::Tensor& step_offsets, std::string_view rule_name, at::ArrayRef<double> rule_params,
    std::string_view activation, const c10::List<bool>& activated, at::IntArrayRef skips,
    const c10::List<std::optional<at::Tensor>>& context_biases) {
  const SampleCall call = check_made_sample(noise_in, weights, biases, masks, unit_orders,
                                            push_ranges, finalize_offsets, step_offsets, rule_name,
                                            rule_params, activation, activated, skips,
                                            context_biases);
  TORCH_INTERNAL_ASSERT(rule_params.size() <= cuda::kMaxRuleParams);
  const int64_t L = static_cast<int64_t>(weights.size());
  TORCH_CHECK_VALUE(L <= cuda::kMaxMadeLayers, "made_sample: the CUDA kernel takes at most ",
                    cuda::kMaxMadeLayers, " layers, got ", L);
  const cuda::DType dtype = cuda_dtype(noise_in.scalar_type());
  const c10::cuda::CUDAGuard guard(noise_in.device());
  const at::Tensor noise = noise_in.contiguous();
  const int64_t samples = noise.size(0), dims = noise.size(1);
  const int64_t out_width = weights[L - 1].size(0);
  const at::ScalarType acc_type = noise.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = noise.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor values = at::empty({samples, dims}, opts);
  at::Tensor outputs = at::empty({samples, out_width}, opts);
  at::Tensor log_terms = at::empty({samples}, opts.dtype(acc_type));
  if (samples == 0) return {values, log_terms, outputs};

  // The unit orders clamped into range (made_sample.cuh: the plan's values are not checked).
  std::vector<at::Tensor> orders{unit_orders[0].clamp(0, dims - 1)};
  for (int64_t l = 0; l < L; ++l) {
    orders.push_back(unit_orders[l + 1].clamp(0, weights[l].size(0) - 1));
  }

  cuda::MadeSampleArgs args{};
  const auto acc_opts = noise.options().dtype(acc_type);
  std::vector<at::Tensor> rows, sorted_biases, ranges, finalize, contexts, skip_positions;
  // The context and skip tables are built only for models that have them: a plain MADE
  // allocates neither.
  bool any_context = false, any_skip = false;
  for (int64_t l = 0; l < L; ++l) {
    any_context = any_context || context_biases.get(l).has_value();
    any_skip = any_skip || skips[l] >= 0;
  }
  int64_t weight_offset = 0, range_offset = 0, acc_offset = 0;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t inputs = weights[l].size(1), outputs_l = weights[l].size(0);
    // Both factors in the opmath type before the product, as the CPU kernel.
    const at::Tensor masked = weights[l].to(acc_type).mul(masks[l].to(acc_type));
    rows.push_back(masked.index_select(0, orders[l + 1]).index_select(1, orders[l]).t()
                       .contiguous().view({-1}));
    const std::optional<at::Tensor> bias = biases.get(l);
    sorted_biases.push_back(bias.has_value()
                                ? bias->to(acc_type).index_select(0, orders[l + 1])
                                : at::zeros({outputs_l}, acc_opts));
    ranges.push_back(push_ranges[l].contiguous().view({-1}));
    if (l + 1 < L) finalize.push_back(finalize_offsets[l].contiguous());
    if (any_context) {
      const std::optional<at::Tensor> context = context_biases.get(l);
      contexts.push_back(context.has_value() ? context->index_select(1, orders[l + 1])
                                             : at::zeros({samples, outputs_l}, noise.options()));
    }
    if (any_skip) {
      // For a layer with a skip source k: the position in this layer of each unit of layer
      // k, in k's position order (the inverse of this layer's order, gathered by k's).
      at::Tensor positions = at::zeros({outputs_l}, noise.options().dtype(at::kLong));
      if (skips[l] >= 0) {
        at::Tensor position_of = at::empty_like(positions);
        position_of.index_put_({orders[l + 1]}, at::arange(outputs_l, positions.options()));
        positions = position_of.index_select(0, orders[skips[l] + 1]);
      }
      skip_positions.push_back(positions);
    }
    args.layers[l] = {weight_offset,
                      range_offset,
                      acc_offset,
                      inputs,
                      outputs_l,
                      static_cast<int32_t>(skips[l]),
                      l + 1 < L && activated.get(l) ? 1 : 0};
    weight_offset += inputs * outputs_l;
    range_offset += inputs;
    acc_offset += outputs_l;
  }
  const auto index_opts = noise.options().dtype(at::kLong);
  const at::Tensor weights_flat = flat_cat(rows, acc_opts);
  const at::Tensor biases_flat = flat_cat(sorted_biases, acc_opts);
  const at::Tensor ranges_flat = flat_cat(ranges, index_opts);
  const at::Tensor finalize_flat = flat_cat(finalize, index_opts);
  const at::Tensor steps = step_offsets.contiguous();
  const at::Tensor contexts_flat = any_context ? at::cat(contexts, 1).contiguous() : at::Tensor();
  const at::Tensor skip_positions_flat = any_skip ? at::cat(skip_positions) : at::Tensor();

  args.noise = noise.const_data_ptr();
  args.weights = weights_flat.const_data_ptr();
  args.biases = biases_flat.const_data_ptr();
  args.ranges = ranges_flat.const_data_ptr<int64_t>();
  args.finalize = finalize_flat.const_data_ptr<int64_t>();
  args.step_offsets = steps.const_data_ptr<int64_t>();
  args.dim_order = orders[0].const_data_ptr<int64_t>();
  args.out_order = orders[L].const_data_ptr<int64_t>();
  args.contexts = contexts_flat.defined() ? contexts_flat.const_data_ptr() : nullptr;
  args.skip_positions =
      skip_positions_flat.defined() ? skip_positions_flat.const_data_ptr<int64_t>() : nullptr;
  args.samples = samples;
  args.dims = dims;
  args.num_layers = L;
  args.steps = steps.size(0) - 1;
  args.acc_width = acc_offset;
  args.rule = call.rule;
  args.activation = call.activation;
  args.per_dim = call.per_dim;
  std::copy(rule_params.begin(), rule_params.end(), args.rule_params);
  args.dtype = dtype;

  size_t scratch_bytes = 0;
  C10_CUDA_CHECK(cuda::made_sample_scratch_bytes(args, &scratch_bytes));
  at::Tensor scratch;
  if (scratch_bytes != 0) {
    scratch = at::empty({static_cast<int64_t>(scratch_bytes)}, noise.options().dtype(at::kByte));
  }
  C10_CUDA_CHECK(cuda::launch_made_sample(
      args, values.mutable_data_ptr(), log_terms.mutable_data_ptr(), outputs.mutable_data_ptr(),
      scratch_bytes != 0 ? scratch.mutable_data_ptr() : nullptr, at::cuda::getCurrentCUDAStream()));
  return {values, log_terms, outputs};
}

}  // namespace

TORCH_LIBRARY_IMPL(FASTFLOW_CUDA_LIBRARY, FASTFLOW_CUDA_KEY, m) { m.impl("made_sample", &made_sample_cuda); }

}  // namespace fastflow
