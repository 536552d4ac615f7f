// Masked linear on the CPU (math: ../masked_linear.h). Every matrix product is the CPU
// BLAS's (at::mm: MKL or oneDNN, as torch was built), which is tuned for each CPU; the speed
// comes from the products it is not asked to do.
//
// Degree form: in degree order the mask is a staircase (sorted output r sees the first
// row_prefix[r] sorted inputs). The staircase is cut into a few blocks and each block is one
// BLAS call on its non-zero part only:
//
//   forward and grad_weight, by row blocks [r0, r1): the block sees the first
//     row_prefix[r1 − 1] sorted inputs (the widest of its rows, the last);
//   grad_x, by column blocks [c0, c1): the block is seen by the sorted outputs from
//     first_row(c0) = the first r with row_prefix[r] > c0.
//
// The weight is copied once per call into degree order with the mask applied (W⊙M, zeros
// past each row's prefix, so the zeros inside a block multiply as zeros); x and dY are
// gathered into degree order and the results scattered back (skipped when an order is the
// identity, as for MADE's input and output layers). With 4 blocks the products cover 5/8 of
// the dense area (the staircase itself is 1/2).
//
// Matrix form (any mask): the reference's products, W⊙M written once per call.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>
#include <c10/util/accumulate.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <memory>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "../masked_linear.h"
#include "vector_math.h"

namespace fastflow {
namespace {

// Rows per parallel task: about 64K elements each, so small layers run on one thread.
int64_t rows_per_task(int64_t cols) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(cols, 1)); }

// Blocks per staircase side: 4 (5/8 of the dense area) once a side has 512 units; fewer
// for narrower layers, where each BLAS call's fixed cost outweighs the area it skips.
int64_t block_count(int64_t units) { return std::clamp<int64_t>(units / 128, 1, 4); }

at::Tensor inverse_permutation(const at::Tensor& order) {
  at::Tensor inverse = at::empty_like(order);
  const int64_t* o = order.const_data_ptr<int64_t>();
  int64_t* inv = inverse.mutable_data_ptr<int64_t>();
  for (int64_t i = 0; i < order.numel(); ++i) inv[o[i]] = i;
  return inverse;
}

bool is_identity(const at::Tensor& order) {
  const int64_t* p = order.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < order.numel(); ++i) {
    if (p[i] != i) return false;
  }
  return true;
}

std::vector<int32_t> as_int32(const at::Tensor& index) {
  const int64_t* p = index.const_data_ptr<int64_t>();
  return std::vector<int32_t>(p, p + index.numel());
}

// The staircase of one call: the degree plan, and its row and column blocks.
struct Staircase {
  struct RowBlock { int64_t r0, r1, cols; };           // rows [r0, r1) see sorted inputs < cols
  struct ColumnBlock { int64_t c0, c1, first_row; };  // columns [c0, c1) are seen from first_row

  DegreePlan plan;
  bool in_identity, out_identity;
  // The orders and their inverses as int32, the index type of the row loops.
  std::vector<int32_t> in_order32, out_order32, in_position32, out_position32;
  std::vector<RowBlock> row_blocks;
  std::vector<ColumnBlock> column_blocks;

  Staircase(const at::Tensor& in_degrees, const at::Tensor& out_degrees)
      : plan(degree_plan(in_degrees, out_degrees)),
        in_identity(is_identity(plan.in_order)),
        out_identity(is_identity(plan.out_order)),
        in_order32(as_int32(plan.in_order)),
        out_order32(as_int32(plan.out_order)),
        in_position32(as_int32(inverse_permutation(plan.in_order))),
        out_position32(as_int32(inverse_permutation(plan.out_order))) {
    const int64_t out_features = out_degrees.numel(), in_features = in_degrees.numel();
    const int64_t* prefix = plan.row_prefix.const_data_ptr<int64_t>();
    const int64_t rows = (out_features + block_count(out_features) - 1) / block_count(out_features);
    for (int64_t r0 = 0; r0 < out_features; r0 += rows) {
      const int64_t r1 = std::min(out_features, r0 + rows);
      row_blocks.push_back({r0, r1, prefix[r1 - 1]});
    }
    const int64_t cols = (in_features + block_count(in_features) - 1) / block_count(in_features);
    for (int64_t c0 = 0; c0 < in_features; c0 += cols) {
      const int64_t first = std::upper_bound(prefix, prefix + out_features, c0) - prefix;
      column_blocks.push_back({c0, std::min(in_features, c0 + cols), first});
    }
  }
  const int64_t* row_prefix() const { return plan.row_prefix.const_data_ptr<int64_t>(); }
};

// dst[b, c] = src[b, index[c]] (+ bias[c]) for rows [begin, end).
template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void gather_columns_rows_body(const scalar_t* src, int64_t src_row,
                                                     const int32_t* index, const scalar_t* bias,
                                                     int64_t cols, int64_t begin, int64_t end,
                                                     scalar_t* dst) {
  for (int64_t b = begin; b < end; ++b) {
    const scalar_t* in = src + b * src_row;
    scalar_t* out = dst + b * cols;
    if (bias != nullptr) {
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) out[c] = in[index[c]] + bias[c];
    } else {
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) out[c] = in[index[c]];
    }
  }
}
FASTFLOW_CPU_DISPATCH(gather_columns_rows)

// Temporaries that outlive the call, one buffer per use and thread, grown as needed and
// never shrunk. They are megabytes at MADE's sizes: a fresh allocation that large is mapped
// and page-faulted in by the OS on every call, which cost about a quarter of the forward's
// time at batch 256. Never returned to the caller.
enum class Scratch { kX, kWeight, kY, kGradY, kGradX, kGradWeight, kCount };

at::Tensor scratch(Scratch use, at::IntArrayRef sizes, const at::TensorOptions& options) {
  thread_local std::array<at::Tensor, static_cast<size_t>(Scratch::kCount)> buffers;
  at::Tensor& buffer = buffers[static_cast<size_t>(use)];
  const int64_t bytes = c10::multiply_integers(sizes) * options.dtype().itemsize();
  if (!buffer.defined() || buffer.numel() < bytes) {
    buffer = at::empty({std::max<int64_t>(bytes, 64)}, at::TensorOptions(at::kByte));
  }
  return buffer.narrow(0, 0, bytes).view(options.dtype().toScalarType()).view(sizes);
}

// out[:, c] = v[:, index[c]] (+ bias[c]); out is contiguous.
at::Tensor gather_columns(at::Tensor out, const at::Tensor& v_in, const std::vector<int32_t>& index,
                          const at::Tensor& bias_in) {
  const int64_t cols = static_cast<int64_t>(index.size());
  const at::Tensor v = rows_contiguous(v_in);
  const at::Tensor bias = bias_in.defined() ? bias_in.contiguous() : bias_in;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "gather_columns", [&] {
    const scalar_t* src = v.const_data_ptr<scalar_t>();
    const scalar_t* bias_data = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, v.size(0), rows_per_task(cols), [&](int64_t begin, int64_t end) {
      gather_columns_rows(src, v.stride(0), index.data(), bias_data, cols, begin, end, dst);
    });
  });
  return out;
}

at::Tensor new_matrix(int64_t rows, int64_t cols, const at::Tensor& like) {
  return at::empty({rows, cols}, like.options().memory_format(at::MemoryFormat::Contiguous));
}

// sorted[r, c] = W[out_order[r], in_order[c]] for c < row_prefix[r], else 0: W⊙M in degree
// order, rows [begin, end). in_order is nullptr for the identity (a plain copy).
template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void sort_weight_rows_body(const scalar_t* weight, const int32_t* in_order,
                                                  const int32_t* out_order,
                                                  const int64_t* row_prefix, int64_t in_features,
                                                  int64_t begin, int64_t end, scalar_t* sorted) {
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* src = weight + out_order[r] * in_features;
    scalar_t* out = sorted + r * in_features;
    const int64_t seen = row_prefix[r];
    if (in_order == nullptr) {
      std::copy(src, src + seen, out);
    } else {
      for (int64_t c = 0; c < seen; ++c) out[c] = src[in_order[c]];
    }
    std::fill(out + seen, out + in_features, scalar_t(0));
  }
}
FASTFLOW_CPU_DISPATCH(sort_weight_rows)

// grad_weight[out_order[r], in_order[c]] = g[r, c] for c < row_prefix[r], every other entry
// of the row 0 (the mask), rows [begin, end): the row is zeroed, then the seen entries
// scattered (within one row, in cache), which reads only what the products wrote.
template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void unsort_grad_rows_body(const scalar_t* g, const int32_t* in_order,
                                                  const int32_t* out_order,
                                                  const int64_t* row_prefix, int64_t in_features,
                                                  int64_t begin, int64_t end,
                                                  scalar_t* grad_weight) {
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* src = g + r * in_features;
    scalar_t* out = grad_weight + out_order[r] * in_features;
    const int64_t seen = row_prefix[r];
    if (in_order == nullptr) {
      std::copy(src, src + seen, out);
      std::fill(out + seen, out + in_features, scalar_t(0));
    } else {
      std::fill(out, out + in_features, scalar_t(0));
      for (int64_t c = 0; c < seen; ++c) out[in_order[c]] = src[c];
    }
  }
}
FASTFLOW_CPU_DISPATCH(unsort_grad_rows)

// out's rows [begin, end) from in's by rows(src, dst, begin, end), in parallel, for in's
// float type (out: in's shape, contiguous).
template <typename Rows>
at::Tensor map_rows(const at::Tensor& in, at::Tensor out, const Rows& rows) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "masked_linear_rows", [&] {
    const scalar_t* src = in.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, in.size(0), rows_per_task(in.size(1)), [&](int64_t begin, int64_t end) {
      rows(src, dst, begin, end);
    });
  });
  return out;
}

at::Tensor sorted_masked_weight(const at::Tensor& weight, const Staircase& s) {
  const int32_t* in_order = s.in_identity ? nullptr : s.in_order32.data();
  return map_rows(weight, scratch(Scratch::kWeight, weight.sizes(), weight.options()),
                  [&](const auto* w, auto* dst, int64_t begin, int64_t end) {
                    sort_weight_rows(w, in_order, s.out_order32.data(), s.row_prefix(),
                                     weight.size(1), begin, end, dst);
                  });
}

at::Tensor unsorted_grad_weight(const at::Tensor& g, const Staircase& s) {
  const int32_t* in_order = s.in_identity ? nullptr : s.in_order32.data();
  return map_rows(g, at::empty(g.sizes(), g.options()),
                  [&](const auto* src, auto* dst, int64_t begin, int64_t end) {
                    unsort_grad_rows(src, in_order, s.out_order32.data(), s.row_prefix(),
                                     g.size(1), begin, end, dst);
                  });
}

// v's columns in degree order: v[:, order] (v itself when the order is the identity).
at::Tensor sorted_columns(Scratch use, const at::Tensor& v, const std::vector<int32_t>& order,
                          bool identity) {
  if (identity) return rows_contiguous(v);
  return gather_columns(scratch(use, {v.size(0), v.size(1)}, v.options()), v, order, at::Tensor());
}

// out = a·b, or zeros when the product is empty (the BLAS is not called for it).
void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) {
  if (a.size(1) == 0) {
    out.zero_();
  } else {
    at::mm_out(out, a, b);
  }
}

at::Tensor degree_forward(const at::Tensor& x_in, const at::Tensor& weight_in, const Staircase& s,
                          const std::optional<at::Tensor>& bias) {
  const at::Tensor x = sorted_columns(Scratch::kX, x_in, s.in_order32, s.in_identity);
  const at::Tensor weight = sorted_masked_weight(weight_in.contiguous(), s);
  const int64_t batch = x.size(0), out_features = weight.size(0);
  at::Tensor y_sorted = s.out_identity ? new_matrix(batch, out_features, x)
                                       : scratch(Scratch::kY, {batch, out_features}, x.options());
  for (const auto& [r0, r1, cols] : s.row_blocks) {
    mm_into(y_sorted.narrow(1, r0, r1 - r0), x.narrow(1, 0, cols),
            weight.narrow(0, r0, r1 - r0).narrow(1, 0, cols).t());
  }
  if (!s.out_identity) {
    return gather_columns(new_matrix(batch, out_features, x), y_sorted, s.out_position32,
                          bias.has_value() ? *bias : at::Tensor());
  }
  return bias.has_value() ? y_sorted.add_(*bias) : y_sorted;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> degree_backward(
    const at::Tensor& grad_y_in, const at::Tensor& x_in, const at::Tensor& weight_in,
    const Staircase& s, bool input_grad) {
  const at::Tensor x = sorted_columns(Scratch::kX, x_in, s.in_order32, s.in_identity);
  const at::Tensor grad_y = sorted_columns(Scratch::kGradY, grad_y_in, s.out_order32, s.out_identity);
  const int64_t batch = x.size(0), out_features = weight_in.size(0), in_features = weight_in.size(1);
  at::Tensor grad_x = at::empty({0}, x.options());
  if (input_grad) {
    const at::Tensor weight = sorted_masked_weight(weight_in.contiguous(), s);
    at::Tensor grad_x_sorted = s.in_identity ? new_matrix(batch, in_features, x)
                                             : scratch(Scratch::kGradX, {batch, in_features}, x.options());
    for (const auto& [c0, c1, first_row] : s.column_blocks) {
      const int64_t seen_by = out_features - first_row;
      mm_into(grad_x_sorted.narrow(1, c0, c1 - c0), grad_y.narrow(1, first_row, seen_by),
              weight.narrow(0, first_row, seen_by).narrow(1, c0, c1 - c0));
    }
    grad_x = s.in_identity ? grad_x_sorted
                           : gather_columns(new_matrix(batch, in_features, x), grad_x_sorted,
                                            s.in_position32, at::Tensor());
  }
  // Each row block's seen part only; unsorted_grad_weight reads no entry past a row's prefix.
  at::Tensor grad_sorted = scratch(Scratch::kGradWeight, weight_in.sizes(), weight_in.options());
  for (const auto& [r0, r1, cols] : s.row_blocks) {
    mm_into(grad_sorted.narrow(0, r0, r1 - r0).narrow(1, 0, cols),
            grad_y.narrow(1, r0, r1 - r0).t(), x.narrow(1, 0, cols));
  }
  return {grad_x, unsorted_grad_weight(grad_sorted, s), grad_y_in.sum(0)};
}

// The staircase of these degrees, built once and reused: a MADE calls every layer with the
// same degrees, and building one (two sorts, the blocks) costs about 25 us, a tenth of a
// 512-wide layer's forward at batch 16. Looked up by the degrees' values (a few KB
// compared), so an edited or reallocated degrees tensor is never mistaken for another.
std::shared_ptr<const Staircase> staircase(const at::Tensor& in_degrees_in,
                                           const at::Tensor& out_degrees_in) {
  const at::Tensor in_degrees = in_degrees_in.contiguous(), out_degrees = out_degrees_in.contiguous();
  const int64_t in_n = in_degrees.numel(), out_n = out_degrees.numel();
  const int64_t* in_d = in_degrees.const_data_ptr<int64_t>();
  const int64_t* out_d = out_degrees.const_data_ptr<int64_t>();
  struct Entry {
    std::vector<int64_t> in_degrees, out_degrees;
    std::shared_ptr<const Staircase> staircase;
  };
  constexpr size_t kEntries = 32;  // a few MAFs' layers
  thread_local std::vector<Entry> cache;
  for (size_t i = 0; i < cache.size(); ++i) {
    const Entry& e = cache[i];
    if (static_cast<int64_t>(e.in_degrees.size()) == in_n &&
        static_cast<int64_t>(e.out_degrees.size()) == out_n &&
        std::equal(in_d, in_d + in_n, e.in_degrees.begin()) &&
        std::equal(out_d, out_d + out_n, e.out_degrees.begin())) {
      std::rotate(cache.begin(), cache.begin() + i, cache.begin() + i + 1);  // most recent first
      return cache.front().staircase;
    }
  }
  auto built = std::make_shared<const Staircase>(in_degrees, out_degrees);
  if (cache.size() == kEntries) cache.pop_back();
  cache.insert(cache.begin(), Entry{std::vector<int64_t>(in_d, in_d + in_n),
                                    std::vector<int64_t>(out_d, out_d + out_n), built});
  return built;
}

at::Tensor masked_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
                             const std::optional<at::Tensor>& bias) {
  check_masked_linear(x, weight, mask, bias);
  const at::Tensor masked = at::mul(weight, mask);
  return bias.has_value() ? at::addmm(*bias, x, masked.t()) : at::mm(x, masked.t());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_linear_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& mask, bool input_grad) {
  check_masked_linear(x, weight, mask, std::nullopt);
  check_grad_y("masked_linear_backward", grad_y, x, weight);
  at::Tensor grad_x = input_grad ? at::mm(grad_y, at::mul(weight, mask)) : at::empty({0}, x.options());
  return {grad_x, at::mm(grad_y.t(), x).mul_(mask), grad_y.sum(0)};
}

at::Tensor degree_masked_linear_cpu(const at::Tensor& x, const at::Tensor& weight,
                                    const at::Tensor& in_degrees, const at::Tensor& out_degrees,
                                    const std::optional<at::Tensor>& bias) {
  check_degree_masked_linear(x, weight, in_degrees, out_degrees, bias);
  return degree_forward(x, weight, *staircase(in_degrees, out_degrees), bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> degree_masked_linear_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& in_degrees, const at::Tensor& out_degrees, bool input_grad) {
  check_degree_masked_linear(x, weight, in_degrees, out_degrees, std::nullopt);
  check_grad_y("degree_masked_linear_backward", grad_y, x, weight);
  return degree_backward(grad_y, x, weight, *staircase(in_degrees, out_degrees), input_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastflow, CPU, m) {
  m.impl("masked_linear", &masked_linear_cpu);
  m.impl("masked_linear_backward", &masked_linear_backward_cpu);
  m.impl("degree_masked_linear", &degree_masked_linear_cpu);
  m.impl("degree_masked_linear_backward", &degree_masked_linear_backward_cpu);
}

}  // namespace fastflow
