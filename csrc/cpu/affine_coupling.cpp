// Vector affine coupling on the CPU (math: ../affine_coupling_math.h): one pass over each
// row reads x, s and t once and writes y and the row's logdet. Rows run in parallel; each
// row's loop is vectorized (vector_math.h), with AVX2 where the CPU has it.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <algorithm>
#include <tuple>

#include "../affine_coupling.h"
#include "../affine_coupling_math.h"
#include "../dispatch_flags.h"
#include "vector_math.h"

namespace fastflow {
namespace {

// Rows of x, s, t (each row contiguous, any row stride) and the mask.
template <typename scalar_t>
struct CouplingInputs {
  const scalar_t* x;
  const scalar_t* s;
  const scalar_t* t;
  const scalar_t* mask;
  int64_t x_row, s_row, t_row, dim;
};

template <typename scalar_t>
CouplingInputs<scalar_t> coupling_inputs(const at::Tensor& x, const at::Tensor& s,
                                         const at::Tensor& t, const at::Tensor& mask) {
  return {x.const_data_ptr<scalar_t>(), s.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(),
          mask.const_data_ptr<scalar_t>(), x.stride(0), s.stride(0), t.stride(0), x.size(1)};
}

template <typename scalar_t, typename Tanh, typename Reverse>
FASTFLOW_ALWAYS_INLINE void coupling_forward_rows_body(
    Tanh, Reverse, CouplingInputs<scalar_t> in, scalar_t* y, at::opmath_type<scalar_t>* logdet,
    int64_t begin, int64_t end) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t b = begin; b < end; ++b) {
    const scalar_t* x = in.x + b * in.x_row;
    const scalar_t* s = in.s + b * in.s_row;
    const scalar_t* t = in.t + b * in.t_row;
    scalar_t* y_row = y + b * in.dim;
    opmath_t sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t d = 0; d < in.dim; ++d) {
      const auto out = affine_coupling_forward<Tanh::value, Reverse::value, cpu::VectorMath>(
          opmath_t(x[d]), opmath_t(s[d]), opmath_t(t[d]), opmath_t(in.mask[d]));
      y_row[d] = out.y;
      sum += out.s_masked;
    }
    logdet[b] = Reverse::value ? -sum : sum;
  }
}
FASTFLOW_CPU_DISPATCH(coupling_forward_rows)

// Gradients: grad_x contiguous; grad_s and grad_t with their own row strides (two halves of
// one [B, 2D] tensor for the packed op).
template <typename scalar_t>
struct CouplingGrads {
  const scalar_t* grad_y;
  const at::opmath_type<scalar_t>* grad_logdet;
  int64_t grad_y_row, grad_logdet_stride;
  scalar_t* grad_x;
  scalar_t* grad_s;
  scalar_t* grad_t;
  int64_t grad_s_row, grad_t_row;
};

template <typename scalar_t, typename Tanh, typename Reverse>
FASTFLOW_ALWAYS_INLINE void coupling_backward_rows_body(
    Tanh, Reverse, CouplingInputs<scalar_t> in, CouplingGrads<scalar_t> g, int64_t begin,
    int64_t end) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t b = begin; b < end; ++b) {
    const scalar_t* x = in.x + b * in.x_row;
    const scalar_t* s = in.s + b * in.s_row;
    const scalar_t* t = in.t + b * in.t_row;
    const scalar_t* grad_y = g.grad_y + b * g.grad_y_row;
    const opmath_t grad_logdet = g.grad_logdet[b * g.grad_logdet_stride];
    scalar_t* grad_x = g.grad_x + b * in.dim;
    scalar_t* grad_s = g.grad_s + b * g.grad_s_row;
    scalar_t* grad_t = g.grad_t + b * g.grad_t_row;
#pragma omp simd
    for (int64_t d = 0; d < in.dim; ++d) {
      const auto grad = affine_coupling_backward<Tanh::value, Reverse::value, cpu::VectorMath>(
          opmath_t(x[d]), opmath_t(s[d]), opmath_t(t[d]), opmath_t(in.mask[d]),
          opmath_t(grad_y[d]), grad_logdet);
      grad_x[d] = grad.x;
      grad_s[d] = grad.s;
      grad_t[d] = grad.t;
    }
  }
}
FASTFLOW_CPU_DISPATCH(coupling_backward_rows)

// Enough rows per task for about 32K elements: fewer tasks than that cost more than they save.
int64_t rows_per_task(int64_t dim) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(dim, 1)); }

std::tuple<at::Tensor, at::Tensor> affine_coupling_cpu(const at::Tensor& x_in,
                                                       const at::Tensor& s_in,
                                                       const at::Tensor& t_in,
                                                       const at::Tensor& mask_in, bool tanh_scale,
                                                       bool reverse) {
  check_affine_coupling(x_in, s_in, t_in, mask_in);
  const at::Tensor x = rows_contiguous(x_in), s = rows_contiguous(s_in), t = rows_contiguous(t_in);
  const at::Tensor mask = mask_in.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor logdet = at::empty({x.size(0)}, x.options().dtype(logdet_dtype(x)));
  if (x.size(0) == 0) return {y, logdet};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "affine_coupling", [&] {
    const auto in = coupling_inputs<scalar_t>(x, s, t, mask);
    auto* y_ptr = y.mutable_data_ptr<scalar_t>();
    auto* logdet_ptr = logdet.mutable_data_ptr<at::opmath_type<scalar_t>>();
    dispatch_flags(tanh_scale, reverse, [&](auto tanh_flag, auto reverse_flag) {
      at::parallel_for(0, x.size(0), rows_per_task(x.size(1)), [&](int64_t begin, int64_t end) {
        coupling_forward_rows(tanh_flag, reverse_flag, in, y_ptr, logdet_ptr, begin, end);
      });
    });
  });
  return {y, logdet};
}

// Writes the gradients into grad_x (contiguous) and grad_s, grad_t (rows contiguous).
void affine_coupling_backward_into(const at::Tensor& grad_y_in, const at::Tensor& grad_logdet,
                                   const at::Tensor& x_in, const at::Tensor& s_in,
                                   const at::Tensor& t_in, const at::Tensor& mask_in,
                                   bool tanh_scale, bool reverse, at::Tensor& grad_x,
                                   at::Tensor& grad_s, at::Tensor& grad_t) {
  const at::Tensor x = rows_contiguous(x_in), s = rows_contiguous(s_in), t = rows_contiguous(t_in);
  const at::Tensor grad_y = rows_contiguous(grad_y_in), mask = mask_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "affine_coupling_backward", [&] {
    const auto in = coupling_inputs<scalar_t>(x, s, t, mask);
    const CouplingGrads<scalar_t> g{grad_y.const_data_ptr<scalar_t>(),
                                    grad_logdet.const_data_ptr<at::opmath_type<scalar_t>>(),
                                    grad_y.stride(0), grad_logdet.stride(0),
                                    grad_x.mutable_data_ptr<scalar_t>(),
                                    grad_s.mutable_data_ptr<scalar_t>(),
                                    grad_t.mutable_data_ptr<scalar_t>(), grad_s.stride(0),
                                    grad_t.stride(0)};
    dispatch_flags(tanh_scale, reverse, [&](auto tanh_flag, auto reverse_flag) {
      at::parallel_for(0, x.size(0), rows_per_task(x.size(1)), [&](int64_t begin, int64_t end) {
        coupling_backward_rows(tanh_flag, reverse_flag, in, g, begin, end);
      });
    });
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
    const at::Tensor& s, const at::Tensor& t, const at::Tensor& mask, bool tanh_scale,
    bool reverse) {
  return affine_coupling_backward_op(affine_coupling_backward_into, grad_y, grad_logdet, x, s, t,
                                     mask, tanh_scale, reverse);
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_packed_cpu(const at::Tensor& x,
                                                              const at::Tensor& st,
                                                              const at::Tensor& mask,
                                                              bool tanh_scale, bool reverse) {
  const auto [s, t] = split_packed(x, st);
  return affine_coupling_cpu(x, s, t, mask, tanh_scale, reverse);
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_packed_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
    const at::Tensor& st, const at::Tensor& mask, bool tanh_scale, bool reverse) {
  return affine_coupling_packed_backward_op(affine_coupling_backward_into, grad_y, grad_logdet, x,
                                            st, mask, tanh_scale, reverse);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastflow, CPU, m) {
  m.impl("affine_coupling", &affine_coupling_cpu);
  m.impl("affine_coupling_backward", &affine_coupling_backward_cpu);
  m.impl("affine_coupling_packed", &affine_coupling_packed_cpu);
  m.impl("affine_coupling_packed_backward", &affine_coupling_packed_backward_cpu);
}

}  // namespace fastflow
