// Float exp, tanh and log that the compiler can vectorize, and a dispatcher that runs a kernel
// body compiled for AVX2+FMA when the CPU has them. glibc's expf/tanhf are calls the
// vectorizer can't see through; these are branch-free polynomials (Cephes-style range
// reduction), within about 2e-7 relative of the correctly rounded results.
#pragma once

#include <bit>
#include <cmath>
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

// Natural log: exponent from the bits, Cephes' polynomial on the mantissa. For positive
// normal floats; 0 -> -inf, negative or NaN -> NaN, +inf -> +inf (subnormals are not
// handled: they give a finite, inexact result).
FASTFLOW_ALWAYS_INLINE float log_f32(float x) {
  const int32_t bits = std::bit_cast<int32_t>(x);
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  float m = std::bit_cast<float>((bits & 0x007fffff) | 0x3f000000);  // in [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  float y = p * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  const float result = m + y + 0.693359375f * e;
  constexpr float kInf = std::numeric_limits<float>::infinity();
  return x > 0.0f ? (x == kInf ? kInf : result)
                  : (x == 0.0f ? -kInf : std::numeric_limits<float>::quiet_NaN());
}

// The CPU kernels' math, the Math policy of the per-element formulas (../<op>_math.h): the
// vectorizable polynomials for float (also the math type of float16 and bfloat16), the C
// library for double.
struct VectorMath {
  static FASTFLOW_ALWAYS_INLINE float exp(float v) { return exp_f32(v); }
  static FASTFLOW_ALWAYS_INLINE double exp(double v) { return std::exp(v); }
  static FASTFLOW_ALWAYS_INLINE float tanh(float v) { return tanh_f32(v); }
  static FASTFLOW_ALWAYS_INLINE double tanh(double v) { return std::tanh(v); }
  static FASTFLOW_ALWAYS_INLINE float log(float v) { return log_f32(v); }
  static FASTFLOW_ALWAYS_INLINE double log(double v) { return std::log(v); }
};

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
