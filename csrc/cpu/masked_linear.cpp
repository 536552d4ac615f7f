// Masked linear on the CPU (math: ../masked_linear.h). float32 on AVX2+FMA runs the packed
// GEMM of packed_gemm.h (the problems below: the staircase skipped per panel and per tile).
// Other dtypes and CPUs run the products in the CPU BLAS (at::mm on views, as F.linear
// does), with this tiling around them:
//
//   * the output units are cut into row blocks; each block's weight rows are packed into a
//     block-sized scratch with the mask applied as they are copied, so W⊙M is never written
//     as a whole (the reference writes it on every call, then the BLAS packs it again);
//   * in degree order (degree_masked_linear) sorted row block [r0, r1) sees only the first
//     row_prefix[r1 − 1] sorted inputs: the all-zero rest of the staircase is neither packed
//     nor multiplied, about half the dense FLOPs for MADE's masks.
//
// The backward packs each block once for both products: grad_x (in sorted order) += dY_block·Wb
// and dW_block = dY_blockᵀ·X_prefix, which is masked and scattered into grad_weight as it is
// unpacked (every entry written, zeros included).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "../masked_linear.h"
#include "packed_gemm.h"
#include "vector_math.h"

namespace fastflow {
namespace {

// The weight and its mask, in sorted coordinates: sorted row r is weight row out_order[r],
// sorted column c is weight column in_order[c], and weight column k sits at sorted position
// in_position[k] (all identity when there is no plan: the matrix-mask form).
template <typename scalar_t>
struct MaskedWeight {
  const scalar_t* weight;      // [out_features, in_features] contiguous
  const scalar_t* mask;        // matrix form, else nullptr
  const int64_t* in_order;     // degree form, else nullptr (the four together)
  const int64_t* in_position;
  const int64_t* out_order;
  const int64_t* row_prefix;
  int64_t in_features;

  int64_t row(int64_t r) const { return out_order ? out_order[r] : r; }
  // How many sorted columns sorted row r may see.
  int64_t prefix(int64_t r) const { return row_prefix ? row_prefix[r] : in_features; }
};

// The loops below are gathers (scatters are turned into gathers through the inverse
// permutation), compiled for AVX2 where the CPU has it: its vector gathers make them a
// small share of the time next to the matrix products.

// dst[i, c] = (W⊙M)[row(r0 + i), in_order[c]] for c < cols (row stride cols), rows
// [begin, end) of the block starting at r0.
template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void pack_rows_body(MaskedWeight<scalar_t> w, int64_t r0, int64_t begin,
                                           int64_t end, int64_t cols, scalar_t* dst) {
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* src = w.weight + w.row(r) * w.in_features;
    scalar_t* out = dst + (r - r0) * cols;
    if (w.mask != nullptr) {
      const scalar_t* m = w.mask + r * w.in_features;
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) out[c] = src[c] * m[c];
    } else {
      const int64_t seen = std::min(w.prefix(r), cols);
      const int64_t* order = w.in_order;
#pragma omp simd
      for (int64_t c = 0; c < seen; ++c) out[c] = src[order[c]];
      std::fill(out + seen, out + cols, scalar_t(0));
    }
  }
}
FASTFLOW_CPU_DISPATCH(pack_rows)

// grad_weight[row(r), k] = g[r − r0, in_position[k]] where the mask is 1, else 0, for every
// column k (g's row stride cols; sorted columns ≥ cols are masked out in the degree form).
template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void unpack_grad_rows_body(MaskedWeight<scalar_t> w, int64_t r0,
                                                  int64_t begin, int64_t end, int64_t cols,
                                                  const scalar_t* g, scalar_t* grad_weight) {
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* src = g + (r - r0) * cols;
    scalar_t* out = grad_weight + w.row(r) * w.in_features;
    if (w.mask != nullptr) {
      const scalar_t* m = w.mask + r * w.in_features;
#pragma omp simd
      for (int64_t k = 0; k < w.in_features; ++k) out[k] = src[k] * m[k];
    } else if (w.prefix(r) == 0) {
      std::fill(out, out + w.in_features, scalar_t(0));
    } else {
      const int64_t seen = w.prefix(r);
      const int64_t* position = w.in_position;
#pragma omp simd
      for (int64_t k = 0; k < w.in_features; ++k) {
        const int64_t c = position[k];
        const scalar_t v = src[c < seen ? c : 0];  // never reads past the block's width
        out[k] = c < seen ? v : scalar_t(0);
      }
    }
  }
}
FASTFLOW_CPU_DISPATCH(unpack_grad_rows)

// dst[b, c] = (src[b, index[c]] + bias[index[c]] if bias), rows [begin, end).
template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void gather_columns_rows_body(const scalar_t* src, int64_t src_row,
                                                const int64_t* index, const scalar_t* bias,
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

// Rows per parallel task: about 64K elements each, so small layers run on one thread.
int64_t rows_per_task(int64_t cols) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(cols, 1)); }

template <typename scalar_t>
void pack(const MaskedWeight<scalar_t>& w, int64_t r0, int64_t r1, int64_t cols, scalar_t* dst) {
  at::parallel_for(r0, r1, rows_per_task(cols), [&](int64_t begin, int64_t end) {
    pack_rows(w, r0, begin, end, cols, dst);
  });
}

// Row blocks of about a quarter of the outputs: fine enough that the staircase's skipped
// area is 3/8 of the dense product (the ideal is 1/2), coarse enough for efficient BLAS calls.
int64_t block_rows(int64_t out_features) {
  const int64_t quarter = (out_features + 7) / 8;
  return std::max<int64_t>(64, (quarter + 15) / 16 * 16);
}

template <typename scalar_t, typename F>
void for_each_block(const MaskedWeight<scalar_t>& w, int64_t out_features, F&& f) {
  const int64_t rows = block_rows(out_features);
  for (int64_t r0 = 0; r0 < out_features; r0 += rows) {
    const int64_t r1 = std::min(out_features, r0 + rows);
    f(r0, r1, w.prefix(r1 - 1));  // prefix is non-decreasing: the block's widest row is last
  }
}

// in_position: the inverse of the plan's in_order (undefined without a plan).
template <typename scalar_t>
MaskedWeight<scalar_t> masked_weight(const at::Tensor& weight, const at::Tensor* mask,
                                     const DegreePlan* plan, const at::Tensor& in_position) {
  return {weight.const_data_ptr<scalar_t>(),
          mask ? mask->const_data_ptr<scalar_t>() : nullptr,
          plan ? plan->in_order.const_data_ptr<int64_t>() : nullptr,
          plan ? in_position.const_data_ptr<int64_t>() : nullptr,
          plan ? plan->out_order.const_data_ptr<int64_t>() : nullptr,
          plan ? plan->row_prefix.const_data_ptr<int64_t>() : nullptr, weight.size(1)};
}

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

// out[:, c] = v[:, index[c]] (+ bias[c]), contiguous.
at::Tensor gather_columns(const at::Tensor& v_in, const at::Tensor& index,
                          const at::Tensor& bias_in) {
  const at::Tensor v = rows_contiguous(v_in);
  const at::Tensor bias = bias_in.defined() ? bias_in.contiguous() : bias_in;
  at::Tensor out = at::empty({v.size(0), index.numel()},
                             v.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "gather_columns", [&] {
    const scalar_t* src = v.const_data_ptr<scalar_t>();
    const scalar_t* bias_data = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    const int64_t* idx = index.const_data_ptr<int64_t>();
    at::parallel_for(0, v.size(0), rows_per_task(index.numel()), [&](int64_t begin, int64_t end) {
      gather_columns_rows(src, v.stride(0), idx, bias_data, index.numel(), begin, end, dst);
    });
  });
  return out;
}

// v[:, order] (v itself when the order is the identity: MADE's input and output units are
// already in degree order).
at::Tensor sorted_columns(const at::Tensor& v, const at::Tensor& order) {
  return is_identity(order) ? rows_contiguous(v) : gather_columns(v, order, at::Tensor());
}

// The inverse of sorted_columns: out[:, order[c]] = v[:, c], plus the bias.
at::Tensor unsorted_columns(const at::Tensor& v, const at::Tensor& order,
                            const std::optional<at::Tensor>& bias) {
  if (is_identity(order)) return bias.has_value() ? v.add_(*bias) : v;
  return gather_columns(v, inverse_permutation(order),
                        bias.has_value() ? *bias : at::Tensor());
}

// ---- float32 on AVX2+FMA: the packed GEMM of packed_gemm.h, which gathers, permutes and
// masks while it packs and skips the staircase's zero area tile by tile. ----

bool packed_gemm_available(const at::Tensor& x) {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2 && x.scalar_type() == at::kFloat;
}

// W⊙M in sorted coordinates for the packers. An order is nullptr when it is the identity
// (the matrix form, and MADE's input and output units), prefix nullptr in the matrix form.
struct SortedWeight {
  const float* weight;  // [out_features, in_features] contiguous
  const float* mask;    // matrix form, else nullptr
  const int64_t* in_order;
  const int64_t* out_order;
  const int64_t* prefix;
  int64_t in_features, out_features;

  FASTFLOW_ALWAYS_INLINE int64_t column(int64_t c) const { return in_order ? in_order[c] : c; }
  FASTFLOW_ALWAYS_INLINE int64_t row(int64_t r) const { return out_order ? out_order[r] : r; }
  FASTFLOW_ALWAYS_INLINE int64_t seen(int64_t r) const { return prefix ? prefix[r] : in_features; }
  // (W⊙M)[sorted r, sorted c] for c < seen(r).
  FASTFLOW_ALWAYS_INLINE float at(int64_t r, int64_t c) const {
    const int64_t i = row(r) * in_features + column(c);
    return mask ? weight[i] * mask[i] : weight[i];
  }
};

// dst[k·MR + i] = src[(m0 + i)·ld + index(k0 + k)] for i < rows, zero below.
FASTFLOW_ALWAYS_INLINE void pack_rows_gathered(const float* src, int64_t ld, const int64_t* index,
                                               int64_t m0, int64_t rows, int64_t k0, int64_t kc,
                                               float* dst) {
  using cpu::gemm::MR;
  for (int i = 0; i < MR; ++i) {
    if (i >= rows) {
      for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = 0.0f;
      continue;
    }
    const float* row = src + (m0 + i) * ld;
    if (index) {
      for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = row[index[k0 + k]];
    } else {
      for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = row[k0 + k];
    }
  }
}

// y_sorted = x_sorted·(W⊙M)_sortedᵀ: batch × out × in; sorted output r needs the first
// seen(r) sorted inputs.
struct ForwardGemm {
  int64_t M, N, K;
  SortedWeight w;
  const float* x;
  int64_t ldx;

  FASTFLOW_ALWAYS_INLINE void k_range(int64_t n0, int64_t* begin, int64_t* end) const {
    *begin = 0;
    *end = w.seen(std::min(n0 + cpu::gemm::NR, N) - 1);  // the panel's last row sees most
  }
  FASTFLOW_ALWAYS_INLINE int64_t n_end(int64_t, int64_t) const { return N; }
  FASTFLOW_ALWAYS_INLINE void pack_a(int64_t m0, int64_t rows, int64_t k0, int64_t kc,
                                     float* dst) const {
    pack_rows_gathered(x, ldx, w.in_order, m0, rows, k0, kc, dst);
  }
  FASTFLOW_ALWAYS_INLINE void pack_b(int64_t n0, int64_t cols, int64_t k0, int64_t k1,
                                     float* dst) const {
    using cpu::gemm::NR;
    for (int t = 0; t < NR; ++t) {
      const int64_t seen = t < cols ? std::min(k1, w.seen(n0 + t)) : k0;
      for (int64_t k = k0; k < seen; ++k) dst[(k - k0) * NR + t] = w.at(n0 + t, k);
      for (int64_t k = std::max(k0, seen); k < k1; ++k) dst[(k - k0) * NR + t] = 0.0f;
    }
  }
};

// grad_x_sorted = dY_sorted·(W⊙M)_sorted: batch × in × out; sorted input c gets
// contributions from the sorted outputs that see it, a suffix of them. B is packed a
// weight row at a time: a panel's 16 sorted columns are scattered over each weight row.
struct GradInputGemm {
  static constexpr bool kPacksBByRows = true;
  int64_t M, N, K;
  SortedWeight w;
  const float* grad_y;  // columns in sorted order
  int64_t ldg;

  FASTFLOW_ALWAYS_INLINE void k_range(int64_t n0, int64_t* begin, int64_t* end) const {
    *begin = w.prefix ? std::upper_bound(w.prefix, w.prefix + K, n0) - w.prefix : 0;
    *end = K;
  }
  FASTFLOW_ALWAYS_INLINE int64_t n_end(int64_t, int64_t) const { return N; }
  FASTFLOW_ALWAYS_INLINE void pack_a(int64_t m0, int64_t rows, int64_t k0, int64_t kc,
                                     float* dst) const {
    pack_rows_gathered(grad_y, ldg, nullptr, m0, rows, k0, kc, dst);
  }
  FASTFLOW_ALWAYS_INLINE void pack_b_rows(const cpu::gemm::Plan& plan, int64_t r0, int64_t r1,
                                          float* b) const {
    using cpu::gemm::NR;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t seen = std::min(N, w.seen(r));
      // Sorted row r lies in the K range of exactly the panels below seen(r).
      for (int64_t n0 = 0; n0 < seen; n0 += NR) {
        const int64_t j = n0 / NR, cols = std::min<int64_t>(NR, seen - n0);
        float* out = b + plan.b_offset[j] + (r - plan.k_begin[j]) * NR;
        for (int64_t t = 0; t < cols; ++t) out[t] = w.at(r, n0 + t);
        for (int64_t t = cols; t < NR; ++t) out[t] = 0.0f;
      }
    }
  }
};

// grad_weight_sorted = dY_sortedᵀ·x_sorted: out × in × batch; sorted row r is read only
// below seen(r) (the unpacking masks the rest).
struct GradWeightGemm {
  int64_t M, N, K;
  SortedWeight w;
  const float* grad_y;  // columns in sorted order
  int64_t ldg;
  const float* x;  // columns in sorted order
  int64_t ldx;

  FASTFLOW_ALWAYS_INLINE void k_range(int64_t, int64_t* begin, int64_t* end) const {
    *begin = 0;
    *end = K;
  }
  FASTFLOW_ALWAYS_INLINE int64_t n_end(int64_t, int64_t m1) const { return w.seen(m1 - 1); }
  FASTFLOW_ALWAYS_INLINE void pack_a(int64_t m0, int64_t rows, int64_t k0, int64_t kc,
                                     float* dst) const {
    using cpu::gemm::MR;
    for (int64_t k = 0; k < kc; ++k) {
      const float* row = grad_y + (k0 + k) * ldg + m0;
      for (int i = 0; i < MR; ++i) dst[k * MR + i] = i < rows ? row[i] : 0.0f;
    }
  }
  FASTFLOW_ALWAYS_INLINE void pack_b(int64_t n0, int64_t cols, int64_t k0, int64_t k1,
                                     float* dst) const {
    using cpu::gemm::NR;
    for (int64_t b = k0; b < k1; ++b) {
      const float* row = x + b * ldx + n0;
      float* out = dst + (b - k0) * NR;
      for (int64_t t = 0; t < cols; ++t) out[t] = row[t];
      for (int64_t t = cols; t < NR; ++t) out[t] = 0.0f;
    }
  }
};

const int64_t* order_or_null(const at::Tensor& order) {
  return is_identity(order) ? nullptr : order.const_data_ptr<int64_t>();
}

SortedWeight sorted_weight(const at::Tensor& weight, const at::Tensor* mask,
                           const DegreePlan* plan) {
  return {weight.const_data_ptr<float>(),
          mask ? mask->const_data_ptr<float>() : nullptr,
          plan ? order_or_null(plan->in_order) : nullptr,
          plan ? order_or_null(plan->out_order) : nullptr,
          plan ? plan->row_prefix.const_data_ptr<int64_t>() : nullptr,
          weight.size(1), weight.size(0)};
}

at::Tensor packed_forward(const at::Tensor& x_in, const at::Tensor& weight, const at::Tensor* mask,
                          const DegreePlan* plan, const std::optional<at::Tensor>& bias) {
  const at::Tensor x = rows_contiguous(x_in);
  const SortedWeight w = sorted_weight(weight, mask, plan);
  const int64_t batch = x.size(0), out_features = weight.size(0);
  at::Tensor y = at::empty({batch, out_features}, x.options().memory_format(at::MemoryFormat::Contiguous));
  // Sorted outputs go straight to y when the order is the identity.
  at::Tensor y_sorted = w.out_order ? at::empty_like(y) : y;
  const ForwardGemm problem{batch, out_features, weight.size(1), w, x.const_data_ptr<float>(),
                            x.stride(0)};
  cpu::gemm::run(problem, y_sorted.mutable_data_ptr<float>(), out_features);
  if (w.out_order) return gather_columns(y_sorted, inverse_permutation(plan->out_order),
                                         bias.has_value() ? *bias : at::Tensor());
  return bias.has_value() ? y.add_(*bias) : y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> packed_backward(
    const at::Tensor& grad_y_in, const at::Tensor& x_in, const at::Tensor& weight,
    const at::Tensor* mask, const DegreePlan* plan, bool input_grad) {
  const SortedWeight w = sorted_weight(weight, mask, plan);
  // Both products read dY and x by sorted column: sorted once here, row by row, rather than
  // gathered down columns while packing.
  const at::Tensor x = w.in_order ? gather_columns(x_in, plan->in_order, at::Tensor())
                                  : rows_contiguous(x_in);
  const at::Tensor grad_y = w.out_order ? gather_columns(grad_y_in, plan->out_order, at::Tensor())
                                        : rows_contiguous(grad_y_in);
  const int64_t batch = x.size(0), out_features = weight.size(0), in_features = weight.size(1);
  at::Tensor grad_x = at::empty({input_grad ? batch : 0, in_features}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (input_grad) {
    at::Tensor grad_x_sorted = w.in_order ? at::empty_like(grad_x) : grad_x;
    const GradInputGemm problem{batch, in_features, out_features, w,
                                grad_y.const_data_ptr<float>(), grad_y.stride(0)};
    cpu::gemm::run(problem, grad_x_sorted.mutable_data_ptr<float>(), in_features);
    if (w.in_order) grad_x = gather_columns(grad_x_sorted, inverse_permutation(plan->in_order), at::Tensor());
  }
  // Sorted rows and columns, unpacked (unsorted and masked) into grad_weight row block by
  // row block.
  at::Tensor grad_sorted = at::empty(weight.sizes(), weight.options());
  const GradWeightGemm problem{out_features, in_features, batch, w,
                               grad_y.const_data_ptr<float>(), grad_y.stride(0),
                               x.const_data_ptr<float>(), x.stride(0)};
  cpu::gemm::run(problem, grad_sorted.mutable_data_ptr<float>(), in_features);
  at::Tensor grad_weight = at::empty(weight.sizes(), weight.options());
  const at::Tensor in_position = plan ? inverse_permutation(plan->in_order) : at::Tensor();
  const auto unpack = masked_weight<float>(weight, mask, plan, in_position);
  const float* g = grad_sorted.const_data_ptr<float>();
  float* grad_weight_data = grad_weight.mutable_data_ptr<float>();
  at::parallel_for(0, out_features, rows_per_task(in_features), [&](int64_t begin, int64_t end) {
    unpack_grad_rows(unpack, 0, begin, end, in_features, g, grad_weight_data);
  });
  return {input_grad ? grad_x : at::empty({0}, x.options()), grad_weight, grad_y_in.sum(0)};
}

// One of `mask` and `plan` is given.
at::Tensor masked_linear_forward(const at::Tensor& x_in, const at::Tensor& weight_in,
                                 const at::Tensor* mask, const DegreePlan* plan,
                                 const std::optional<at::Tensor>& bias) {
  const at::Tensor weight = weight_in.contiguous();
  if (packed_gemm_available(x_in)) return packed_forward(x_in, weight, mask, plan, bias);
  const at::Tensor x = plan ? sorted_columns(x_in, plan->in_order) : rows_contiguous(x_in);
  const int64_t out_features = weight.size(0);
  const at::Tensor in_position = plan ? inverse_permutation(plan->in_order) : at::Tensor();
  at::Tensor y_sorted = at::empty({x.size(0), out_features}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (x.size(0) > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "masked_linear", [&] {
      const auto w = masked_weight<scalar_t>(weight, mask, plan, in_position);
      at::Tensor scratch = at::empty({block_rows(out_features) * x.size(1)}, x.options());
      for_each_block(w, out_features, [&](int64_t r0, int64_t r1, int64_t cols) {
        at::Tensor y_block = y_sorted.narrow(1, r0, r1 - r0);
        if (cols == 0) {
          y_block.zero_();
          return;
        }
        pack(w, r0, r1, cols, scratch.mutable_data_ptr<scalar_t>());
        at::Tensor packed = scratch.narrow(0, 0, (r1 - r0) * cols).view({r1 - r0, cols});
        at::mm_out(y_block, x.narrow(1, 0, cols), packed.t());
      });
    });
  }
  if (plan) return unsorted_columns(y_sorted, plan->out_order, bias);
  return bias.has_value() ? y_sorted.add_(*bias) : y_sorted;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_linear_backward_impl(
    const at::Tensor& grad_y_in, const at::Tensor& x_in, const at::Tensor& weight_in,
    const at::Tensor* mask, const DegreePlan* plan, bool input_grad) {
  const at::Tensor weight = weight_in.contiguous();
  if (packed_gemm_available(x_in)) {
    return packed_backward(grad_y_in, x_in, weight, mask, plan, input_grad);
  }
  const at::Tensor x = plan ? sorted_columns(x_in, plan->in_order) : rows_contiguous(x_in);
  const at::Tensor grad_y =
      plan ? sorted_columns(grad_y_in, plan->out_order) : rows_contiguous(grad_y_in);
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const at::Tensor in_position = plan ? inverse_permutation(plan->in_order) : at::Tensor();
  at::Tensor grad_x_sorted = at::zeros({input_grad ? x.size(0) : 0, in_features}, x.options());
  at::Tensor grad_weight = at::empty(weight.sizes(), weight.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "masked_linear_backward", [&] {
    const auto w = masked_weight<scalar_t>(weight, mask, plan, in_position);
    const int64_t scratch_size = block_rows(out_features) * in_features;
    at::Tensor packed_scratch = at::empty({scratch_size}, x.options());
    at::Tensor grad_scratch = at::empty({scratch_size}, x.options());
    for_each_block(w, out_features, [&](int64_t r0, int64_t r1, int64_t cols) {
      const int64_t rows = r1 - r0;
      at::Tensor grad_block = grad_scratch.narrow(0, 0, rows * cols).view({rows, cols});
      if (cols > 0 && x.size(0) > 0) {
        pack(w, r0, r1, cols, packed_scratch.mutable_data_ptr<scalar_t>());
        at::Tensor packed = packed_scratch.narrow(0, 0, rows * cols).view({rows, cols});
        at::Tensor grad_y_block = grad_y.narrow(1, r0, rows);
        if (input_grad) grad_x_sorted.narrow(1, 0, cols).addmm_(grad_y_block, packed);
        at::mm_out(grad_block, grad_y_block.t(), x.narrow(1, 0, cols));
      } else {
        grad_block.zero_();
      }
      const scalar_t* g = grad_block.const_data_ptr<scalar_t>();
      scalar_t* grad_weight_data = grad_weight.mutable_data_ptr<scalar_t>();
      at::parallel_for(r0, r1, rows_per_task(in_features), [&](int64_t begin, int64_t end) {
        unpack_grad_rows(w, r0, begin, end, cols, g, grad_weight_data);
      });
    });
  });
  at::Tensor grad_x = !input_grad ? at::empty({0}, x.options())
                      : plan     ? unsorted_columns(grad_x_sorted, plan->in_order, std::nullopt)
                                 : grad_x_sorted;
  return {grad_x, grad_weight, grad_y_in.sum(0)};
}

at::Tensor masked_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
                             const std::optional<at::Tensor>& bias) {
  check_masked_linear(x, weight, mask, bias);
  const at::Tensor mask_contiguous = mask.contiguous();
  return masked_linear_forward(x, weight, &mask_contiguous, nullptr, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_linear_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& mask, bool input_grad) {
  check_masked_linear(x, weight, mask, std::nullopt);
  check_grad_y("masked_linear_backward", grad_y, x, weight);
  const at::Tensor mask_contiguous = mask.contiguous();
  return masked_linear_backward_impl(grad_y, x, weight, &mask_contiguous, nullptr, input_grad);
}

at::Tensor degree_masked_linear_cpu(const at::Tensor& x, const at::Tensor& weight,
                                    const at::Tensor& in_degrees, const at::Tensor& out_degrees,
                                    const std::optional<at::Tensor>& bias) {
  check_degree_masked_linear(x, weight, in_degrees, out_degrees, bias);
  const DegreePlan plan = degree_plan(in_degrees, out_degrees);
  return masked_linear_forward(x, weight, nullptr, &plan, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> degree_masked_linear_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& in_degrees, const at::Tensor& out_degrees, bool input_grad) {
  check_degree_masked_linear(x, weight, in_degrees, out_degrees, std::nullopt);
  check_grad_y("degree_masked_linear_backward", grad_y, x, weight);
  const DegreePlan plan = degree_plan(in_degrees, out_degrees);
  return masked_linear_backward_impl(grad_y, x, weight, nullptr, &plan, input_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastflow, CPU, m) {
  m.impl("masked_linear", &masked_linear_cpu);
  m.impl("masked_linear_backward", &masked_linear_backward_cpu);
  m.impl("degree_masked_linear", &degree_masked_linear_cpu);
  m.impl("degree_masked_linear_backward", &degree_masked_linear_backward_cpu);
}

}  // namespace fastflow
