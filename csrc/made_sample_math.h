// One-pass MADE / MAF sampling, one dimension of one sample at its step: the rules' formulas,
// written once for the CPU and CUDA kernels (no torch headers; the plan and the kernels'
// loops: made_sample.h).
#pragma once

#include <cmath>

#include "host_device.h"

namespace fastflow {

// The rules, by the ops' names: "bernoulli" (a MADE's logits), "gaussian" (a MAF's Gaussian
// MADE: x = μ + e·exp(α)), "gaussian_inverse" (an IAF's slow direction: x = (e − μ)·exp(−α)).
enum class SampleRule : int { kBernoulli, kGaussian, kGaussianInverse };

template <typename T>
struct SampledDimension {
  T value;          // fed back into the network and stored
  double log_term;  // subtracted from the sample's log term: −log p(v | logit), or α
};

// o: the dimension's final network outputs (its logit; or μ, α), e: its noise. Math: exp
// for T, and mul, a product rounded on its own (no FMA contraction, so that the CPU and CUDA
// kernels round alike). Round::apply: a value through the model's storage dtype, as the
// reference's tensors round it.
template <typename Math, typename Round, typename T>
FASTFLOW_HOST_DEVICE SampledDimension<T> sample_dimension(SampleRule rule, const T* o, T e) {
  if (rule == SampleRule::kBernoulli) {
    const T logit = Round::apply(o[0]);
    const T p = Round::apply(T(1) / (T(1) + Math::exp(-logit)));
    const T v = e < p ? T(1) : T(0);
    // −log p(v | logit) = BCE-with-logits, in its stable form.
    const double l = logit;
    return {v, (l < 0.0 ? 0.0 : l) - l * v + log1p(exp(-fabs(l)))};
  }
  const T mu = Round::apply(o[0]);
  const T alpha = Round::apply(o[1]);
  if (rule == SampleRule::kGaussian) {
    return {mu + Round::apply(Math::mul(e, Math::exp(alpha))), alpha};
  }
  return {Round::apply(e - mu) * Math::exp(-alpha), alpha};
}

}  // namespace fastflow
