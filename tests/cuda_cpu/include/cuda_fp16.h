// __half of the CPU emulation (tests/cuda_cpu): storage and CUDA's conversions, rounded as
// CUDA rounds them (to nearest even; a NaN becomes CUDA's canonical one, 0x7fff as a half,
// 0x7fffffff as a float; checked against the toolkit's headers by the tests). As in
// torch's CUDA builds (__CUDA_NO_HALF_CONVERSIONS__, __CUDA_NO_HALF_OPERATORS__), there are
// no implicit conversions and no arithmetic on __half.
#pragma once

#include <cstdint>
#include <cstring>

struct __half {
  uint16_t __x;
};

namespace cuda_emu {

inline uint32_t float_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  return x;
}

inline float bits_float(uint32_t x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

inline uint16_t float_to_half_bits(float f) {
  const uint32_t x = float_bits(f), magnitude = x & 0x7fffffffu;
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  if (magnitude > 0x7f800000u) return 0x7fffu;        // NaN
  if (magnitude >= 0x47800000u) return sign | 0x7c00u;  // 2^16 and above (and inf): inf
  const int exponent = static_cast<int>(magnitude >> 23) - 127;
  if (exponent < -25) return sign;  // below half the smallest subnormal: zero
  const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
  // Bits of the 24-bit mantissa below the half's last place: 2^(exponent − 10) for normal
  // halves, 2^−24 for subnormal ones.
  const int drop = exponent >= -14 ? 13 : -1 - exponent;
  uint32_t q = mantissa >> drop;
  const uint32_t rest = mantissa & ((1u << drop) - 1), tie = 1u << (drop - 1);
  if (rest > tie || (rest == tie && (q & 1u))) ++q;
  // q includes the hidden bit, so a carry out of the mantissa moves into the exponent
  // (up to inf); a subnormal q of 1024 is the smallest normal half.
  const uint32_t bits = exponent >= -14 ? (static_cast<uint32_t>(exponent + 14) << 10) + q : q;
  return static_cast<uint16_t>(sign | bits);
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0x1fu) {  // inf, or NaN: CUDA's canonical 0x7fffffff
    return bits_float(mantissa == 0 ? (sign | 0x7f800000u) : 0x7fffffffu);
  }
  if (exponent != 0) return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
  const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // 2^-24
  return sign ? -magnitude : magnitude;
}

}  // namespace cuda_emu

inline __half __float2half_rn(float f) { return __half{cuda_emu::float_to_half_bits(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __half2float(__half h) { return cuda_emu::half_bits_to_float(h.__x); }
