// Image affine coupling (multi-scale RealNVP's CouplingLayer): which elements change, and which
// conditioner channel changes them. Shared by the CPU and CUDA kernels (no torch headers).
//
// x is [B, C, H, W]; the conditioner output st is [B, 2·Cc, H, W] (s = st[:, :Cc],
// t = st[:, Cc:]) and the rescale weight has Cc entries.
//   checkerboard (Cc = C): pixel (h, w) is kept where the reference checkerboard_mask is 1:
//     (h + w) odd, or even with reverse_mask; every channel c is changed by channel c.
//   channel-wise (Cc = C/2): one half of the channels is kept whole (the first half with
//     reverse_mask, else the second); channel c of the other half is changed by channel
//     c − (start of that half).
// The math of a changed element: image_coupling_math.h.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace fastflow {

struct ImageCouplingGeometry {
  int64_t batch, channels, cond_channels, height, width;
  bool channel_wise, reverse_mask;
};

// The conditioner channel that changes channel c of x, or -1 for a channel kept whole.
FASTFLOW_HOST_DEVICE int64_t conditioner_channel(const ImageCouplingGeometry& g, int64_t c) {
  if (!g.channel_wise) return c;
  const int64_t first_changed = g.reverse_mask ? g.cond_channels : 0;
  const int64_t cc = c - first_changed;
  return cc >= 0 && cc < g.cond_channels ? cc : -1;
}

// 1 where the checkerboard changes pixel (h, w) (always 1 for channel-wise coupling).
template <typename T>
FASTFLOW_HOST_DEVICE T changed_pixel(const ImageCouplingGeometry& g, int64_t h, int64_t w) {
  if (g.channel_wise) return T(1);
  const int64_t kept_parity = g.reverse_mask ? 0 : 1;
  return ((h + w) & 1) == kept_parity ? T(0) : T(1);
}

}  // namespace fastflow
