// One-pass autoregressive sampling, one dimension of one sample at its step, and the hidden
// units' activation: the formulas, written once for the CPU and CUDA kernels (no torch
// headers; the plan and the kernels' loops: made_sample.h). The Triton kernel
// (fastflow/triton/made_sample.py) and the reference (fastflow/ops/made_sample.py) follow
// these line by line.
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace fastflow {

// The rules, by the ops' names. o: the dimension's final network outputs, in the order the
// model lays them out; e: its noise; params: the rule's constants (rule_params).
//   "bernoulli"         a MADE's logit o[0]: v = [e < sigmoid(o[0])]; term −log p(v | o[0])
//   "gaussian"          a MAF's Gaussian MADE, (μ, α): v = μ + e·exp(α); term α
//   "gaussian_inverse"  an IAF's slow direction, (μ, α): v = (e − μ)·exp(−α); term α
//   "zuko_affine_inverse"  zuko's MonotonicAffineTransform inverse, (shift, a), params
//                      [log slope]: ℓ = a / (1 + |a / log slope|), v = (e − shift) / exp(ℓ);
//                      term ℓ
//   "zuko_rqs_inverse"  zuko's MonotonicRQSTransform inverse, (widths[K], heights[K],
//                      derivatives[K − 1]), params [bound, log slope]: the spline's
//                      closed-form inverse; identity outside [−bound, bound]; term log f′(v)
//   "nflows_affine_inverse"  nflows' MaskedAffineAutoregressiveTransform inverse, (u, shift),
//                      params [epsilon]: s = softplus(u) + epsilon, v = (e − shift) / s;
//                      term log s
// The kernels subtract each term from the sample's log term: for "bernoulli" that sum is
// log p(v); for the inverse rules it is log |det ∂v/∂e|, the inverse's log-determinant, as
// zuko's and nflows' inverses give it.
enum class SampleRule : int {
  kBernoulli,
  kGaussian,
  kGaussianInverse,
  kZukoAffineInverse,
  kZukoRqsInverse,
  kNflowsAffineInverse,
};

// The hidden units' activation, by the ops' names: "relu", "leaky_relu" (slope 0.01), "elu"
// (α = 1), "silu", "tanh", "sigmoid" (torch's defaults for each).
enum class Activation : int { kRelu, kLeakyRelu, kElu, kSilu, kTanh, kSigmoid };

template <typename T>
struct SampledDimension {
  T value;          // fed back into the network and stored
  double log_term;  // subtracted from the sample's log term
};

// Math: exp, log, log1p, sqrt, tanh for T, and mul, a product rounded on its own (no FMA
// contraction, so that the CPU and CUDA kernels round alike).
template <typename Math, typename T>
FASTFLOW_HOST_DEVICE T activate(Activation activation, T x) {
  switch (activation) {
    case Activation::kRelu: return x < T(0) ? T(0) : x;
    case Activation::kLeakyRelu: return x < T(0) ? Math::mul(x, T(0.01)) : x;
    case Activation::kElu: return x > T(0) ? x : Math::exp(x) - T(1);
    case Activation::kSilu: return x / (T(1) + Math::exp(-x));
    case Activation::kTanh: return Math::tanh(x);
    case Activation::kSigmoid: return T(1) / (T(1) + Math::exp(-x));
  }
  return x;
}

// x / (1 + |x / limit|): zuko's soft clamp of unconstrained parameters into (−|limit|, |limit|).
template <typename T>
FASTFLOW_HOST_DEVICE T soft_clamp(T x, T limit) {
  const T r = x / limit;
  return x / (T(1) + (r < T(0) ? -r : r));
}

// zuko's MonotonicRQSTransform inverse at y: o holds K widths, K heights, K − 1 derivatives.
// Bin k is found by walking the knots (y lies in bin k when knot k < y <= knot k + 1, zuko's
// searchsorted); softmax sums in bin order as torch.cumsum does.
template <typename Math, typename T>
FASTFLOW_HOST_DEVICE SampledDimension<T> rqs_inverse(const T* o, int64_t bins, T y, T bound,
                                                     T log_slope) {
  const T* widths = o;
  const T* heights = o + bins;
  const T* derivatives = o + 2 * bins;
  const T limit = T(0.5) * log_slope;  // widths and heights: x / (1 + |2x / log slope|)
  T w_max = soft_clamp(widths[0], limit), h_max = soft_clamp(heights[0], limit);
  for (int64_t k = 1; k < bins; ++k) {
    const T w = soft_clamp(widths[k], limit), h = soft_clamp(heights[k], limit);
    w_max = w > w_max ? w : w_max;
    h_max = h > h_max ? h : h_max;
  }
  T w_sum = T(0), h_sum = T(0);
  for (int64_t k = 0; k < bins; ++k) {
    w_sum += Math::exp(soft_clamp(widths[k], limit) - w_max);
    h_sum += Math::exp(soft_clamp(heights[k], limit) - h_max);
  }
  // Knots: x_k = bound·(2·Σ_{j<k} softmax(widths)_j − 1), likewise y_k; derivatives at the
  // knots exp(d), 1 at both ends.
  T w_cum = T(0), h_cum = T(0);
  T x0 = -bound, y0 = -bound;
  if (!(y > y0)) return {y, 0.0};
  for (int64_t k = 0; k < bins; ++k) {
    w_cum += Math::exp(soft_clamp(widths[k], limit) - w_max) / w_sum;
    h_cum += Math::exp(soft_clamp(heights[k], limit) - h_max) / h_sum;
    const T x1 = bound * (T(2) * w_cum - T(1));
    const T y1 = bound * (T(2) * h_cum - T(1));
    if (y <= y1) {
      const T d0 = k == 0 ? T(1) : Math::exp(soft_clamp(derivatives[k - 1], log_slope));
      const T d1 = k == bins - 1 ? T(1) : Math::exp(soft_clamp(derivatives[k], log_slope));
      const T dy = y1 - y0, dx = x1 - x0;
      const T s = dy / dx;
      const T y_ = y - y0;
      const T bend = d0 + d1 - T(2) * s;
      const T a = dy * (s - d0) + y_ * bend;
      const T b = dy * d0 - y_ * bend;
      const T c = -s * y_;
      const T z = T(2) * c / (-b - Math::sqrt(b * b - T(4) * a * c));
      const T x = x0 + z * dx;
      // log f′(x) = log(s²·(2s·z(1 − z) + d0·(1 − z)² + d1·z²)) − 2·log(s + bend·z(1 − z)).
      const T zz = z * (T(1) - z);
      const T num = s * s * (T(2) * s * zz + d0 * (T(1) - z) * (T(1) - z) + d1 * z * z);
      const T den = s + bend * zz;
      return {x, static_cast<double>(Math::log(num)) - 2.0 * static_cast<double>(Math::log(den))};
    }
    x0 = x1;
    y0 = y1;
  }
  return {y, 0.0};
}

// Round::apply: a value through the model's storage dtype, as the reference's tensors round
// it. per_dim: the number of outputs o holds.
template <typename Math, typename Round, typename T>
FASTFLOW_HOST_DEVICE SampledDimension<T> sample_dimension(SampleRule rule, const T* o,
                                                          int64_t per_dim, T e,
                                                          const double* params) {
  switch (rule) {
    case SampleRule::kBernoulli: {
      const T logit = Round::apply(o[0]);
      const T p = Round::apply(T(1) / (T(1) + Math::exp(-logit)));
      const T v = e < p ? T(1) : T(0);
      // −log p(v | logit) = BCE-with-logits, in its stable form.
      const double l = logit;
      return {v, (l < 0.0 ? 0.0 : l) - l * v + log1p(exp(-fabs(l)))};
    }
    case SampleRule::kGaussian: {
      const T mu = Round::apply(o[0]), alpha = Round::apply(o[1]);
      return {mu + Round::apply(Math::mul(e, Math::exp(alpha))), alpha};
    }
    case SampleRule::kGaussianInverse: {
      const T mu = Round::apply(o[0]), alpha = Round::apply(o[1]);
      return {Round::apply(e - mu) * Math::exp(-alpha), alpha};
    }
    case SampleRule::kZukoAffineInverse: {
      const T shift = Round::apply(o[0]);
      const T log_scale = soft_clamp(Round::apply(o[1]), static_cast<T>(params[0]));
      return {Round::apply(e - shift) / Math::exp(log_scale), log_scale};
    }
    case SampleRule::kZukoRqsInverse: {
      const int64_t bins = (per_dim + 1) / 3;
      return rqs_inverse<Math>(o, bins, e, static_cast<T>(params[0]), static_cast<T>(params[1]));
    }
    case SampleRule::kNflowsAffineInverse: {
      const T u = Round::apply(o[0]), shift = Round::apply(o[1]);
      // torch's softplus: u above 20 is returned as is.
      const T scale = (u > T(20) ? u : Math::log1p(Math::exp(u))) + static_cast<T>(params[0]);
      return {Round::apply(e - shift) / scale, Math::log(scale)};
    }
  }
  return {e, 0.0};
}

}  // namespace fastflow
