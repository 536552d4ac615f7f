// One-pass MADE / MAF sampling on CUDA: the CPU kernel's push form (../cpu/made_sample.cpp)
// in one persistent launch. A CTA owns a tile of kTile samples and runs the whole step loop
// for it; the running pre-activations of every layer live in shared memory (global scratch
// when they do not fit). Each finalized unit is pushed in chunks of kChunk positions: first
// the chunk's values for every sample, then every output position of the next layer adds
// the chunk's contributions in position order. An output position always belongs to the
// same thread, so no two threads add into one accumulator, and each accumulator receives
// its terms in the CPU kernel's order.
#include <type_traits>

#include "dtype.cuh"
#include "../made_sample_math.h"
#include "made_sample.cuh"

namespace fastflow::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 8;    // samples per CTA: each weight loaded once serves all of them
constexpr int kChunk = 32;  // kTile · kChunk = kThreads: one value per thread per chunk

// Products rounded before the add (no FMA contraction), as in the CPU kernel's build, so
// that both kernels round the same way.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

// An offset read from the plan, clamped into [0, high] (made_sample.cuh: the plan's values are
// not checked).
__device__ __forceinline__ int64_t clamped(int64_t offset, int64_t high) {
  return offset < 0 ? 0 : (offset > high ? high : offset);
}

// Rounded through the storage type, as the reference's tensors are.
template <typename T>
__device__ __forceinline__ opmath_t<T> round_to(opmath_t<T> v) {
  return to_opmath(from_opmath<T>(v));
}

// The rules' math (made_sample_math.h) on the device.
struct SampleMath : DeviceMath {
  template <typename T> static __device__ __forceinline__ T mul(T a, T b) { return mul_rn(a, b); }
};

template <typename T>
struct RoundTo {
  static __device__ __forceinline__ opmath_t<T> apply(opmath_t<T> v) { return round_to<T>(v); }
};

// acc[b, q] += chunk[b][j] · row_p[q] for the chunk's positions p = first + j (j ascending)
// and q in p's push range, skipping zero values as the CPU kernel does.
template <typename acc_t>
__device__ __forceinline__ void push_chunk(const acc_t* __restrict__ rows,
                                           const int64_t* __restrict__ ranges, int64_t width,
                                           int64_t first, int len, int samples,
                                           const acc_t (*chunk)[kChunk], acc_t* acc,
                                           int64_t acc_width) {
  for (int j = 0; j < len; ++j) {
    const int64_t p = first + j;
    const int64_t begin = clamped(ranges[2 * p], width), end = clamped(ranges[2 * p + 1], width);
    const acc_t* row = rows + p * width;
    // This thread's output positions are those ≡ threadIdx.x (mod kThreads).
    const int64_t shift = (threadIdx.x - begin % kThreads + kThreads) % kThreads;
    for (int64_t q = begin + shift; q < end; q += kThreads) {
      const acc_t w = row[q];
#pragma unroll
      for (int b = 0; b < kTile; ++b) {
        if (b >= samples) break;
        const acc_t h = chunk[b][j];
        if (h != acc_t(0)) acc[b * acc_width + q] += mul_rn(h, w);
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    made_sample_kernel(MadeSampleArgs a, T* __restrict__ values,
                       opmath_t<T>* __restrict__ log_terms, T* __restrict__ outputs,
                       opmath_t<T>* scratch) {
  using acc_t = opmath_t<T>;
  extern __shared__ __align__(16) unsigned char dynamic_shared[];
  __shared__ acc_t chunk_values[kTile][kChunk];
  __shared__ double chunk_terms[kTile][kChunk];
  __shared__ double log_term[kTile];

  const auto* noise = static_cast<const T*>(a.noise);
  const auto* weights = static_cast<const acc_t*>(a.weights);
  const auto* biases = static_cast<const acc_t*>(a.biases);
  const int64_t W = a.acc_width, L = a.num_layers, steps = a.steps;
  const int64_t out_offset = a.layers[L - 1].acc_offset, out_width = a.layers[L - 1].outputs;
  const int64_t per_dim = a.per_dim;
  const auto* contexts = static_cast<const T*>(a.contexts);
  acc_t* acc = scratch != nullptr ? scratch + static_cast<int64_t>(blockIdx.x) * kTile * W
                                  : reinterpret_cast<acc_t*>(dynamic_shared);
  const int64_t tiles = (a.samples + kTile - 1) / kTile;

  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t s0 = tile * kTile;
    const int n = static_cast<int>(a.samples - s0 < kTile ? a.samples - s0 : kTile);
    for (int64_t k = threadIdx.x; k < n * W; k += kThreads) {
      acc[k] = biases[k % W];
      if (contexts != nullptr) acc[k] += to_opmath(contexts[s0 * W + k]);
    }
    if (threadIdx.x < kTile) log_term[threadIdx.x] = 0.0;
    __syncthreads();

    for (int64_t t = 1; t <= steps; ++t) {
      // Hidden units ready at t − 1 are final: push them, lower layers first (a unit of layer
      // l + 1 ready at t − 1 may need units of layer l that became ready at t − 1).
      for (int64_t l = 0; l + 1 < L; ++l) {
        const int64_t* finalize = a.finalize + l * (steps + 2);
        const MadeLayer& from = a.layers[l];
        const MadeLayer& to = a.layers[l + 1];
        const int64_t p1 = clamped(finalize[t], from.outputs);
        for (int64_t c0 = clamped(finalize[t - 1], from.outputs); c0 < p1; c0 += kChunk) {
          const int len = static_cast<int>(p1 - c0 < kChunk ? p1 - c0 : kChunk);
          for (int k = threadIdx.x; k < n * len; k += kThreads) {
            const int b = k / len, j = k % len;
            const acc_t y = round_to<T>(acc[b * W + from.acc_offset + c0 + j]);
            chunk_values[b][j] =
                from.activated ? round_to<T>(activate<SampleMath>(a.activation, y)) : y;
            // Residual skips out of this layer: distinct positions per (b, j), and no other
            // thread touches the target layers' accumulators in this phase.
            for (int64_t m = l + 2; m < L; ++m) {
              if (a.layers[m].skip_source != l) continue;
              const MadeLayer& target = a.layers[m];
              acc[b * W + target.acc_offset + a.skip_positions[target.acc_offset + c0 + j]] += y;
            }
          }
          __syncthreads();
          push_chunk(weights + to.weight_offset, a.ranges + 2 * to.range_offset, to.outputs, c0,
                     len, n, chunk_values, acc + to.acc_offset, W);
          __syncthreads();
        }
      }
      // The dimensions of step t: their outputs are final now.
      const int64_t i1 = clamped(a.step_offsets[t], a.dims);
      for (int64_t c0 = clamped(a.step_offsets[t - 1], a.dims); c0 < i1; c0 += kChunk) {
        const int len = static_cast<int>(i1 - c0 < kChunk ? i1 - c0 : kChunk);
        for (int k = threadIdx.x; k < n * len; k += kThreads) {
          const int b = k / len, j = k % len;
          const int64_t i = c0 + j, d = a.dim_order[i];
          const acc_t e = to_opmath(noise[(s0 + b) * a.dims + d]);
          const acc_t* o = acc + b * W + out_offset + per_dim * i;
          const auto [v, term] =
              sample_dimension<SampleMath, RoundTo<T>>(a.rule, o, per_dim, e, a.rule_params);
          const T stored = from_opmath<T>(v);
          values[(s0 + b) * a.dims + d] = stored;
          chunk_values[b][j] = to_opmath(stored);
          chunk_terms[b][j] = term;
        }
        __syncthreads();
        // One thread per sample sums its terms in dimension order, as the CPU kernel.
        if (static_cast<int>(threadIdx.x) < n) {
          for (int j = 0; j < len; ++j) log_term[threadIdx.x] -= chunk_terms[threadIdx.x][j];
        }
        push_chunk(weights + a.layers[0].weight_offset, a.ranges, a.layers[0].outputs, c0, len, n,
                   chunk_values, acc + a.layers[0].acc_offset, W);
        __syncthreads();
      }
    }

    for (int64_t k = threadIdx.x; k < n * out_width; k += kThreads) {
      const int64_t b = k / out_width, p = k % out_width;
      outputs[(s0 + b) * out_width + a.out_order[p]] = from_opmath<T>(acc[b * W + out_offset + p]);
    }
    if (static_cast<int>(threadIdx.x) < n) {
      log_terms[s0 + threadIdx.x] = static_cast<acc_t>(log_term[threadIdx.x]);
    }
    __syncthreads();  // the next tile overwrites the accumulators and log terms
  }
}

struct LaunchShape {
  unsigned grid;
  size_t shared_bytes;   // dynamic shared memory: the accumulators, or 0
  size_t scratch_bytes;  // global scratch for the accumulators, or 0
};

// Accumulators in shared memory when they fit (opting in past 48 KiB), otherwise in global
// scratch; as many CTAs as can be resident (each loops over tiles), at most one per tile.
template <typename T>
cudaError_t launch_shape(const MadeSampleArgs& a, LaunchShape* shape) {
  const auto kernel = made_sample_kernel<T>;
  int device = 0, optin = 0, sms = 0, per_sm = 0;
  cudaFuncAttributes attributes{};
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  }
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  }
  if (err == cudaSuccess) err = cudaFuncGetAttributes(&attributes, kernel);
  if (err != cudaSuccess) return err;
  const size_t acc_bytes = static_cast<size_t>(kTile) * a.acc_width * sizeof(opmath_t<T>);
  const bool in_shared = acc_bytes + attributes.sharedSizeBytes <= static_cast<size_t>(optin);
  shape->shared_bytes = in_shared ? acc_bytes : 0;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(shape->shared_bytes));
  if (err == cudaSuccess) {
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads,
                                                        shape->shared_bytes);
  }
  if (err != cudaSuccess) return err;
  const int64_t tiles = (a.samples + kTile - 1) / kTile;
  const int64_t resident = static_cast<int64_t>(sms) * (per_sm > 0 ? per_sm : 1);
  shape->grid = static_cast<unsigned>(tiles < resident ? tiles : resident);
  shape->scratch_bytes = in_shared ? 0 : shape->grid * acc_bytes;
  return cudaSuccess;
}

}  // namespace

cudaError_t made_sample_scratch_bytes(const MadeSampleArgs& a, size_t* bytes) {
  *bytes = 0;
  if (a.samples == 0) return cudaSuccess;
  return dispatch_dtype(a.dtype, [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    LaunchShape shape{};
    const cudaError_t err = launch_shape<T>(a, &shape);
    *bytes = shape.scratch_bytes;
    return err;
  });
}

cudaError_t launch_made_sample(const MadeSampleArgs& a, void* values, void* log_terms,
                               void* outputs, void* scratch, cudaStream_t stream) {
  if (a.samples == 0) return cudaSuccess;
  return dispatch_dtype(a.dtype, [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    LaunchShape shape{};
    const cudaError_t err = launch_shape<T>(a, &shape);
    if (err != cudaSuccess) return err;
    if ((shape.scratch_bytes != 0) != (scratch != nullptr)) return cudaErrorInvalidValue;
    made_sample_kernel<T><<<shape.grid, kThreads, shape.shared_bytes, stream>>>(
        a, static_cast<T*>(values), static_cast<opmath_t<T>*>(log_terms),
        static_cast<T*>(outputs), static_cast<opmath_t<T>*>(scratch));
    return cudaGetLastError();
  });
}

}  // namespace fastflow::cuda
