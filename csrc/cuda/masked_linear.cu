// Masked linear CUDA kernels (math and the degree plan: ../masked_linear.h): classic tiled
// matrix products through shared memory. One block of 16x16 threads per output tile; each
// thread owns a register micro-tile whose rows and columns are interleaved with stride 16,
// so that a warp's shared-memory reads and global stores are consecutive. The reduction runs
// in kBK-wide steps, each staged in shared memory (in the accumulation type).
//
//   forward  tile of y [batch rows, outputs], reducing over the inputs;
//   grad_x   tile of dX [batch rows, inputs], reducing over the outputs;
//   grad_W   tile of dW [outputs, inputs], reducing over the batch.
//
// The mask is applied as the weight is staged (never W⊙M in global memory), one of two ways:
//   matrix  W·M per element, every tile computed; dW is multiplied by M as it is stored;
//   degree  tiles run over sorted coordinates (sorted row r is weight row out_order[r],
//           sorted column c weight column in_order[c]; loads and stores gather and scatter
//           through them), where row r sees exactly the columns c < row_prefix[r] and
//           row_prefix is non-decreasing: a staircase. The all-zero part is skipped by the
//           reduction bounds, and the c < row_prefix[r] test is made only on the steps that
//           straddle the staircase:
//     forward  sorted rows [r0, r1) need only the inputs c < row_prefix[r1 − 1]; those below
//              row_prefix[r0] are seen by every row;
//     grad_x   sorted columns [c0, c1) get contributions only from the rows with
//              row_prefix[r] > c0 (a suffix, found by binary search); rows with
//              row_prefix[r] ≥ c1 see the whole tile;
//     grad_W   a tile with c0 ≥ row_prefix[r1 − 1] is all masked: zeros, no reduction.
#include <cstdint>
#include <type_traits>

#include "../dispatch_flags.h"
#include "dtype.cuh"
#include "masked_linear.cuh"

namespace fastflow::cuda {
namespace {

constexpr int kSide = 16;                 // threads per tile side
constexpr int kThreads = kSide * kSide;
constexpr int kBK = 16;                   // reduction step

// Output tile side: 64 (4x4 values per thread); 32 for double, whose values take twice the
// registers and shared memory.
template <typename T> struct TileSide { static constexpr int value = 64; };
template <> struct TileSide<double> { static constexpr int value = 32; };

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ constexpr int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// The weight and its mask in the tiles' coordinates: sorted ones in the degree form, the
// weight's own in the matrix form.
template <typename T, bool kDegree>
struct Layer {
  const T* weight;
  const T* mask;
  const int64_t* in_order;
  const int64_t* out_order;
  const int64_t* row_prefix;
  int64_t in_features;

  __device__ int64_t in(int64_t c) const {
    if constexpr (kDegree) return in_order[c]; else return c;
  }
  __device__ int64_t out(int64_t r) const {
    if constexpr (kDegree) return out_order[r]; else return r;
  }
  // How many columns row r sees (in the matrix form all of them).
  __device__ int64_t prefix(int64_t r) const {
    if constexpr (kDegree) return row_prefix[r]; else return in_features;
  }
  // W⊙M at (r, c), except that the degree form leaves the c < prefix(r) test to the caller
  // (made only where a tile straddles the staircase).
  __device__ opmath_t<T> weight_at(int64_t r, int64_t c) const {
    const int64_t offset = out(r) * in_features + in(c);
    if constexpr (kDegree) {
      return to_opmath(weight[offset]);
    } else {
      return to_opmath(weight[offset]) * to_opmath(mask[offset]);
    }
  }
  // v⊙M at (r, c).
  __device__ opmath_t<T> masked(int64_t r, int64_t c, opmath_t<T> v) const {
    if constexpr (kDegree) {
      return c < row_prefix[r] ? v : opmath_t<T>(0);
    } else {
      return v * to_opmath(mask[out(r) * in_features + in(c)]);
    }
  }
};

template <typename T, bool kDegree>
__device__ Layer<T, kDegree> layer(const MaskedLinearArgs& a) {
  return {static_cast<const T*>(a.weight), static_cast<const T*>(a.mask), a.in_order,
          a.out_order, a.row_prefix, a.in_features};
}

// One reduction step of both operands; the extra column breaks the bank conflicts of the
// transposing stores.
template <typename acc_t, int kM, int kN>
struct Stage {
  acc_t a[kBK][kM + 1];
  acc_t b[kBK][kN + 1];
};

// acc[i][j] += Σ_{k_begin ≤ k < k_end} A(ty + 16i, k)·B(k, tx + 16j) over this thread's
// micro-tile. load_a(i, k) and load_b(k, j) read one element of the operands given in tile
// coordinates; they check i and j against the matrix bounds, k < k_end is checked here.
// kAAlongK / kBAlongK: consecutive threads stage consecutive k (the operand is contiguous
// along k in memory), else consecutive i / j. k_begin and k_end must be the same in every
// thread of the block (the loop has barriers).
template <bool kAAlongK, bool kBAlongK, typename acc_t, int kM, int kN, typename LoadA,
          typename LoadB>
__device__ __forceinline__ void accumulate(acc_t (&acc)[kM / kSide][kN / kSide],
                                           Stage<acc_t, kM, kN>& stage, int64_t k_begin,
                                           int64_t k_end, LoadA load_a, LoadB load_b) {
  const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
    for (int e = threadIdx.x; e < kM * kBK; e += kThreads) {
      const int i = kAAlongK ? e / kBK : e % kM;
      const int kk = kAAlongK ? e % kBK : e / kM;
      stage.a[kk][i] = k0 + kk < k_end ? load_a(i, k0 + kk) : acc_t(0);
    }
    for (int e = threadIdx.x; e < kN * kBK; e += kThreads) {
      const int j = kBAlongK ? e / kBK : e % kN;
      const int kk = kBAlongK ? e % kBK : e / kN;
      stage.b[kk][j] = k0 + kk < k_end ? load_b(k0 + kk, j) : acc_t(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      acc_t a[kM / kSide], b[kN / kSide];
#pragma unroll
      for (int i = 0; i < kM / kSide; ++i) a[i] = stage.a[kk][ty + kSide * i];
#pragma unroll
      for (int j = 0; j < kN / kSide; ++j) b[j] = stage.b[kk][tx + kSide * j];
#pragma unroll
      for (int i = 0; i < kM / kSide; ++i) {
#pragma unroll
        for (int j = 0; j < kN / kSide; ++j) acc[i][j] += a[i] * b[j];
      }
    }
    __syncthreads();  // the next step overwrites the stage
  }
}

// store(m, n, value) for each element of this thread's micro-tile (the tile at (m0, n0), as
// accumulate lays it out) that lies inside [0, m_end) x [0, n_end).
template <typename acc_t, int kM, int kN, typename Store>
__device__ __forceinline__ void store_tile(const acc_t (&acc)[kM / kSide][kN / kSide],
                                           int64_t m0, int64_t m_end, int64_t n0, int64_t n_end,
                                           Store store) {
  const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
#pragma unroll
  for (int i = 0; i < kM / kSide; ++i) {
    const int64_t m = m0 + ty + kSide * i;
    if (m >= m_end) continue;
#pragma unroll
    for (int j = 0; j < kN / kSide; ++j) {
      const int64_t n = n0 + tx + kSide * j;
      if (n < n_end) store(m, n, acc[i][j]);
    }
  }
}

// The first r in [0, n) with sorted[r] > value, n if none (sorted non-decreasing).
__device__ int64_t first_above(const int64_t* sorted, int64_t n, int64_t value) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (sorted[mid] > value) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// Block (bx, by): batch rows [bx·kM, ...) x sorted outputs [by·kN, ...) of y.
template <typename T, bool kDegree>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(MaskedLinearArgs a, const T* __restrict__ bias, T* __restrict__ y) {
  using acc_t = opmath_t<T>;
  constexpr int kM = TileSide<T>::value, kN = kM;
  __shared__ Stage<acc_t, kM, kN> stage;
  const Layer<T, kDegree> w = layer<T, kDegree>(a);
  const T* x = static_cast<const T*>(a.x);
  const int64_t b0 = static_cast<int64_t>(blockIdx.x) * kM;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kN;
  const int64_t rows = a.out_features;
  const auto load_x = [&](int i, int64_t c) {
    return b0 + i < a.batch ? to_opmath(x[(b0 + i) * a.x_row + w.in(c)]) : acc_t(0);
  };
  const auto load_w = [&](int64_t c, int j) {
    return r0 + j < rows ? w.weight_at(r0 + j, c) : acc_t(0);
  };
  acc_t acc[kM / kSide][kN / kSide] = {};
  if constexpr (kDegree) {
    // Whole steps every row of the tile sees, unmasked; then the staircase up to what the
    // tile's last row sees. Inputs past that are never loaded.
    const int64_t seen_by_all = w.prefix(r0) / kBK * kBK;
    const int64_t seen_by_any = w.prefix(min64(r0 + kN, rows) - 1);
    accumulate<true, true>(acc, stage, 0, seen_by_all, load_x, load_w);
    accumulate<true, true>(acc, stage, seen_by_all, seen_by_any, load_x,
                           [&](int64_t c, int j) {
                             return r0 + j < rows && c < w.prefix(r0 + j) ? w.weight_at(r0 + j, c)
                                                                         : acc_t(0);
                           });
  } else {
    accumulate<true, true>(acc, stage, 0, a.in_features, load_x, load_w);
  }
  store_tile<acc_t, kM, kN>(acc, b0, a.batch, r0, rows, [&](int64_t b, int64_t r, acc_t v) {
    const int64_t n = w.out(r);
    y[b * rows + n] = from_opmath<T>(bias != nullptr ? v + to_opmath(bias[n]) : v);
  });
}

// Block (bx, by): batch rows [bx·kM, ...) x sorted inputs [by·kN, ...) of dX = dY·(W⊙M).
template <typename T, bool kDegree>
__global__ void __launch_bounds__(kThreads)
    grad_x_kernel(MaskedLinearArgs a, const T* __restrict__ grad_y, int64_t grad_y_row,
                  T* __restrict__ grad_x) {
  using acc_t = opmath_t<T>;
  constexpr int kM = TileSide<T>::value, kN = kM;
  __shared__ Stage<acc_t, kM, kN> stage;
  const Layer<T, kDegree> w = layer<T, kDegree>(a);
  const int64_t b0 = static_cast<int64_t>(blockIdx.x) * kM;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kN;
  const int64_t rows = a.out_features, cols = a.in_features;
  const auto load_grad_y = [&](int i, int64_t r) {
    return b0 + i < a.batch ? to_opmath(grad_y[(b0 + i) * grad_y_row + w.out(r)]) : acc_t(0);
  };
  const auto load_w = [&](int64_t r, int j) {
    return c0 + j < cols ? w.weight_at(r, c0 + j) : acc_t(0);
  };
  acc_t acc[kM / kSide][kN / kSide] = {};
  if constexpr (kDegree) {
    // Rows before first_row see none of the tile's columns; from full_row on they see all
    // of them. The staircase between is rounded up to whole steps (clamped to the rows).
    const int64_t first_row = first_above(w.row_prefix, rows, c0);
    const int64_t full_row = first_above(w.row_prefix, rows, min64(c0 + kN, cols) - 1);
    const int64_t staircase_end =
        min64(rows, first_row + ceil_div(full_row - first_row, kBK) * kBK);
    accumulate<true, false>(acc, stage, first_row, staircase_end, load_grad_y,
                            [&](int64_t r, int j) {
                              const int64_t c = c0 + j;
                              return c < cols && c < w.prefix(r) ? w.weight_at(r, c) : acc_t(0);
                            });
    accumulate<true, false>(acc, stage, staircase_end, rows, load_grad_y, load_w);
  } else {
    accumulate<true, false>(acc, stage, 0, rows, load_grad_y, load_w);
  }
  store_tile<acc_t, kM, kN>(acc, b0, a.batch, c0, cols, [&](int64_t b, int64_t c, acc_t v) {
    grad_x[b * cols + w.in(c)] = from_opmath<T>(v);
  });
}

// Block (bx, by): sorted outputs [bx·kM, ...) x sorted inputs [by·kN, ...) of
// dW = (dYᵀ·X)⊙M, every entry written.
template <typename T, bool kDegree>
__global__ void __launch_bounds__(kThreads)
    grad_weight_kernel(MaskedLinearArgs a, const T* __restrict__ grad_y, int64_t grad_y_row,
                       T* __restrict__ grad_weight) {
  using acc_t = opmath_t<T>;
  constexpr int kM = TileSide<T>::value, kN = kM;
  __shared__ Stage<acc_t, kM, kN> stage;
  const Layer<T, kDegree> w = layer<T, kDegree>(a);
  const T* x = static_cast<const T*>(a.x);
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kM;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kN;
  const int64_t rows = a.out_features, cols = a.in_features;
  // A tile no row of which sees column c0 is all masked: an empty reduction, zeros stored.
  const int64_t batch_end = c0 < w.prefix(min64(r0 + kM, rows) - 1) ? a.batch : 0;
  acc_t acc[kM / kSide][kN / kSide] = {};
  accumulate<false, false>(
      acc, stage, 0, batch_end,
      [&](int i, int64_t b) {
        return r0 + i < rows ? to_opmath(grad_y[b * grad_y_row + w.out(r0 + i)]) : acc_t(0);
      },
      [&](int64_t b, int j) {
        return c0 + j < cols ? to_opmath(x[b * a.x_row + w.in(c0 + j)]) : acc_t(0);
      });
  store_tile<acc_t, kM, kN>(acc, r0, rows, c0, cols, [&](int64_t r, int64_t c, acc_t v) {
    grad_weight[w.out(r) * cols + w.in(c)] = from_opmath<T>(w.masked(r, c, v));
  });
}

template <typename T>
dim3 grid_for(int64_t tile_rows, int64_t tile_cols) {
  constexpr int kTile = TileSide<T>::value;
  return dim3(static_cast<unsigned>(ceil_div(tile_rows, kTile)),
              static_cast<unsigned>(ceil_div(tile_cols, kTile)));
}

}  // namespace

cudaError_t launch_masked_linear_forward(const MaskedLinearArgs& a, const void* bias, void* y,
                                         cudaStream_t stream) {
  if (a.batch == 0 || a.out_features == 0) return cudaSuccess;  // y is empty
  dispatch_dtype(a.dtype, [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    dispatch_flag(a.degree, [&](auto degree) {
      forward_kernel<T, decltype(degree)::value>
          <<<grid_for<T>(a.batch, a.out_features), kThreads, 0, stream>>>(
              a, static_cast<const T*>(bias), static_cast<T*>(y));
    });
  });
  return cudaGetLastError();
}

cudaError_t launch_masked_linear_backward(const MaskedLinearArgs& a, const void* grad_y,
                                          int64_t grad_y_row, void* grad_x, void* grad_weight,
                                          cudaStream_t stream) {
  dispatch_dtype(a.dtype, [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    dispatch_flag(a.degree, [&](auto degree) {
      constexpr bool kDegree = decltype(degree)::value;
      // With no outputs the reduction is empty: grad_x is still written (zeros).
      if (grad_x != nullptr && a.batch > 0 && a.in_features > 0) {
        grad_x_kernel<T, kDegree><<<grid_for<T>(a.batch, a.in_features), kThreads, 0, stream>>>(
            a, static_cast<const T*>(grad_y), grad_y_row, static_cast<T*>(grad_x));
      }
      // With batch 0 the reduction is empty: grad_weight is still written (zeros).
      if (a.out_features > 0 && a.in_features > 0) {
        grad_weight_kernel<T, kDegree>
            <<<grid_for<T>(a.out_features, a.in_features), kThreads, 0, stream>>>(
                a, static_cast<const T*>(grad_y), grad_y_row, static_cast<T*>(grad_weight));
      }
    });
  });
  return cudaGetLastError();
}

}  // namespace fastflow::cuda
