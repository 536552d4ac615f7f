// One-pass MADE / MAF sampling on the CPU (plan and rules: ../made_sample.h), push form:
// every layer keeps running pre-activations in sorted positions; when a unit becomes final
// (a hidden unit at its ready step, an input when it is sampled) its value times its packed
// weight row is added once into the next layer's accumulators, over just the range of
// positions its mask connects it to. Each weight is used once per sample: the arithmetic of
// about one forward pass instead of D. Zeros (of ReLU, of Bernoulli samples) push nothing.
//
// Threads take blocks of samples; each runs the whole D-step loop for its block, so the steps
// need no synchronisation. The plan's values are checked at every call (here on the host, that
// costs no copy).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "../made_sample.h"

namespace fastflow {
namespace {

// Values of a contiguous int64 plan tensor lie in [lo, hi], and are non-decreasing when
// `sorted`.
void check_values(const std::string& name, const at::Tensor& t, int64_t lo, int64_t hi,
                  bool sorted) {
  const int64_t* v = t.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    TORCH_CHECK_VALUE(v[i] >= lo && v[i] <= hi, "made_sample: ", name, " holds ", v[i],
                      ", outside [", lo, ", ", hi, "]");
    TORCH_CHECK_VALUE(!sorted || i == 0 || v[i] >= v[i - 1], "made_sample: ", name,
                      " must be non-decreasing");
  }
}

// A contiguous int64 plan tensor holds each of 0..n−1 exactly once (else some outputs would
// be left unwritten).
void check_permutation(const std::string& name, const at::Tensor& t, int64_t n) {
  check_values(name, t, 0, n - 1, false);
  const int64_t* v = t.const_data_ptr<int64_t>();
  std::vector<bool> seen(n, false);
  for (int64_t i = 0; i < t.numel(); ++i) {
    TORCH_CHECK_VALUE(!seen[v[i]], "made_sample: ", name, " must be a permutation of 0..", n - 1,
                      " (", v[i], " appears twice)");
    seen[v[i]] = true;
  }
}

// The values of a plan whose shapes check_made_sample has checked: every index the loops
// below read lies in range (what fastflow/ops/made_plan.py checks when a plan is made; the op
// may be given any plan).
void check_plan_values(int64_t dims, at::TensorList weights, at::TensorList unit_orders,
                       at::TensorList push_ranges, at::TensorList finalize_offsets,
                       const at::Tensor& step_offsets_in) {
  const at::Tensor step_offsets = step_offsets_in.contiguous();
  check_values("step_offsets", step_offsets, 0, dims, true);
  const int64_t* steps = step_offsets.const_data_ptr<int64_t>();
  TORCH_CHECK_VALUE(steps[0] == 0 && steps[step_offsets.numel() - 1] == dims,
                    "made_sample: step_offsets must run from 0 to D = ", dims);
  const int64_t layers = static_cast<int64_t>(weights.size());
  int64_t width = dims;
  for (int64_t l = 0; l <= layers; ++l) {
    check_permutation(c10::str("unit_orders[", l, "]"), unit_orders[l].contiguous(), width);
    if (l == layers) break;
    const int64_t out = weights[l].size(0);
    const at::Tensor ranges = push_ranges[l].contiguous();
    check_values(c10::str("push_ranges[", l, "]"), ranges, 0, out, false);
    const int64_t* r = ranges.const_data_ptr<int64_t>();
    for (int64_t i = 0; i < width; ++i) {
      TORCH_CHECK_VALUE(r[2 * i] <= r[2 * i + 1], "made_sample: push_ranges[", l,
                        "] holds a range the wrong way round");
    }
    if (l + 1 < layers) {
      const at::Tensor offsets = finalize_offsets[l].contiguous();
      check_values(c10::str("finalize_offsets[", l, "]"), offsets, 0, out, true);
      TORCH_CHECK_VALUE(offsets.const_data_ptr<int64_t>()[0] == 0, "made_sample: finalize_offsets[",
                        l, "] must start at 0");
    }
    width = out;
  }
}

// A layer in sorted positions: row i (an input position) holds W⊙M's column for that input,
// over the output positions [begin[i], end[i]) (entries outside are never read).
template <typename acc_t>
struct PackedLayer {
  std::vector<acc_t> rows;  // [inputs, outputs]
  std::vector<acc_t> bias;  // [outputs], sorted
  std::vector<int64_t> begin, end;
  int64_t inputs = 0, outputs = 0;
};

template <typename scalar_t, typename acc_t>
PackedLayer<acc_t> pack_layer(const at::Tensor& weight_in, const at::Tensor& mask_in,
                              const std::optional<at::Tensor>& bias_in, const at::Tensor& in_order_in,
                              const at::Tensor& out_order_in, const at::Tensor& ranges_in) {
  const at::Tensor weight = weight_in.contiguous(), mask = mask_in.contiguous();
  const at::Tensor in_order = in_order_in.contiguous(), out_order = out_order_in.contiguous();
  const at::Tensor ranges = ranges_in.contiguous();
  PackedLayer<acc_t> layer;
  layer.inputs = weight.size(1);
  layer.outputs = weight.size(0);
  layer.rows.resize(layer.inputs * layer.outputs);
  layer.bias.assign(layer.outputs, acc_t(0));
  layer.begin.resize(layer.inputs);
  layer.end.resize(layer.inputs);
  const scalar_t* w = weight.const_data_ptr<scalar_t>();
  const scalar_t* m = mask.const_data_ptr<scalar_t>();
  const int64_t* in_o = in_order.const_data_ptr<int64_t>();
  const int64_t* out_o = out_order.const_data_ptr<int64_t>();
  const int64_t* r = ranges.const_data_ptr<int64_t>();
  if (bias_in.has_value()) {
    const at::Tensor bias = bias_in->contiguous();
    const scalar_t* b = bias.const_data_ptr<scalar_t>();
    for (int64_t p = 0; p < layer.outputs; ++p) layer.bias[p] = static_cast<acc_t>(b[out_o[p]]);
  }
  for (int64_t i = 0; i < layer.inputs; ++i) {
    layer.begin[i] = r[2 * i];
    layer.end[i] = r[2 * i + 1];
  }
  // A transpose with gathers on both sides: tiles of kTile output positions keep their weight
  // and mask rows in cache while every input position's slice of them is written.
  constexpr int64_t kTile = 64;
  at::parallel_for(0, (layer.outputs + kTile - 1) / kTile, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t p0 = t0 * kTile; p0 < std::min(layer.outputs, t1 * kTile); p0 += kTile) {
      const int64_t p1 = std::min(layer.outputs, p0 + kTile);
      for (int64_t i = 0; i < layer.inputs; ++i) {
        const int64_t k = in_o[i];
        acc_t* row = layer.rows.data() + i * layer.outputs;
        for (int64_t p = std::max(p0, layer.begin[i]); p < std::min(p1, layer.end[i]); ++p) {
          const int64_t j = out_o[p] * layer.inputs + k;
          row[p] = static_cast<acc_t>(w[j]) * static_cast<acc_t>(m[j]);
        }
      }
    }
  });
  return layer;
}

// acc[b, begin:end) += value[b] · row[begin:end) for the samples whose value is not zero.
template <typename acc_t>
inline void push(const PackedLayer<acc_t>& layer, int64_t i, const acc_t* value, int64_t samples,
                 acc_t* acc) {
  const int64_t begin = layer.begin[i], end = layer.end[i];
  if (begin == end) return;
  const acc_t* row = layer.rows.data() + i * layer.outputs;
  for (int64_t b = 0; b < samples; ++b) {
    const acc_t v = value[b];
    if (v == acc_t(0)) continue;
    acc_t* a = acc + b * layer.outputs;
#pragma omp simd
    for (int64_t p = begin; p < end; ++p) a[p] += v * row[p];
  }
}

// The rules' math (made_sample_math.h) as the CPU kernel runs it: libm's.
struct StdMath {
  template <typename T> static T exp(T v) { return std::exp(v); }
  template <typename T> static T log(T v) { return std::log(v); }
  template <typename T> static T log1p(T v) { return std::log1p(v); }
  template <typename T> static T sqrt(T v) { return std::sqrt(v); }
  template <typename T> static T tanh(T v) { return std::tanh(v); }
  template <typename T> static T mul(T a, T b) { return a * b; }
};

template <typename scalar_t>
struct RoundThrough {
  template <typename T> static T apply(T v) { return static_cast<T>(static_cast<scalar_t>(v)); }
};

// A residual skip out of a hidden layer: y[target] += y[source], unit by unit.
struct Skip {
  int64_t target;
  std::vector<int64_t> positions;  // the target position of each source position
};

struct Schedule {
  std::vector<std::vector<int64_t>> finalize;     // per hidden layer, [T + 2]
  std::vector<int64_t> steps;                     // [T + 1]
  std::vector<int64_t> dim_order;                 // [D]
  std::vector<std::vector<int64_t>> layer_orders;  // per layer: position -> unit
  std::vector<bool> activated;                    // [L − 1]
  std::vector<std::vector<Skip>> skips_from;      // per layer: the skips out of it
};

// What every sample block reads besides the layers and the schedule.
template <typename scalar_t>
struct SampleInputs {
  SampleCall call;
  const double* rule_params;
  const scalar_t* noise;                       // [samples, D]
  std::vector<const scalar_t*> context_biases;  // per layer: [samples, outputs], or null
};

std::vector<int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return {c.const_data_ptr<int64_t>(), c.const_data_ptr<int64_t>() + c.numel()};
}

// Samples [s0, s1): the whole D-step loop for one block.
template <typename scalar_t, typename acc_t>
void sample_block(const std::vector<PackedLayer<acc_t>>& layers, const Schedule& schedule,
                  const SampleInputs<scalar_t>& in, int64_t s0, int64_t s1, scalar_t* values,
                  acc_t* log_terms, scalar_t* outputs) {
  const int64_t n = s1 - s0, L = static_cast<int64_t>(layers.size());
  const int64_t dims = static_cast<int64_t>(schedule.dim_order.size());
  std::vector<std::vector<acc_t>> acc(L);
  for (int64_t l = 0; l < L; ++l) {
    acc[l].resize(n * layers[l].outputs);
    for (int64_t b = 0; b < n; ++b) {
      std::copy(layers[l].bias.begin(), layers[l].bias.end(), acc[l].begin() + b * layers[l].outputs);
    }
  }
  for (int64_t l = 0; l < L; ++l) {
    if (in.context_biases[l] == nullptr) continue;
    const int64_t width = layers[l].outputs;
    const std::vector<int64_t>& order = schedule.layer_orders[l];
    for (int64_t b = 0; b < n; ++b) {
      const scalar_t* c = in.context_biases[l] + (s0 + b) * width;
      for (int64_t p = 0; p < width; ++p) acc[l][b * width + p] += static_cast<acc_t>(c[order[p]]);
    }
  }
  std::vector<acc_t> value(n);
  std::vector<double> log_term(n, 0.0);
  const int64_t steps = static_cast<int64_t>(schedule.steps.size()) - 1;
  const int64_t per_dim = in.call.per_dim;
  for (int64_t t = 1; t <= steps; ++t) {
    // Hidden units ready at t − 1 are final: push them, lower layers first (a unit of layer
    // l + 1 ready at t − 1 may need units of layer l that became ready at t − 1).
    for (int64_t l = 0; l + 1 < L; ++l) {
      const int64_t width = layers[l].outputs;
      const bool activated = schedule.activated[l];
      for (int64_t p = schedule.finalize[l][t - 1]; p < schedule.finalize[l][t]; ++p) {
        for (int64_t b = 0; b < n; ++b) {
          // Rounded to the model's dtype, as the reference's tensors are.
          const acc_t y = static_cast<acc_t>(static_cast<scalar_t>(acc[l][b * width + p]));
          value[b] = activated ? static_cast<acc_t>(static_cast<scalar_t>(
                                     activate<StdMath>(in.call.activation, y)))
                               : y;
          for (const Skip& skip : schedule.skips_from[l]) {
            acc[skip.target][b * layers[skip.target].outputs + skip.positions[p]] += y;
          }
        }
        push(layers[l + 1], p, value.data(), n, acc[l + 1].data());
      }
    }
    // The dimensions of step t: their outputs are final now.
    const std::vector<acc_t>& out = acc[L - 1];
    const int64_t out_width = layers[L - 1].outputs;
    for (int64_t i = schedule.steps[t - 1]; i < schedule.steps[t]; ++i) {
      const int64_t d = schedule.dim_order[i];
      for (int64_t b = 0; b < n; ++b) {
        const acc_t e = static_cast<acc_t>(in.noise[(s0 + b) * dims + d]);
        const acc_t* o = out.data() + b * out_width + per_dim * i;
        const auto [v, term] = sample_dimension<StdMath, RoundThrough<scalar_t>>(
            in.call.rule, o, per_dim, e, in.rule_params);
        log_term[b] -= term;
        const scalar_t stored = static_cast<scalar_t>(v);
        values[(s0 + b) * dims + d] = stored;
        value[b] = static_cast<acc_t>(stored);
      }
      push(layers[0], i, value.data(), n, acc[0].data());
    }
  }
  const int64_t out_width = layers[L - 1].outputs;
  for (int64_t b = 0; b < n; ++b) {
    log_terms[s0 + b] = static_cast<acc_t>(log_term[b]);
    for (int64_t p = 0; p < out_width; ++p) {
      outputs[(s0 + b) * out_width + schedule.layer_orders[L - 1][p]] =
          static_cast<scalar_t>(acc[L - 1][b * out_width + p]);
    }
  }
}

// The packed layers of these arguments, kept between calls (per thread, for the last
// kPackedModels models): packing transposes every weight, about half a call's time at batch
// 1, and a sampler is usually called again with the same weights. An entry is reused only
// for tensors with the same data pointers, shapes, strides, dtypes and version counters (the
// callers detach, so the tensor objects are new on every call; a detached tensor shares its
// parameter's memory and version counter). The entry holds its tensors, so their memory
// cannot be another tensor's while it is kept. An in-place edit, a new tensor or a new plan
// (every mask change makes one) packs again. Writes through `.data` bump no version counter
// and are not seen; inference tensors (no version counter) are packed on every call.
constexpr size_t kPackedModels = 4;

template <typename scalar_t, typename acc_t>
const std::vector<PackedLayer<acc_t>>& packed_layers(
    at::TensorList weights, const c10::List<std::optional<at::Tensor>>& biases,
    at::TensorList masks, at::TensorList unit_orders, at::TensorList push_ranges) {
  struct Entry {
    std::vector<at::Tensor> tensors;
    std::vector<int64_t> versions;  // when packed (the held tensors' counters move on)
    std::vector<PackedLayer<acc_t>> layers;
  };
  thread_local std::vector<Entry> cache;  // most recent first
  thread_local Entry uncached;
  const int64_t L = weights.size();
  std::vector<at::Tensor> tensors(weights.begin(), weights.end());
  tensors.insert(tensors.end(), masks.begin(), masks.end());
  tensors.insert(tensors.end(), unit_orders.begin(), unit_orders.end());
  tensors.insert(tensors.end(), push_ranges.begin(), push_ranges.end());
  for (int64_t l = 0; l < L; ++l) tensors.push_back(biases.get(l).value_or(at::Tensor()));
  const bool cacheable = std::none_of(tensors.begin(), tensors.end(), [](const at::Tensor& t) {
    return t.defined() && t.is_inference();
  });
  std::vector<int64_t> versions;
  for (const at::Tensor& t : tensors) {
    versions.push_back(t.defined() && cacheable ? static_cast<int64_t>(t._version()) : -1);
  }
  const auto same = [&](const Entry& e) {
    if (e.tensors.size() != tensors.size() || e.versions != versions) return false;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const at::Tensor &a = e.tensors[i], &b = tensors[i];
      if (a.defined() != b.defined() ||
          (b.defined() && (a.const_data_ptr() != b.const_data_ptr() || a.sizes() != b.sizes() ||
                           a.strides() != b.strides() || a.scalar_type() != b.scalar_type()))) {
        return false;
      }
    }
    return true;
  };
  if (cacheable) {
    for (size_t i = 0; i < cache.size(); ++i) {
      if (same(cache[i])) {
        std::rotate(cache.begin(), cache.begin() + i, cache.begin() + i + 1);
        return cache.front().layers;
      }
    }
  }
  std::vector<PackedLayer<acc_t>> layers;
  for (int64_t l = 0; l < L; ++l) {
    layers.push_back(pack_layer<scalar_t, acc_t>(weights[l], masks[l], biases.get(l),
                                                  unit_orders[l], unit_orders[l + 1], push_ranges[l]));
  }
  if (!cacheable) {
    uncached.layers = std::move(layers);
    return uncached.layers;
  }
  if (cache.size() == kPackedModels) cache.pop_back();
  cache.insert(cache.begin(), Entry{std::move(tensors), std::move(versions), std::move(layers)});
  return cache.front().layers;
}

// Samples per thread block: enough to reuse each weight row from cache, few enough that
// every thread gets a block.
int64_t block_samples(int64_t samples) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  return std::clamp<int64_t>((samples + threads - 1) / threads, 1, 32);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> made_sample_cpu(
    const at::Tensor& noise_in, at::TensorList weights, const c10::List<std::optional<at::Tensor>>& biases,
    at::TensorList masks, at::TensorList unit_orders, at::TensorList push_ranges,
    at::TensorList finalize_offsets, const at::Tensor& step_offsets, std::string_view rule_name,
    at::ArrayRef<double> rule_params, std::string_view activation, const c10::List<bool>& activated,
    at::IntArrayRef skips, const c10::List<std::optional<at::Tensor>>& context_biases) {
  const SampleCall call = check_made_sample(noise_in, weights, biases, masks, unit_orders,
                                            push_ranges, finalize_offsets, step_offsets, rule_name,
                                            rule_params, activation, activated, skips,
                                            context_biases);
  check_plan_values(noise_in.size(1), weights, unit_orders, push_ranges, finalize_offsets,
                    step_offsets);
  const at::Tensor noise = noise_in.contiguous();
  const int64_t samples = noise.size(0), dims = noise.size(1), L = weights.size();
  const int64_t out_width = weights[L - 1].size(0);
  const auto opts = noise.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor values = at::empty({samples, dims}, opts);
  at::Tensor outputs = at::empty({samples, out_width}, opts);
  at::Tensor log_terms = at::empty(
      {samples}, opts.dtype(noise.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
  if (samples == 0) return {values, log_terms, outputs};

  Schedule schedule;
  for (const auto& offsets : finalize_offsets) schedule.finalize.push_back(to_vector(offsets));
  schedule.steps = to_vector(step_offsets);
  schedule.dim_order = to_vector(unit_orders[0]);
  for (const bool flag : activated) schedule.activated.push_back(flag);
  schedule.skips_from.resize(L);
  std::vector<at::Tensor> contexts;
  for (int64_t l = 0; l < L; ++l) {
    schedule.layer_orders.push_back(to_vector(unit_orders[l + 1]));
    const std::optional<at::Tensor> c = context_biases.get(l);
    contexts.push_back(c.has_value() ? c->contiguous() : at::Tensor());
  }
  for (int64_t l = 0; l < L; ++l) {
    if (skips[l] < 0) continue;
    // The position of each unit in layer l (its orders are permutations: checked above).
    std::vector<int64_t> position_of(weights[l].size(0));
    const std::vector<int64_t>& order = schedule.layer_orders[l];
    for (int64_t p = 0; p < static_cast<int64_t>(order.size()); ++p) position_of[order[p]] = p;
    Skip skip{l, {}};
    for (const int64_t unit : schedule.layer_orders[skips[l]]) {
      skip.positions.push_back(position_of[unit]);
    }
    schedule.skips_from[skips[l]].push_back(std::move(skip));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, noise.scalar_type(), "made_sample", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const std::vector<PackedLayer<acc_t>>& layers =
        packed_layers<scalar_t, acc_t>(weights, biases, masks, unit_orders, push_ranges);
    SampleInputs<scalar_t> inputs{call, rule_params.data(), noise.const_data_ptr<scalar_t>(), {}};
    for (const at::Tensor& c : contexts) {
      inputs.context_biases.push_back(c.defined() ? c.const_data_ptr<scalar_t>() : nullptr);
    }
    scalar_t* values_data = values.mutable_data_ptr<scalar_t>();
    scalar_t* outputs_data = outputs.mutable_data_ptr<scalar_t>();
    acc_t* log_data = log_terms.mutable_data_ptr<acc_t>();
    const int64_t block = block_samples(samples);
    at::parallel_for(0, (samples + block - 1) / block, 1, [&](int64_t begin, int64_t end) {
      for (int64_t blk = begin; blk < end; ++blk) {
        sample_block<scalar_t, acc_t>(layers, schedule, inputs, blk * block,
                                      std::min(samples, (blk + 1) * block), values_data,
                                      log_data, outputs_data);
      }
    });
  });
  return {values, log_terms, outputs};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastflow, CPU, m) { m.impl("made_sample", &made_sample_cpu); }

}  // namespace fastflow
