// squeeze_2x2 CUDA kernel: one thread per output element (coalesced writes, gathered
// reads), grid-stride loop, 32-bit index math whenever the tensors allow it.
#include <cstdint>
#include <type_traits>

#include "../squeeze_2x2_index.h"
#include "squeeze_2x2.cuh"

namespace fastflow::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

template <typename bits_t, typename index_t, bool kReverse, bool kAltOrder>
__global__ void __launch_bounds__(kThreads)
    squeeze_2x2_kernel(const bits_t* __restrict__ x, bits_t* __restrict__ out, index_t channels,
                       index_t h, index_t w, index_t s0, index_t s1, index_t s2, index_t s3,
                       index_t total) {
  const index_t step = static_cast<index_t>(gridDim.x) * kThreads;
  for (index_t idx = static_cast<index_t>(blockIdx.x) * kThreads + threadIdx.x; idx < total;
       idx += step) {
    index_t src;
    if constexpr (kReverse) {
      // idx walks L[B, C, 2h, 2w]; read S[b, sc, y/2, x/2].
      const index_t col = idx % (2 * w);
      index_t t = idx / (2 * w);
      const index_t row = t % (2 * h);
      t /= 2 * h;
      const index_t c = t % channels, b = t / channels;
      const index_t sc = squeezed_channel<index_t>(c, row & 1, col & 1, channels, kAltOrder);
      src = b * s0 + sc * s1 + (row >> 1) * s2 + (col >> 1) * s3;
    } else {
      // idx walks S[B, 4C, h, w]; read L[b, c, 2i + di, 2j + dj].
      const index_t j = idx % w;
      index_t t = idx / w;
      const index_t i = t % h;
      t /= h;
      const index_t sc = t % (4 * channels), b = t / (4 * channels);
      index_t c, di, dj;
      unsqueezed_channel<index_t>(sc, channels, kAltOrder, c, di, dj);
      src = b * s0 + c * s1 + (2 * i + di) * s2 + (2 * j + dj) * s3;
    }
    out[idx] = x[src];
  }
}

template <typename bits_t, typename index_t, bool kReverse, bool kAltOrder>
cudaError_t launch_typed(const Squeeze2x2Args& a, cudaStream_t stream) {
  const int64_t total = a.batch * 4 * a.channels * a.height * a.width;
  const int64_t blocks_needed = (total + kThreads - 1) / kThreads;
  // Enough blocks to fill any current GPU; the grid-stride loop covers the rest.
  const unsigned blocks =
      static_cast<unsigned>(blocks_needed < kMaxBlocks ? blocks_needed : kMaxBlocks);
  squeeze_2x2_kernel<bits_t, index_t, kReverse, kAltOrder><<<blocks, kThreads, 0, stream>>>(
      static_cast<const bits_t*>(a.x), static_cast<bits_t*>(a.out),
      static_cast<index_t>(a.channels), static_cast<index_t>(a.height),
      static_cast<index_t>(a.width), static_cast<index_t>(a.x_stride[0]),
      static_cast<index_t>(a.x_stride[1]), static_cast<index_t>(a.x_stride[2]),
      static_cast<index_t>(a.x_stride[3]), static_cast<index_t>(total));
  return cudaGetLastError();
}

template <typename bits_t, typename index_t>
cudaError_t launch_for_mode(const Squeeze2x2Args& a, cudaStream_t stream) {
  if (a.reverse) {
    return a.alt_order ? launch_typed<bits_t, index_t, true, true>(a, stream)
                       : launch_typed<bits_t, index_t, true, false>(a, stream);
  }
  return a.alt_order ? launch_typed<bits_t, index_t, false, true>(a, stream)
                     : launch_typed<bits_t, index_t, false, false>(a, stream);
}

// Whether every index the kernel forms fits in 32 bits: the output indices (plus one
// grid stride, which the loop adds before it stops) and the input's furthest element
// (strides can exceed the output size for sliced inputs).
bool fits_int32(const Squeeze2x2Args& a) {
  const int64_t limit = INT32_MAX;
  const int64_t total = a.batch * 4 * a.channels * a.height * a.width;
  // Input extents along each stride: B, then the channels / rows / cols of the input.
  const int64_t in_c = a.reverse ? 4 * a.channels : a.channels;
  const int64_t in_h = a.reverse ? a.height : 2 * a.height;
  const int64_t in_w = a.reverse ? a.width : 2 * a.width;
  const int64_t furthest = (a.batch - 1) * a.x_stride[0] + (in_c - 1) * a.x_stride[1] +
                           (in_h - 1) * a.x_stride[2] + (in_w - 1) * a.x_stride[3];
  return total + kMaxBlocks * kThreads < limit && furthest < limit;
}

template <typename bits_t>
cudaError_t launch_for_bits(const Squeeze2x2Args& a, cudaStream_t stream) {
  return fits_int32(a) ? launch_for_mode<bits_t, int32_t>(a, stream)
                       : launch_for_mode<bits_t, int64_t>(a, stream);
}

}  // namespace

cudaError_t launch_squeeze_2x2(const Squeeze2x2Args& args, cudaStream_t stream) {
  switch (args.element_size) {
    case 2: return launch_for_bits<uint16_t>(args, stream);
    case 4: return launch_for_bits<uint32_t>(args, stream);
    case 8: return launch_for_bits<uint64_t>(args, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace fastflow::cuda
