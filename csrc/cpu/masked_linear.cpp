// Masked linear on the CPU (math: ../masked_linear.h), one layer at a time or a MADE's whole
// network (made_mlp). Every matrix product is the CPU BLAS's (at::mm: MKL or oneDNN, as
// torch was built), which is tuned for each CPU; the speed comes from the products it is
// not asked to do.
//
// Degree form: in degree order the mask is a staircase (sorted output r sees the first
// row_prefix[r] sorted inputs). The staircase is cut into blocks and each block is one BLAS
// call on its non-zero part only:
//
//   forward and grad_weight, by row blocks [r0, r1): the block sees the first
//     row_prefix[r1 − 1] sorted inputs (the widest of its rows, the last);
//   grad_x, by column blocks [c0, c1): the block is seen by the sorted outputs from
//     first_row(c0) = the first r with row_prefix[r] > c0.
//
// n blocks cover (n + 1)/2n of the dense area (the staircase itself is 1/2). The blocks of
// a product are shared out among the threads, the largest first, each BLAS call
// single-threaded: the threads never wait for each other inside a product, so many small
// blocks cost little.
//
// The weight is copied into degree order with the mask applied (W⊙M, zeros past each row's
// prefix, so the zeros inside a block multiply as zeros). One layer: x and dY are gathered
// into degree order and the results scattered back (skipped when an order is the identity,
// as for MADE's input and output layers). The whole network (made_mlp): the hidden units
// stay in degree order from layer to layer, so only the network's input and output are
// gathered, and the backward reuses the forward's sorted weights and activations.
//
// Matrix form (any mask): the reference's products, W⊙M written once per call.
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>
#include <c10/util/accumulate.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <memory>
#include <numeric>
#include <optional>
#include <tuple>
#include <vector>

#include "../masked_linear.h"
#include "vector_math.h"

namespace fastflow {
namespace {

// Rows per parallel task: about 64K elements each, so small layers run on one thread.
int64_t rows_per_task(int64_t cols) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(cols, 1)); }

// Blocks per product. More blocks skip more zeros, but each is one BLAS call, which runs
// below full speed when small: about kBlockWork multiply-adds of dense area per block, at
// most kMaxBlocks (or two per thread on larger machines). A 784x512 layer gets 16 blocks at
// batch 256 (17/32 of the dense area), 9 at batch 16; a 64x64 layer at batch 256, 1.
// Measured on a 2-core AMD EPYC (Zen 5, family 26) with MKL: 16 blocks beat 8, 12, 24 and
// 32 at batch 256; at batch 16, 0.7e6 beat 1.5e6 (fwd+bwd of the 784-[512, 512]-784 MADE
// 1.27x -> 1.49x fastflow's `torch` backend).
constexpr double kBlockWork = 0.7e6;
constexpr int64_t kMaxBlocks = 16;

// Blocks hold whole groups of kUnitGroup sorted units (the last one takes the rest): the
// BLAS's kernels work on tiles of 8 or 16 columns, and a block of 49 units ran at 63 GF/s
// where one of 48 ran at 76 (MKL on the same AMD, one thread); the MADE's 784-unit layer
// cut into sixteen 49-unit blocks cost it about 5% fwd+bwd.
constexpr int64_t kUnitGroup = 16;

int64_t block_count(int64_t batch, int64_t out_features, int64_t in_features) {
  const double work = static_cast<double>(batch) * out_features * in_features;
  const int64_t most = std::max<int64_t>(kMaxBlocks, 2 * at::get_num_threads());
  return std::clamp<int64_t>(static_cast<int64_t>(work / kBlockWork), 1, most);
}

// Where each of about n blocks over `units` sorted units begins, then `units`: the
// ceil(units / kUnitGroup) groups shared out as evenly as they go, so at most one block per
// group, and none for no units.
std::vector<int64_t> block_starts(int64_t units, int64_t n) {
  if (units == 0) return {0};
  const int64_t groups = (units + kUnitGroup - 1) / kUnitGroup;
  n = std::clamp<int64_t>(n, 1, groups);
  std::vector<int64_t> starts(n + 1);
  for (int64_t b = 0; b <= n; ++b) starts[b] = std::min(units, b * groups / n * kUnitGroup);
  return starts;
}

// One side of a staircase: units sorted by degree. order[s] is the unit at sorted position
// s, position its inverse (int32: the index type of the row loops); identity skips gathers.
struct UnitOrder {
  std::vector<int32_t> order, position;
  bool identity = true;

  explicit UnitOrder(const at::Tensor& order_in) : UnitOrder(order_in.contiguous().const_data_ptr<int64_t>(), order_in.numel()) {}
  UnitOrder(const int64_t* o, int64_t n) {
    order.resize(n);
    position.assign(n, -1);
    for (int64_t s = 0; s < n; ++s) {
      order[s] = static_cast<int32_t>(o[s]);
      position[o[s]] = static_cast<int32_t>(s);
      identity = identity && o[s] == s;
    }
  }
  const int32_t* order_or_null() const { return identity ? nullptr : order.data(); }
  const int32_t* position_or_null() const { return identity ? nullptr : position.data(); }
};

struct RowBlock { int64_t r0, r1, cols; };           // rows [r0, r1) see sorted inputs < cols
struct ColumnBlock { int64_t c0, c1, first_row; };  // columns [c0, c1) are seen from first_row

// A staircase: the sorted outputs' prefixes (non-decreasing) and the layer's sizes.
struct Steps {
  const int64_t* row_prefix;
  int64_t out_features, in_features;

  // Every row sees every input (a plain linear layer): nothing to skip, one block.
  bool full() const { return out_features == 0 || row_prefix[0] == in_features; }

  // Where the blocks of one side (`units` of them) begin, at this batch size.
  std::vector<int64_t> starts_of(int64_t units, int64_t batch) const {
    return block_starts(units, full() ? 1 : block_count(batch, out_features, in_features));
  }
  std::vector<RowBlock> row_blocks(int64_t batch) const {
    std::vector<RowBlock> blocks;
    const std::vector<int64_t> starts = starts_of(out_features, batch);
    for (size_t b = 0; b + 1 < starts.size(); ++b) {
      blocks.push_back({starts[b], starts[b + 1], row_prefix[starts[b + 1] - 1]});
    }
    return blocks;
  }
  std::vector<ColumnBlock> column_blocks(int64_t batch) const {
    std::vector<ColumnBlock> blocks;
    const std::vector<int64_t> starts = starts_of(in_features, batch);
    for (size_t b = 0; b + 1 < starts.size(); ++b) {
      const int64_t c0 = starts[b];
      const int64_t first = std::upper_bound(row_prefix, row_prefix + out_features, c0) - row_prefix;
      blocks.push_back({c0, starts[b + 1], first});
    }
    return blocks;
  }
};

// run(i) for every block i, shared among the threads: each takes the next block not yet
// taken, the costliest (largest product area) first, so the threads finish within about one
// small block of each other. Contiguous runs of about equal area, fixed in advance, left the
// threads idle for 6-7% of their time in the products on a 2-core AMD EPYC (Zen 4; the
// 784-[512, 512]-784 MADE's fwd+bwd at batch 256): the area leaves out the rows' sorting
// and unsorting, and the BLAS's speed varies with a block's shape. The BLAS calls inside a
// parallel region run on one thread each; with one thread (or one block) the blocks run in
// order, and a single block is left to the BLAS's own threads. Each block writes its own
// part of the result, so who runs it does not change the numbers.
template <typename Run>
void for_each_block(const std::vector<double>& costs, const Run& run) {
  const int64_t n = static_cast<int64_t>(costs.size());
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), n);
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) run(i);
    return;
  }
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return costs[a] > costs[b]; });
  std::atomic<int64_t> next{0};
  // The workers run the BLAS calls as this thread would (grad mode and dispatch state are
  // thread-local: a worker would otherwise record autograd for x's product).
  const at::ThreadLocalState caller;
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    const at::ThreadLocalStateGuard guard(caller);
    for (int64_t k = next.fetch_add(1); k < n; k = next.fetch_add(1)) run(order[k]);
  });
}

// The BLAS's own sgemm and dgemm (Fortran interface, 32-bit integers), where torch's
// libraries export them (MKL and OpenBLAS builds do): weak, so a build without them loads
// and takes at::mm_out instead.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
int MKL_Set_Num_Threads_Local(int) __attribute__((weak));  // mkl_service.h's C name
}

// MKL's threads for this thread's BLAS calls held to one while it lives, for a product too
// small to share (OpenBLAS builds: nothing). On a 2-core AMD EPYC (Zen 4), MKL ran a
// 16x64x64 product (a small MADE's hidden layer at batch 16) on both cores, 10-30% slower
// than on one; 256x64x10 (164K multiply-adds) was 4% faster on two. Below 2^17: the
// Gaussian MADE 10-64-64-20's inverse 5-6% faster at batch 16, forward and forward+backward,
// and no change at batch 256 or for the 784-[512, 512]-784 MADE (old and new alternating call
// by call). Inside a parallel region MKL runs on one thread anyway.
class SmallProductThreads {
 public:
  explicit SmallProductThreads(int64_t multiply_adds)
      : active_(MKL_Set_Num_Threads_Local != nullptr && multiply_adds < kSmallProduct) {
    if (active_) previous_ = MKL_Set_Num_Threads_Local(1);
  }
  ~SmallProductThreads() {
    if (active_) MKL_Set_Num_Threads_Local(previous_);
  }
  SmallProductThreads(const SmallProductThreads&) = delete;
  SmallProductThreads& operator=(const SmallProductThreads&) = delete;

 private:
  static constexpr int64_t kSmallProduct = int64_t{1} << 17;
  bool active_;
  int previous_ = 0;
};

// A row-major matrix in memory: element (i, j) at data[i * ld + j]; `transposed` reads it
// as its transpose.
template <typename scalar_t>
struct Operand {
  const scalar_t* data;
  int64_t ld;
  bool transposed;
};

template <typename scalar_t>
at::Tensor operand_tensor(const Operand<scalar_t>& op, int64_t rows, int64_t cols,
                          const at::TensorOptions& options) {
  const int64_t stored_rows = op.transposed ? cols : rows, stored_cols = op.transposed ? rows : cols;
  at::Tensor t = at::from_blob(const_cast<scalar_t*>(op.data), {stored_rows, stored_cols},
                               {op.ld, 1}, options);
  return op.transposed ? t.t() : t;
}

// c[m × n] (row-major, leading dimension ldc) = a[m × k]·b[k × n], or c += a·b when
// `accumulate`. The BLAS is called directly for float and double: an at::mm call on views
// costs several microseconds of dispatch, more than a small block's product.
template <typename scalar_t>
void gemm(int64_t m, int64_t n, int64_t k, Operand<scalar_t> a, Operand<scalar_t> b, scalar_t* c,
          int64_t ldc, const at::TensorOptions& options, bool accumulate = false) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) {
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, scalar_t(0));
    }
    return;
  }
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  const bool fits = std::max({m, n, k, a.ld, b.ld, ldc}) <= kIntMax;
  if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
    const auto blas = std::is_same_v<scalar_t, float> ? reinterpret_cast<void*>(&sgemm_)
                                                      : reinterpret_cast<void*>(&dgemm_);
    if (blas != nullptr && fits) {
      // Column-major BLAS on row-major data: cᵀ = bᵀ·aᵀ, each operand's flag unchanged.
      const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
      const int lda = static_cast<int>(a.ld), ldb = static_cast<int>(b.ld);
      const int ldci = static_cast<int>(ldc);
      const scalar_t one = 1, beta = accumulate ? 1 : 0;
      const char ta = a.transposed ? 'T' : 'N', tb = b.transposed ? 'T' : 'N';
      const SmallProductThreads threads(m * n * k);
      if constexpr (std::is_same_v<scalar_t, float>) {
        sgemm_(&tb, &ta, &ni, &mi, &ki, &one, b.data, &ldb, a.data, &lda, &beta, c, &ldci);
      } else {
        dgemm_(&tb, &ta, &ni, &mi, &ki, &one, b.data, &ldb, a.data, &lda, &beta, c, &ldci);
      }
      return;
    }
  }
  at::Tensor out = at::from_blob(c, {m, n}, {ldc, 1}, options);
  const at::Tensor a_tensor = operand_tensor(a, m, k, options), b_tensor = operand_tensor(b, k, n, options);
  if (accumulate) {
    out.addmm_(a_tensor, b_tensor);
  } else {
    at::mm_out(out, a_tensor, b_tensor);
  }
}

// v as a BLAS operand: unit column stride and a row stride of at least its width (a
// contiguous copy otherwise, e.g. for rows broadcast with stride 0).
at::Tensor blas_rows(const at::Tensor& v) {
  const bool columns_ok = v.size(1) <= 1 || v.stride(1) == 1;
  const bool rows_ok = v.size(0) <= 1 || v.stride(0) >= std::max<int64_t>(v.size(1), 1);
  return columns_ok && rows_ok ? v : v.contiguous();
}

// The leading dimension to give the BLAS for blas_rows(v) (any, for a single row).
int64_t leading_dimension(const at::Tensor& v) {
  return v.size(0) <= 1 ? std::max<int64_t>(v.size(1), 1) : v.stride(0);
}

// Each block's cost, to take the largest first: its area, plus a little for the call.
std::vector<double> block_costs(const std::vector<RowBlock>& blocks) {
  std::vector<double> costs;
  for (const auto& b : blocks) costs.push_back(static_cast<double>(b.r1 - b.r0) * (b.cols + 16));
  return costs;
}

std::vector<double> block_costs(const std::vector<ColumnBlock>& blocks, int64_t out_features) {
  std::vector<double> costs;
  for (const auto& b : blocks) costs.push_back(static_cast<double>(b.c1 - b.c0) * (out_features - b.first_row + 16));
  return costs;
}

// The products' epilogues, on a block's columns [c0, c1) of rows [begin, end) (rows of
// row_stride elements).
// y[b, c] = bias[c].
template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void fill_bias_columns_body(scalar_t* y, int64_t begin, int64_t end,
                                                   int64_t row_stride, const scalar_t* bias,
                                                   int64_t c0, int64_t c1) {
  for (int64_t b = begin; b < end; ++b) {
    scalar_t* row = y + b * row_stride;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) row[c] = bias[c];
  }
}
FASTFLOW_CPU_DISPATCH(fill_bias_columns)

// y[b, c] = max(y[b, c], 0).
template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void relu_columns_body(scalar_t* y, int64_t begin, int64_t end,
                                              int64_t row_stride, int64_t c0, int64_t c1) {
  for (int64_t b = begin; b < end; ++b) {
    scalar_t* row = y + b * row_stride;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) row[c] = row[c] < scalar_t(0) ? scalar_t(0) : row[c];
  }
}
FASTFLOW_CPU_DISPATCH(relu_columns)

// g[b, c] = 0 where h[b, c] <= 0: ReLU's gradient, h its output.
template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void relu_grad_columns_body(scalar_t* g, int64_t g_stride, const scalar_t* h,
                                                   int64_t h_stride, int64_t begin, int64_t end,
                                                   int64_t c0, int64_t c1) {
  for (int64_t b = begin; b < end; ++b) {
    scalar_t* grow = g + b * g_stride;
    const scalar_t* hrow = h + b * h_stride;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) grow[c] = hrow[c] > scalar_t(0) ? grow[c] : scalar_t(0);
  }
}
FASTFLOW_CPU_DISPATCH(relu_grad_columns)

// rows(begin, end) over a block's `rows` rows of `cols` columns, in parallel: inline inside
// a block's task (a nested parallel_for), on every thread for a product of one block.
template <typename Rows>
void for_rows(int64_t rows, int64_t cols, const Rows& run) {
  at::parallel_for(0, rows, rows_per_task(cols), run);
}

// y[:, block] = a[:, :cols]·w[block, :cols]ᵀ + bias[block] for each row block, then ReLU
// on the block when `relu`, on the same thread while it is in cache. The bias (undefined:
// none) is the product's starting value, so that it is added in the GEMM's accumulator and
// rounded once, as at::addmm (the reference's F.linear) does: added after a half or
// bfloat16 product's rounding, it moved pre-activations across ReLU's kink. y and w
// contiguous. prepare_rows(r0, r1) runs first in each block's task (to write w's rows there).
template <typename PrepareRows>
void row_block_products(at::Tensor& y, const at::Tensor& a_in, const at::Tensor& w,
                        const std::vector<RowBlock>& blocks, const at::Tensor& bias, bool relu,
                        const PrepareRows& prepare_rows) {
  const at::Tensor a = blas_rows(a_in);
  const std::vector<double> costs = block_costs(blocks);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "row_block_products", [&] {
    const scalar_t* a_data = a.const_data_ptr<scalar_t>();
    const scalar_t* w_data = w.const_data_ptr<scalar_t>();
    const scalar_t* bias_data = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* y_data = y.mutable_data_ptr<scalar_t>();
    const int64_t batch = y.size(0), ldy = y.stride(0), ldw = w.stride(0), lda = leading_dimension(a);
    for_each_block(costs, [&](int64_t i) {
      const auto [r0, r1, cols] = blocks[i];
      prepare_rows(r0, r1);
      if (bias_data != nullptr) for_rows(batch, r1 - r0, [&](int64_t begin, int64_t end) {
        fill_bias_columns(y_data, begin, end, ldy, bias_data, r0, r1);
      });
      gemm<scalar_t>(batch, r1 - r0, cols, {a_data, lda, false}, {w_data + r0 * ldw, ldw, true},
                     y_data + r0, ldy, y.options(), bias_data != nullptr);
      if (relu) for_rows(batch, r1 - r0, [&](int64_t begin, int64_t end) {
        relu_columns(y_data, begin, end, ldy, r0, r1);
      });
    });
  });
}

// grad_w[block, :cols] = g[:, block]ᵀ·a[:, :cols] for each row block, then finish_rows(r0,
// r1) in the block's task; nothing past a row's block width is written (the unsort zeroes
// each row past its prefix). grad_w, g contiguous.
template <typename FinishRows>
void grad_weight_products(at::Tensor& grad_w, const at::Tensor& g, const at::Tensor& a_in,
                          const std::vector<RowBlock>& blocks, const FinishRows& finish_rows) {
  const at::Tensor a = blas_rows(a_in);
  const std::vector<double> costs = block_costs(blocks);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "grad_weight_products", [&] {
    const scalar_t* a_data = a.const_data_ptr<scalar_t>();
    const scalar_t* g_data = g.const_data_ptr<scalar_t>();
    scalar_t* gw_data = grad_w.mutable_data_ptr<scalar_t>();
    const int64_t batch = g.size(0), ldg = g.stride(0), ldgw = grad_w.stride(0), lda = leading_dimension(a);
    for_each_block(costs, [&](int64_t i) {
      const auto [r0, r1, cols] = blocks[i];
      if (cols > 0) {
        gemm<scalar_t>(r1 - r0, cols, batch, {g_data + r0, ldg, true}, {a_data, lda, false},
                       gw_data + r0 * ldgw, ldgw, g.options());
      }
      finish_rows(r0, r1);
    });
  });
}

// grad_a[:, block] = g[:, first_row:]·w[first_row:, block] for each column block, then
// finish(c0, c1) on the block's columns of grad_a. grad_a, g and w contiguous.
template <typename Finish>
void column_block_products(at::Tensor& grad_a, const at::Tensor& g, const at::Tensor& w,
                           const std::vector<ColumnBlock>& blocks, const Finish& finish) {
  const int64_t out_features = w.size(0);
  const std::vector<double> costs = block_costs(blocks, out_features);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "column_block_products", [&] {
    const scalar_t* g_data = g.const_data_ptr<scalar_t>();
    const scalar_t* w_data = w.const_data_ptr<scalar_t>();
    scalar_t* ga_data = grad_a.mutable_data_ptr<scalar_t>();
    const int64_t batch = g.size(0), ldg = g.stride(0), ldw = w.stride(0), ldga = grad_a.stride(0);
    for_each_block(costs, [&](int64_t i) {
      const auto [c0, c1, first_row] = blocks[i];
      gemm<scalar_t>(batch, c1 - c0, out_features - first_row, {g_data + first_row, ldg, false},
                     {w_data + first_row * ldw + c0, ldw, false}, ga_data + c0, ldga, g.options());
      finish(c0, c1);
    });
  });
}

// Asks for a row's cache lines ahead of a gather from it: the gather's random order within
// the row hides the sequence from the hardware prefetcher, and its loads missed the cache.
template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void prefetch_row(const scalar_t* row, int64_t n) {
  constexpr int64_t kLine = 64 / sizeof(scalar_t);
  for (int64_t i = 0; i < n; i += kLine) __builtin_prefetch(row + i);
}

// dst[b, c] = src[b, index[c]] for rows [begin, end).
template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void gather_columns_rows_body(const scalar_t* src, int64_t src_row,
                                                     const int32_t* index, int64_t cols,
                                                     int64_t begin, int64_t end, scalar_t* dst) {
  for (int64_t b = begin; b < end; ++b) {
    const scalar_t* in = src + b * src_row;
    scalar_t* out = dst + b * cols;
    if (b + 1 < end) prefetch_row(in + src_row, cols);
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) out[c] = in[index[c]];
  }
}
FASTFLOW_CPU_DISPATCH(gather_columns_rows)

// Temporaries that outlive the call, one buffer per use and thread, grown as needed and
// never shrunk. They are megabytes at MADE's sizes: a fresh allocation that large is mapped
// and page-faulted in by the OS on every call, which cost about a quarter of the forward's
// time at batch 256. Never returned to the caller.
enum class Scratch { kX, kWeight, kY, kGradY, kGradX, kGradWeight, kCount };

at::Tensor scratch(Scratch use, at::IntArrayRef sizes, const at::TensorOptions& options) {
  const int64_t bytes = c10::multiply_integers(sizes) * options.dtype().itemsize();
  constexpr int64_t kSmall = 64 * 1024;  // served from malloc's free lists: no page faults
  if (bytes <= kSmall) return at::empty(sizes, options);
  thread_local std::array<at::Tensor, static_cast<size_t>(Scratch::kCount)> buffers;
  at::Tensor& buffer = buffers[static_cast<size_t>(use)];
  if (!buffer.defined() || buffer.numel() < bytes) {
    buffer = at::empty({std::max<int64_t>(bytes, 64)}, at::TensorOptions(at::kByte));
  }
  return buffer.narrow(0, 0, bytes).view(options.dtype().toScalarType()).view(sizes);
}

// out[:, c] = v[:, index[c]]; out is contiguous.
at::Tensor gather_columns(at::Tensor out, const at::Tensor& v_in, const std::vector<int32_t>& index) {
  const int64_t cols = static_cast<int64_t>(index.size());
  const at::Tensor v = rows_contiguous(v_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "gather_columns", [&] {
    const scalar_t* src = v.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, v.size(0), rows_per_task(cols), [&](int64_t begin, int64_t end) {
      gather_columns_rows(src, v.stride(0), index.data(), cols, begin, end, dst);
    });
  });
  return out;
}

at::Tensor new_matrix(int64_t rows, int64_t cols, const at::Tensor& like) {
  return at::empty({rows, cols}, like.options().memory_format(at::MemoryFormat::Contiguous));
}

// v's columns in degree order: v[:, order] (v itself when the order is the identity).
at::Tensor sorted_columns(Scratch use, const at::Tensor& v, const UnitOrder& order) {
  if (order.identity) return rows_contiguous(v);
  return gather_columns(scratch(use, {v.size(0), v.size(1)}, v.options()), v, order.order);
}

// v (in degree order) back in unit order, into a new matrix (v itself for the identity).
at::Tensor unsorted_columns(const at::Tensor& v, const UnitOrder& order) {
  if (order.identity) return v;
  return gather_columns(new_matrix(v.size(0), v.size(1), v), v, order.position);
}

// out[i] = v[index[i]]: a vector (a bias or its gradient) into degree order (index: the
// order) or back (index: the positions); undefined stays undefined.
at::Tensor gather_vector(const at::Tensor& v, const std::vector<int32_t>& index, bool identity) {
  if (!v.defined() || identity) return v.defined() ? v.contiguous() : v;
  return gather_columns(new_matrix(1, v.numel(), v), v.view({1, -1}), index).view(-1);
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
    if (r + 1 < end) prefetch_row(weight + out_order[r + 1] * in_features, row_prefix[r + 1]);
    if (in_order == nullptr) {
      std::copy(src, src + seen, out);
    } else {
      for (int64_t c = 0; c < seen; ++c) out[c] = src[in_order[c]];
    }
    std::fill(out + seen, out + in_features, scalar_t(0));
  }
}
FASTFLOW_CPU_DISPATCH(sort_weight_rows)

// grad_weight[out_order[r], c] = g[r, in_position[c]] where that sorted position is within
// the row's prefix row_prefix[r], else 0 (the mask), rows [begin, end). A gather within the
// row (in cache) that writes each entry once: zeroing the row and then scattering into it
// cost about 2.5% of the 784-[512, 512]-784 MADE's fwd+bwd at batch 256 (2-core AMD EPYC).
// g is scratch: its row's entries past the prefix are zeroed first, so the gather needs no
// test (whether a unit is within the prefix is random along the row, and a branch on it
// mispredicted: the loop took twice the time, by its share of a profile). in_position
// (the inputs' order's inverse) is nullptr for the identity.
template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void unsort_grad_rows_body(scalar_t* g, const int32_t* in_position,
                                                  const int32_t* out_order,
                                                  const int64_t* row_prefix, int64_t in_features,
                                                  int64_t begin, int64_t end,
                                                  scalar_t* grad_weight) {
  for (int64_t r = begin; r < end; ++r) {
    scalar_t* src = g + r * in_features;
    scalar_t* out = grad_weight + out_order[r] * in_features;
    const int64_t seen = row_prefix[r];
    if (in_position == nullptr) {
      std::copy(src, src + seen, out);
      std::fill(out + seen, out + in_features, scalar_t(0));
    } else {
      std::fill(src + seen, src + in_features, scalar_t(0));
#pragma omp simd
      for (int64_t c = 0; c < in_features; ++c) out[c] = src[in_position[c]];
    }
  }
}
FASTFLOW_CPU_DISPATCH(unsort_grad_rows)

// Rows [r0, r1) of W⊙M in degree order, into `out` (weight's shape; both contiguous).
void sort_weight_block(at::Tensor& out, const at::Tensor& weight, const UnitOrder& in,
                       const UnitOrder& out_units, const int64_t* row_prefix, int64_t r0, int64_t r1) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "sort_weight_block", [&] {
    sort_weight_rows(weight.const_data_ptr<scalar_t>(), in.order_or_null(), out_units.order.data(),
                     row_prefix, weight.size(1), r0, r1, out.mutable_data_ptr<scalar_t>());
  });
}

// The forward's y = a·(W⊙M)ᵀ + bias in degree order, with W⊙M sorted into `sorted` block by
// block, each by the task that multiplies it right after (in its cache, and no pass of its
// own). Returns `sorted`, complete.
at::Tensor sort_and_multiply(at::Tensor& y, const at::Tensor& a, at::Tensor sorted,
                             const at::Tensor& weight_in, const UnitOrder& in,
                             const UnitOrder& out_units, const Steps& steps, const at::Tensor& bias,
                             bool relu) {
  const at::Tensor weight = weight_in.contiguous();
  row_block_products(y, a, sorted, steps.row_blocks(a.size(0)), bias, relu,
                     [&](int64_t r0, int64_t r1) {
                       sort_weight_block(sorted, weight, in, out_units, steps.row_prefix, r0, r1);
                     });
  return sorted;
}

// W⊙M in degree order, into `out` (weight's shape, contiguous), all rows in parallel.
at::Tensor sorted_masked_weight(at::Tensor out, const at::Tensor& weight_in, const UnitOrder& in,
                                const UnitOrder& out_units, const int64_t* row_prefix) {
  const at::Tensor weight = weight_in.contiguous();
  at::parallel_for(0, weight.size(0), rows_per_task(weight.size(1)), [&](int64_t begin, int64_t end) {
    sort_weight_block(out, weight, in, out_units, row_prefix, begin, end);
  });
  return out;
}

// The weight's gradient g[:, sorted outputs]ᵀ·a[:, sorted inputs], masked, in the units'
// order: each row block's product into a scratch matrix in degree order, then its rows
// unsorted into the result by the same task while they are in its cache.
at::Tensor weight_gradient(const at::Tensor& g, const at::Tensor& a, const UnitOrder& in,
                           const UnitOrder& out_units, const Steps& steps) {
  const std::vector<int64_t> shape{steps.out_features, steps.in_features};
  at::Tensor sorted = scratch(Scratch::kGradWeight, shape, g.options());
  at::Tensor grad = at::empty(shape, g.options());
  grad_weight_products(sorted, g, a, steps.row_blocks(g.size(0)), [&](int64_t r0, int64_t r1) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "weight_gradient", [&] {
      unsort_grad_rows(sorted.mutable_data_ptr<scalar_t>(), in.position_or_null(),
                       out_units.order.data(), steps.row_prefix, steps.in_features, r0, r1,
                       grad.mutable_data_ptr<scalar_t>());
    });
  });
  return grad;
}

// ReLU's gradient on columns [c0, c1) of g, h the ReLU's output (both contiguous rows).
void relu_grad(at::Tensor& g, const at::Tensor& h, int64_t c0, int64_t c1) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "relu_grad", [&] {
    scalar_t* g_data = g.mutable_data_ptr<scalar_t>();
    const scalar_t* h_data = h.const_data_ptr<scalar_t>();
    for_rows(g.size(0), c1 - c0, [&](int64_t begin, int64_t end) {
      relu_grad_columns(g_data, g.stride(0), h_data, h.stride(0), begin, end, c0, c1);
    });
  });
}

// One layer's staircase: its two unit orders and prefixes.
struct Staircase {
  DegreePlan plan;
  UnitOrder in, out;

  Staircase(const at::Tensor& in_degrees, const at::Tensor& out_degrees)
      : plan(degree_plan(in_degrees, out_degrees)), in(plan.in_order), out(plan.out_order) {}
  Steps steps() const {
    return {plan.row_prefix.const_data_ptr<int64_t>(), plan.out_order.numel(), plan.in_order.numel()};
  }
};

at::Tensor degree_forward(const at::Tensor& x_in, const at::Tensor& weight_in, const Staircase& s,
                          const std::optional<at::Tensor>& bias_in) {
  const at::Tensor x = sorted_columns(Scratch::kX, x_in, s.in);
  const at::Tensor bias = gather_vector(bias_in.has_value() ? *bias_in : at::Tensor(), s.out.order, s.out.identity);
  const int64_t batch = x.size(0), out_features = weight_in.size(0);
  at::Tensor y_sorted = s.out.identity ? new_matrix(batch, out_features, x)
                                       : scratch(Scratch::kY, {batch, out_features}, x.options());
  sort_and_multiply(y_sorted, x, scratch(Scratch::kWeight, weight_in.sizes(), weight_in.options()),
                    weight_in, s.in, s.out, s.steps(), bias, false);
  return unsorted_columns(y_sorted, s.out);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> degree_backward(
    const at::Tensor& grad_y_in, const at::Tensor& x_in, const at::Tensor& weight_in,
    const Staircase& s, bool input_grad) {
  const at::Tensor x = sorted_columns(Scratch::kX, x_in, s.in);
  const at::Tensor grad_y = sorted_columns(Scratch::kGradY, grad_y_in, s.out);
  const Steps steps = s.steps();
  const int64_t batch = x.size(0), in_features = weight_in.size(1);
  at::Tensor grad_x = at::empty({0}, x.options());
  if (input_grad) {
    const at::Tensor weight = sorted_masked_weight(scratch(Scratch::kWeight, weight_in.sizes(), weight_in.options()),
                                                   weight_in, s.in, s.out, steps.row_prefix);
    at::Tensor grad_x_sorted = s.in.identity ? new_matrix(batch, in_features, x)
                                             : scratch(Scratch::kGradX, {batch, in_features}, x.options());
    column_block_products(grad_x_sorted, grad_y, weight, steps.column_blocks(batch),
                          [](int64_t, int64_t) {});
    grad_x = unsorted_columns(grad_x_sorted, s.in);
  }
  return {grad_x, weight_gradient(grad_y, x, s.in, s.out, steps), grad_y_in.sum(0)};
}

// The staircase of these degrees, built once and reused: a MADE calls every layer with the
// same degrees, and building one (two sorts) costs about 25 us, a tenth of a 512-wide
// layer's forward at batch 16. Looked up by the degrees' values (a few KB compared), so an
// edited or reallocated degrees tensor is never mistaken for another.
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

// made_mlp's plan (one int64 tensor, checked by check_made_mlp_plan): the L + 1 unit
// layers' orders, then the L layers' row prefixes, each layer's staircase.
struct NetworkPlan {
  at::Tensor data;               // the plan, contiguous (the prefixes point into it)
  std::vector<UnitOrder> units;  // L + 1: the inputs, each hidden layer, the outputs
  std::vector<Steps> layers;     // L

  NetworkPlan(const at::Tensor& plan, const std::vector<int64_t>& widths) : data(plan.contiguous()) {
    const int64_t* p = data.const_data_ptr<int64_t>();
    int64_t offset = 0;
    for (const int64_t width : widths) {
      units.emplace_back(p + offset, width);
      offset += width;
    }
    for (size_t l = 0; l + 1 < widths.size(); ++l) {
      layers.push_back({p + offset, widths[l + 1], widths[l]});
      offset += widths[l + 1];
    }
  }
};

// The unit layers' widths: x's, then each weight's rows.
std::vector<int64_t> unit_widths(const at::Tensor& x, at::TensorList weights) {
  std::vector<int64_t> widths{x.size(1)};
  for (const auto& w : weights) widths.push_back(w.size(0));
  return widths;
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> made_mlp_cpu(
    const at::Tensor& x_in, at::TensorList weights, const c10::List<std::optional<at::Tensor>>& biases,
    const at::Tensor& plan_in, bool keep_for_backward) {
  check_made_mlp(x_in, weights, biases, plan_in);
  const NetworkPlan plan(plan_in, unit_widths(x_in, weights));
  const int64_t layers = static_cast<int64_t>(weights.size()), batch = x_in.size(0);
  std::vector<at::Tensor> hidden, sorted_weights;
  at::Tensor h = sorted_columns(Scratch::kX, x_in, plan.units[0]);
  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor& weight_in = weights[l];
    const std::optional<at::Tensor> bias_in = biases.get(l);
    const UnitOrder& out_units = plan.units[l + 1];
    const at::Tensor bias = gather_vector(bias_in.has_value() ? *bias_in : at::Tensor(), out_units.order, out_units.identity);
    const bool relu = l + 1 < layers;
    at::Tensor y = new_matrix(batch, weight_in.size(0), x_in);
    const at::Tensor weight = sort_and_multiply(
        y, h,
        keep_for_backward ? at::empty(weight_in.sizes(), weight_in.options())
                          : scratch(Scratch::kWeight, weight_in.sizes(), weight_in.options()),
        weight_in, plan.units[l], out_units, plan.layers[l], bias, relu);
    if (keep_for_backward) {
      sorted_weights.push_back(weight);
      if (relu) hidden.push_back(y);
    }
    h = y;
  }
  return {unsorted_columns(h, plan.units[layers]), hidden, sorted_weights};
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> made_mlp_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x_in, at::TensorList hidden,
    at::TensorList sorted_weights, const at::Tensor& plan_in, bool input_grad) {
  check_made_mlp_backward(grad_y, x_in, hidden, sorted_weights, plan_in);
  const NetworkPlan plan(plan_in, unit_widths(x_in, sorted_weights));
  const int64_t layers = static_cast<int64_t>(sorted_weights.size()), batch = grad_y.size(0);
  std::vector<at::Tensor> grad_weights(layers), grad_biases(layers);
  const at::Tensor x = sorted_columns(Scratch::kX, x_in, plan.units[0]);
  at::Tensor g = blas_rows(sorted_columns(Scratch::kGradY, grad_y, plan.units[layers]));
  at::Tensor grad_x = at::empty({0}, grad_y.options());
  for (int64_t l = layers - 1; l >= 0; --l) {
    const at::Tensor& h = l == 0 ? x : hidden[l - 1];
    const at::Tensor& weight = sorted_weights[l];
    const Steps& steps = plan.layers[l];
    grad_biases[l] = gather_vector(g.sum(0), plan.units[l + 1].position, plan.units[l + 1].identity);
    grad_weights[l] = weight_gradient(g, h, plan.units[l], plan.units[l + 1], steps);
    if (l == 0 && !input_grad) break;
    at::Tensor grad_h = new_matrix(batch, weight.size(1), g);
    column_block_products(grad_h, g, weight, steps.column_blocks(batch), [&](int64_t c0, int64_t c1) {
      if (l > 0) relu_grad(grad_h, h, c0, c1);
    });
    if (l == 0) grad_x = unsorted_columns(grad_h, plan.units[0]);
    g = grad_h;
  }
  return {grad_x, grad_weights, grad_biases};
}

// made_mlp's autograd, here rather than in Python: a small MADE's forward and backward take
// tens of microseconds each, about what a Python autograd.Function costs around them. The
// forward keeps the hidden activations and the sorted masked weights; the backward is
// made_mlp_backward (both called through the dispatcher, so tracing sees them).
using MadeMlpOutputs = std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>>;

const auto& made_mlp_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastflow::made_mlp", "")
                             .typed<MadeMlpOutputs(const at::Tensor&, at::TensorList,
                                                   const c10::List<std::optional<at::Tensor>>&,
                                                   const at::Tensor&, bool)>();
  return op;
}

const auto& made_mlp_backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastflow::made_mlp_backward", "")
                             .typed<MadeMlpOutputs(const at::Tensor&, const at::Tensor&,
                                                   at::TensorList, at::TensorList,
                                                   const at::Tensor&, bool)>();
  return op;
}

struct MadeMlpCall {
  c10::List<std::optional<at::Tensor>> biases;
  at::Tensor plan;
  MadeMlpOutputs* outputs;  // the op's whole result, filled by forward
};

class MadeMlpFunction : public torch::autograd::Function<MadeMlpFunction> {
 public:
  // inputs: x, then the weights, then the biases that are not None (autograd takes no
  // undefined inputs).
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                at::TensorList inputs, const MadeMlpCall* call) {
    const int64_t layers = static_cast<int64_t>(call->biases.size());
    const at::Tensor& x = inputs[0];
    {
      at::AutoDispatchBelowADInplaceOrView below;
      *call->outputs = made_mlp_op().call(x, inputs.slice(1, layers), call->biases, call->plan,
                                          /*keep_for_backward=*/true);
    }
    const auto& [y, hidden, sorted_weights] = *call->outputs;
    std::vector<at::Tensor> saved{x, call->plan};
    saved.insert(saved.end(), hidden.begin(), hidden.end());
    saved.insert(saved.end(), sorted_weights.begin(), sorted_weights.end());
    ctx->save_for_backward(saved);
    std::vector<int64_t> with_bias;  // the layers whose bias is among the inputs
    for (int64_t l = 0; l < layers; ++l) {
      if (call->biases.get(l).has_value()) with_bias.push_back(l);
    }
    ctx->saved_data["with_bias"] = with_bias;
    return {y};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const std::vector<at::Tensor> saved = ctx->get_saved_variables();
    const at::TensorList all(saved);
    const int64_t layers = (static_cast<int64_t>(saved.size()) - 1) / 2;  // x, plan, L − 1, L
    const bool input_grad = ctx->needs_input_grad(0);
    auto [grad_x, grad_weights, grad_biases] = made_mlp_backward_op().call(
        grad_outputs[0], saved[0], all.slice(2, layers - 1), all.slice(layers + 1, layers),
        saved[1], input_grad);
    torch::autograd::variable_list grads{input_grad ? grad_x : at::Tensor()};
    grads.insert(grads.end(), grad_weights.begin(), grad_weights.end());
    const std::vector<int64_t> with_bias = ctx->saved_data["with_bias"].toIntVector();
    for (size_t i = 0; i < with_bias.size(); ++i) {
      grads.push_back(ctx->needs_input_grad(1 + layers + i) ? grad_biases[with_bias[i]] : at::Tensor());
    }
    grads.emplace_back();  // the call (biases' Nones and the plan): no gradient
    return grads;
  }
};

MadeMlpOutputs made_mlp_autograd(const at::Tensor& x, at::TensorList weights,
                                 const c10::List<std::optional<at::Tensor>>& biases,
                                 const at::Tensor& plan, bool keep_for_backward) {
  TORCH_CHECK_VALUE(biases.size() == weights.size(), "made_mlp: expected ", weights.size(),
                    " biases (None for a layer without), got ", biases.size());
  std::vector<at::Tensor> inputs{x};
  inputs.insert(inputs.end(), weights.begin(), weights.end());
  for (size_t l = 0; l < biases.size(); ++l) {
    const std::optional<at::Tensor> bias = biases.get(l);
    if (bias.has_value()) inputs.push_back(*bias);
  }
  bool needs_grad = false;
  for (const auto& t : inputs) needs_grad = needs_grad || t.requires_grad();
  if (!at::GradMode::is_enabled() || !needs_grad) {
    at::AutoDispatchBelowADInplaceOrView below;
    return made_mlp_op().call(x, weights, biases, plan, keep_for_backward);
  }
  MadeMlpOutputs outputs;
  const MadeMlpCall call{biases, plan, &outputs};
  at::Tensor y = MadeMlpFunction::apply(at::TensorList(inputs), &call)[0];
  if (!keep_for_backward) return {y, {}, {}};
  return {y, std::get<1>(outputs), std::get<2>(outputs)};
}

// The per-layer ops' autograd, in C++ for the same reason: around a 512-wide layer at batch
// 256 a Python autograd.Function cost about 0.15 ms, a tenth of the layer. The mask, or the
// degrees, get no gradient; the backward is <op>_backward through the dispatcher.
struct MaskedLinearCall {
  bool degrees;      // degree_masked_linear (masks: in_degrees, out_degrees) or masked_linear
  at::TensorList masks;
  bool has_bias;
};

// The op below autograd: fastflow::masked_linear or degree_masked_linear, as `call` says.
at::Tensor masked_linear_below_autograd(const at::Tensor& x, const at::Tensor& weight,
                                        const MaskedLinearCall& call,
                                        const std::optional<at::Tensor>& bias) {
  static const auto masked = c10::Dispatcher::singleton()
      .findSchemaOrThrow("fastflow::masked_linear", "")
      .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const std::optional<at::Tensor>&)>();
  static const auto degree = c10::Dispatcher::singleton()
      .findSchemaOrThrow("fastflow::degree_masked_linear", "")
      .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const at::Tensor&, const std::optional<at::Tensor>&)>();
  at::AutoDispatchBelowADInplaceOrView below;
  return call.degrees ? degree.call(x, weight, call.masks[0], call.masks[1], bias)
                      : masked.call(x, weight, call.masks[0], bias);
}

class MaskedLinearFunction : public torch::autograd::Function<MaskedLinearFunction> {
 public:
  // inputs: x, weight, then the bias if there is one.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                at::TensorList inputs, const MaskedLinearCall* call) {
    const std::optional<at::Tensor> bias = call->has_bias ? std::optional<at::Tensor>(inputs[2]) : std::nullopt;
    const at::Tensor y = masked_linear_below_autograd(inputs[0], inputs[1], *call, bias);
    std::vector<at::Tensor> saved{inputs[0], inputs[1]};
    saved.insert(saved.end(), call->masks.begin(), call->masks.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["has_bias"] = call->has_bias;
    return {y};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
    static const auto masked = c10::Dispatcher::singleton()
        .findSchemaOrThrow("fastflow::masked_linear_backward", "")
        .typed<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, bool)>();
    static const auto degree = c10::Dispatcher::singleton()
        .findSchemaOrThrow("fastflow::degree_masked_linear_backward", "")
        .typed<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                     const at::Tensor&, bool)>();
    const std::vector<at::Tensor> saved = ctx->get_saved_variables();
    const bool input_grad = ctx->needs_input_grad(0);
    const at::Tensor grad_y = grad_outputs[0].contiguous();
    auto [grad_x, grad_weight, grad_bias] =
        saved.size() == 4 ? degree.call(grad_y, saved[0], saved[1], saved[2], saved[3], input_grad)
                          : masked.call(grad_y, saved[0], saved[1], saved[2], input_grad);
    torch::autograd::variable_list grads{input_grad ? grad_x : at::Tensor(), grad_weight};
    if (ctx->saved_data["has_bias"].toBool()) grads.push_back(grad_bias);
    grads.emplace_back();  // the call (the mask or degrees): no gradient
    return grads;
  }
};

at::Tensor masked_linear_autograd_call(const at::Tensor& x, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, MaskedLinearCall call) {
  const bool needs_grad = x.requires_grad() || weight.requires_grad() ||
                          (bias.has_value() && bias->requires_grad());
  if (!at::GradMode::is_enabled() || !needs_grad) {
    return masked_linear_below_autograd(x, weight, call, bias);
  }
  std::vector<at::Tensor> inputs{x, weight};
  if (bias.has_value()) inputs.push_back(*bias);
  call.has_bias = bias.has_value();
  return MaskedLinearFunction::apply(at::TensorList(inputs), &call)[0];
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

at::Tensor masked_linear_autograd(const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& mask, const std::optional<at::Tensor>& bias) {
  const std::array<at::Tensor, 1> masks{mask};
  return masked_linear_autograd_call(x, weight, bias, {false, masks, false});
}

at::Tensor degree_masked_linear_autograd(const at::Tensor& x, const at::Tensor& weight,
                                         const at::Tensor& in_degrees, const at::Tensor& out_degrees,
                                         const std::optional<at::Tensor>& bias) {
  const std::array<at::Tensor, 2> masks{in_degrees, out_degrees};
  return masked_linear_autograd_call(x, weight, bias, {true, masks, false});
}

}  // namespace

TORCH_LIBRARY_IMPL(fastflow, CPU, m) {
  m.impl("masked_linear", &masked_linear_cpu);
  m.impl("masked_linear_backward", &masked_linear_backward_cpu);
  m.impl("degree_masked_linear", &degree_masked_linear_cpu);
  m.impl("degree_masked_linear_backward", &degree_masked_linear_backward_cpu);
  m.impl("made_mlp", &made_mlp_cpu);
  m.impl("made_mlp_backward", &made_mlp_backward_cpu);
}

TORCH_LIBRARY_IMPL(fastflow, Autograd, m) {
  m.impl("made_mlp", &made_mlp_autograd);
  m.impl("masked_linear", &masked_linear_autograd);
  m.impl("degree_masked_linear", &degree_masked_linear_autograd);
}

}  // namespace fastflow
