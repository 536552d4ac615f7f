// Float exp and tanh that the compiler can vectorize, and a dispatcher that runs a kernel
// body compiled for AVX2+FMA when the CPU has them. glibc's expf/tanhf are calls the
// vectorizer can't see through; these are branch-free polynomials (Cephes-style range
// reduction), within about 2e-7 relative of the correctly rounded results.
#pragma once

#include <bit>
#include <cstdint>
#include <limits>

#define FASTFLOW_ALWAYS_INLINE inline __attribute__((always_inline))

namespace fastflow::cpu {

FASTFLOW_ALWAYS_INLINE float exp_f32(float x) {
  constexpr float kMax = 88.72283f, kMin = -87.33654f;  // the normal float range of exp
  const float clamped = x < kMin ? kMin : (x > kMax ? kMax : x);
  constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (clamped * 1.44269504088896341f + kShifter) - kShifter;
  const float r = (clamped - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = (p * r) * r + r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  const float result = p * scale;
  // Past the range: exp's overflow and underflow (NaN passes through the polynomial).
  return x > kMax ? std::numeric_limits<float>::infinity() : (x < kMin ? 0.0f : result);
}

FASTFLOW_ALWAYS_INLINE float tanh_f32(float x) {
  const float a = x < 0.0f ? -x : x;
  // |x| < 0.625: odd polynomial; beyond: 1 - 2 / (exp(2|x|) + 1), which saturates at 1.
  const float z = x * x;
  const float small =
      ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
        1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  const float large_abs = 1.0f - 2.0f / (exp_f32(2.0f * a) + 1.0f);
  const float large = x < 0.0f ? -large_abs : large_abs;
  return a < 0.625f ? small : large;
}

}  // namespace fastflow::cpu

// Defines `name(args...)` that runs `name##_body(args...)` compiled for AVX2+FMA when the
// CPU has them, else compiled for the baseline. The body must be FASTFLOW_ALWAYS_INLINE.
#define FASTFLOW_CPU_DISPATCH(name)                                                       \
  template <typename... Args>                                                             \
  __attribute__((target("avx2,fma"))) void name##_avx2(Args... args) {                    \
    name##_body(args...);                                                                 \
  }                                                                                       \
  template <typename... Args>                                                             \
  void name##_baseline(Args... args) {                                                    \
    name##_body(args...);                                                                 \
  }                                                                                       \
  template <typename... Args>                                                             \
  void name(Args... args) {                                                               \
    static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); \
    if (avx2) {                                                                           \
      name##_avx2(args...);                                                               \
    } else {                                                                              \
      name##_baseline(args...);                                                           \
    }                                                                                     \
  }
