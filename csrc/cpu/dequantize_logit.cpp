// Dequantize-and-logit on the CPU (math: ../dequantize_logit_math.h): one pass per sample
// writes the logits and sums the log-determinant.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "../dequantize_logit.h"
#include "../dequantize_logit_math.h"
#include "vector_math.h"

namespace fastflow {
namespace {

template <typename scalar_t>
FASTFLOW_ALWAYS_INLINE void dequantize_logit_rows_body(const scalar_t* x, const scalar_t* noise,
                                                       at::opmath_type<scalar_t> c, scalar_t* y,
                                                       at::opmath_type<scalar_t>* sldj, int64_t n,
                                                       int64_t begin, int64_t end) {
  using opmath_t = at::opmath_type<scalar_t>;
  const opmath_t constant = softplus_constant(c);
  for (int64_t b = begin; b < end; ++b) {
    opmath_t sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = b * n; i < (b + 1) * n; ++i) {
      const auto out =
          dequantize_logit_forward<cpu::VectorMath>(opmath_t(x[i]), opmath_t(noise[i]), c, constant);
      y[i] = out.y;
      sum += out.ldj;
    }
    sldj[b] = sum;
  }
}
FASTFLOW_CPU_DISPATCH(dequantize_logit_rows)

std::tuple<at::Tensor, at::Tensor> dequantize_logit_cpu(const at::Tensor& x_in,
                                                        const at::Tensor& noise_in,
                                                        const at::Tensor& constraint) {
  check_dequantize_logit(x_in, noise_in, constraint);
  const at::Tensor x = x_in.contiguous(), noise = noise_in.contiguous();
  const int64_t batch = x.size(0), n = batch > 0 ? x.numel() / batch : 0;
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor sldj = at::empty({batch}, x.options().dtype(at::toOpMathType(x.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dequantize_logit", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const opmath_t c = constraint.item<opmath_t>();
    const auto* x_ptr = x.const_data_ptr<scalar_t>();
    const auto* noise_ptr = noise.const_data_ptr<scalar_t>();
    auto* y_ptr = y.mutable_data_ptr<scalar_t>();
    auto* sldj_ptr = sldj.mutable_data_ptr<opmath_t>();
    at::parallel_for(0, batch, std::max<int64_t>(1, 32768 / std::max<int64_t>(n, 1)),
                     [&](int64_t begin, int64_t end) {
                       dequantize_logit_rows(x_ptr, noise_ptr, c, y_ptr, sldj_ptr, n, begin, end);
                     });
  });
  return {y, sldj};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastflow, CPU, m) { m.impl("dequantize_logit", &dequantize_logit_cpu); }

}  // namespace fastflow
