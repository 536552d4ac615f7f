// Index map of squeeze_2x2, shared by the CPU and CUDA kernels (no torch headers).
//
// A squeeze pairs a "full" tensor L[B, C, 2h, 2w] with a "squeezed" tensor
// S[B, 4C, h, w]: S[b, squeezed_channel(c, di, dj), i, j] == L[b, c, 2i + di, 2j + dj].
// Forward reads L and writes S; reverse reads S and writes L.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace fastflow {

// Default order (the multi-scale RealNVP's view/permute): channel 4c + 2di + dj.
// alt_order (the multi-scale RealNVP's stride-2 conv with a permutation weight): channel k*C + c,
// where the sub-pixel k = 0, 1, 2, 3 is (di, dj) = (0,0), (1,1), (0,1), (1,0).
template <typename index_t>
FASTFLOW_HOST_DEVICE index_t squeezed_channel(index_t c, index_t di, index_t dj,
                                              index_t channels, bool alt_order) {
  if (alt_order) {
    const index_t k = di | ((di ^ dj) << 1);
    return k * channels + c;
  }
  return 4 * c + 2 * di + dj;
}

// The inverse of squeezed_channel: the full-tensor channel c and sub-pixel (di, dj)
// of squeezed channel sc.
template <typename index_t>
FASTFLOW_HOST_DEVICE void unsqueezed_channel(index_t sc, index_t channels, bool alt_order,
                                             index_t& c, index_t& di, index_t& dj) {
  if (alt_order) {
    const index_t k = sc / channels;
    c = sc - k * channels;
    di = k & 1;
    dj = (k ^ (k >> 1)) & 1;
  } else {
    c = sc >> 2;
    di = (sc >> 1) & 1;
    dj = sc & 1;
  }
}

}  // namespace fastflow
