// __nv_bfloat16 of the CPU emulation (tests/cuda_cpu): storage and CUDA's conversions,
// rounded as CUDA rounds them (to nearest even; a NaN becomes 0x7fff, CUDA's canonical one).
// No implicit conversions or arithmetic, as in torch's CUDA builds.
#pragma once

#include <cstdint>

#include "cuda_fp16.h"

struct __nv_bfloat16 {
  uint16_t __x;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  const uint32_t x = cuda_emu::float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fffu};
  const uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);  // carries into the exponent, up to inf
  return __nv_bfloat16{static_cast<uint16_t>(rounded >> 16)};
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 h) {
  return cuda_emu::bits_float(static_cast<uint32_t>(h.__x) << 16);
}
