// A packed float32 GEMM, C[M, N] = A[M, K]·B[K, N], in the BLAS's layout (B in panels of NR
// columns, A in micro-panels of MR rows per K block, an MR×NR register tile), where the
// caller's problem packs A and B itself: it gathers, permutes and masks while packing, which
// is the copy a BLAS makes anyway. What a BLAS cannot do and this does: each B panel has its
// own K range (the degree staircase: the rest is zero) and each row micro-panel may stop
// before N (grad_weight's staircase), so zero tiles are neither packed nor multiplied.
//
// A problem P provides
//   int64_t M, N, K;
//   void k_range(int64_t n0, int64_t* begin, int64_t* end) const
//       the K range that columns [n0, n0 + NR) need (outside it B is zero there);
//   int64_t n_end(int64_t m0, int64_t m1) const
//       columns at or past this are never read from rows [m0, m1) of C (left unwritten);
//   void pack_a(int64_t m0, int64_t rows, int64_t k0, int64_t kc, float* dst) const
//       dst[k·MR + i] = A[m0 + i, k0 + k], zero for i ≥ rows;
//   void pack_b(int64_t n0, int64_t cols, int64_t k0, int64_t k1, float* dst) const
//       dst[(k − k0)·NR + j] = B[k, n0 + j], zero for j ≥ cols;
//   or, with `static constexpr bool kPacksBByRows = true`, when B's rows are the cheap way
//   to read it (a gather along the row),
//   void pack_b_rows(const Plan& plan, int64_t k0, int64_t k1, float* b) const
//       rows [k0, k1) of B into every panel whose K range holds them.
// All of them FASTFLOW_ALWAYS_INLINE: they are compiled into the AVX2 code that calls them.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "vector_math.h"

namespace fastflow::cpu::gemm {

#define FASTFLOW_AVX2 __attribute__((target("avx2,fma")))

// 6×16: twelve 8-float accumulators, two B vectors and a broadcast A value: 15 of the 16
// AVX2 registers.
constexpr int MR = 6, NR = 16;
constexpr int64_t KC = 256;  // an A micro-panel's K block (6 KB) and a B slice (16 KB) in L1
constexpr int64_t MC = 120;  // rows of A per block: 120 KB packed, in L2

typedef float v8f __attribute__((vector_size(32)));

FASTFLOW_AVX2 FASTFLOW_ALWAYS_INLINE v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
FASTFLOW_AVX2 FASTFLOW_ALWAYS_INLINE void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }

// C tile (rows × cols of it, ldc its row stride) = or += a·b over kc.
FASTFLOW_AVX2 FASTFLOW_ALWAYS_INLINE void micro_kernel(int64_t kc, const float* a, const float* b,
                                                       float* c, int64_t ldc, int rows, int cols,
                                                       bool accumulate) {
  v8f c00{}, c01{}, c10{}, c11{}, c20{}, c21{}, c30{}, c31{}, c40{}, c41{}, c50{}, c51{};
  for (int64_t k = 0; k < kc; ++k) {
    const v8f b0 = load8(b), b1 = load8(b + 8);
    c00 += a[0] * b0; c01 += a[0] * b1;
    c10 += a[1] * b0; c11 += a[1] * b1;
    c20 += a[2] * b0; c21 += a[2] * b1;
    c30 += a[3] * b0; c31 += a[3] * b1;
    c40 += a[4] * b0; c41 += a[4] * b1;
    c50 += a[5] * b0; c51 += a[5] * b1;
    a += MR;
    b += NR;
  }
  const v8f tile[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (rows == MR && cols == NR) {
    for (int i = 0; i < MR; ++i) {
      float* out = c + i * ldc;
      store8(out, accumulate ? load8(out) + tile[i][0] : tile[i][0]);
      store8(out + 8, accumulate ? load8(out + 8) + tile[i][1] : tile[i][1]);
    }
    return;
  }
  float edge[MR][NR];  // a partial tile: only its valid part is written
  std::memcpy(edge, tile, sizeof edge);
  for (int i = 0; i < rows; ++i) {
    float* out = c + i * ldc;
    for (int j = 0; j < cols; ++j) out[j] = accumulate ? out[j] + edge[i][j] : edge[i][j];
  }
}

// C's rows are cut into blocks, its column panels into groups; a task is one (row block,
// panel group) pair.
struct Plan {
  int64_t row_block, row_blocks, groups;
  std::vector<int64_t> k_begin, k_end, b_offset;  // per B panel; b_offset has one more
  std::vector<int64_t> group_begin;               // first panel of each group, then the end
};

template <typename P, typename = void>
struct PacksBByRows : std::false_type {};
template <typename P>
struct PacksBByRows<P, std::enable_if_t<P::kPacksBByRows>> : std::true_type {};

template <typename P>
FASTFLOW_AVX2 void pack_b_rows(const P& p, const Plan& plan, int64_t k0, int64_t k1, float* b) {
  p.pack_b_rows(plan, k0, k1, b);
}

template <typename P>
FASTFLOW_AVX2 void pack_b_panels(const P& p, const Plan& plan, int64_t j0, int64_t j1, float* b) {
  for (int64_t j = j0; j < j1; ++j) {
    if (plan.k_end[j] <= plan.k_begin[j]) continue;
    p.pack_b(j * NR, std::min<int64_t>(NR, p.N - j * NR), plan.k_begin[j], plan.k_end[j],
             b + plan.b_offset[j]);
  }
}

// Rows [m0, m1) of C over panels [j0, j1); a_buffer holds MC·KC floats.
template <typename P>
FASTFLOW_AVX2 void compute_block(const P& p, const Plan& plan, const float* b, int64_t m0,
                                 int64_t m1, int64_t j0, int64_t j1, float* c, int64_t ldc,
                                 float* a_buffer) {
  for (int64_t j = j0; j < j1; ++j) {  // panels with nothing to add: zeros
    if (plan.k_end[j] > plan.k_begin[j]) continue;
    const int64_t n0 = j * NR, cols = std::min<int64_t>(NR, p.N - n0);
    for (int64_t m = m0; m < m1; ++m) std::fill(c + m * ldc + n0, c + m * ldc + n0 + cols, 0.0f);
  }
  for (int64_t k0 = 0; k0 < p.K; k0 += KC) {
    const int64_t kc = std::min(KC, p.K - k0);
    for (int64_t m = m0; m < m1; m += MR) {
      p.pack_a(m, std::min<int64_t>(MR, m1 - m), k0, kc, a_buffer + (m - m0) * kc);
    }
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t lo = std::max(k0, plan.k_begin[j]), hi = std::min(k0 + kc, plan.k_end[j]);
      if (lo >= hi) continue;
      const int64_t n0 = j * NR;
      const int cols = static_cast<int>(std::min<int64_t>(NR, p.N - n0));
      const float* b_slice = b + plan.b_offset[j] + (lo - plan.k_begin[j]) * NR;
      for (int64_t m = m0; m < m1; m += MR) {
        const int rows = static_cast<int>(std::min<int64_t>(MR, m1 - m));
        if (n0 >= p.n_end(m, m + rows)) continue;
        micro_kernel(hi - lo, a_buffer + (m - m0) * kc + (lo - k0) * MR, b_slice,
                     c + m * ldc + n0, ldc, rows, cols, lo > plan.k_begin[j]);
      }
    }
  }
}

// Work of a task, in multiply-adds (the staircase makes row blocks and panels uneven).
template <typename P>
int64_t task_cost(const P& p, const Plan& plan, int64_t m0, int64_t m1, int64_t g) {
  int64_t cost = 0;
  for (int64_t j = plan.group_begin[g]; j < plan.group_begin[g + 1]; ++j) {
    const int64_t depth = plan.k_end[j] - plan.k_begin[j];
    for (int64_t m = m0; m < m1; m += MR) {
      if (j * NR < p.n_end(m, std::min(m + MR, m1))) cost += depth * std::min<int64_t>(MR, m1 - m);
    }
  }
  return cost + (m1 - m0);  // a floor: empty tasks still cost a little
}

// Runs C = A·B (rows of C ldc apart). Multi-threaded through at::parallel_for when the
// product is big enough to pay for waking the threads.
template <typename P>
void run(const P& p, float* c, int64_t ldc) {
  if (p.M == 0 || p.N == 0) return;
  Plan plan;
  const int64_t panels = (p.N + NR - 1) / NR;
  plan.k_begin.resize(panels);
  plan.k_end.resize(panels);
  plan.b_offset.resize(panels + 1, 0);
  int64_t macs = 0;
  for (int64_t j = 0; j < panels; ++j) {
    p.k_range(j * NR, &plan.k_begin[j], &plan.k_end[j]);
    const int64_t depth = std::max<int64_t>(0, plan.k_end[j] - plan.k_begin[j]);
    plan.b_offset[j + 1] = plan.b_offset[j] + depth * NR;
    macs += depth * NR * p.M;
  }
  const int threads = macs < (int64_t(1) << 20) || at::in_parallel_region() ? 1 : at::get_num_threads();

  // Row blocks: at most MC rows, a multiple of MR, enough of them to share; when there are
  // fewer blocks than threads (a small batch), the panels are split into groups too.
  const int64_t micro_rows = (p.M + MR - 1) / MR;
  int64_t blocks = std::max<int64_t>((p.M + MC - 1) / MC, std::min<int64_t>(threads, micro_rows));
  plan.row_block = (micro_rows + blocks - 1) / blocks * MR;
  plan.row_blocks = (p.M + plan.row_block - 1) / plan.row_block;
  plan.groups = std::min<int64_t>(panels, (threads + plan.row_blocks - 1) / plan.row_blocks);
  // Groups of about equal B size (the panels' depths differ along the staircase).
  plan.group_begin.assign(1, 0);
  for (int64_t g = 1; g < plan.groups; ++g) {
    const int64_t target = plan.b_offset[panels] * g / plan.groups;
    plan.group_begin.push_back(std::max(
        plan.group_begin.back(),
        int64_t(std::lower_bound(plan.b_offset.begin(), plan.b_offset.end(), target) -
                plan.b_offset.begin())));
  }
  plan.group_begin.push_back(panels);

  const std::unique_ptr<float[]> b(new float[plan.b_offset[panels]]);
  const int64_t tasks = plan.row_blocks * plan.groups;
  // Threads take contiguous runs of tasks of about equal cost.
  std::vector<int64_t> cost_before(tasks + 1, 0);
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t m0 = (t / plan.groups) * plan.row_block;
    cost_before[t + 1] = cost_before[t] +
        task_cost(p, plan, m0, std::min(p.M, m0 + plan.row_block), t % plan.groups);
  }
  const auto work = [&](int64_t thread) {
    const int64_t lo = cost_before[tasks] * thread / threads,
                  hi = cost_before[tasks] * (thread + 1) / threads;
    const std::unique_ptr<float[]> a_buffer(new float[MC * KC]);
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t middle = (cost_before[t] + cost_before[t + 1]) / 2;
      if (middle < lo || middle >= hi) continue;
      const int64_t m0 = (t / plan.groups) * plan.row_block, g = t % plan.groups;
      compute_block(p, plan, b.get(), m0, std::min(p.M, m0 + plan.row_block),
                    plan.group_begin[g], plan.group_begin[g + 1], c, ldc, a_buffer.get());
    }
  };
  if constexpr (PacksBByRows<P>::value) {
    at::parallel_for(0, p.K, threads == 1 ? p.K : 1, [&](int64_t k0, int64_t k1) {
      pack_b_rows(p, plan, k0, k1, b.get());
    });
  } else {
    at::parallel_for(0, panels, threads == 1 ? panels : 1, [&](int64_t j0, int64_t j1) {
      pack_b_panels(p, plan, j0, j1, b.get());
    });
  }
  if (threads == 1) {
    work(0);
    return;
  }
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) work(t);
  });
}

}  // namespace fastflow::cpu::gemm
