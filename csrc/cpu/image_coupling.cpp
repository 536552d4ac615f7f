// Image affine coupling on the CPU (math: ../image_coupling_math.h): one task per (b, c)
// plane of x, reading st and the rescale weight in place (no chunk copies). Per-plane
// partial sums of the logdet and of the rescale gradient are reduced afterwards, so the
// result does not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "../dispatch_flags.h"
#include "../image_coupling.h"
#include "../image_coupling_math.h"
#include "vector_math.h"

namespace fastflow {
namespace {

template <typename scalar_t>
struct ImageCouplingData {
  const scalar_t* x;
  const scalar_t* st;
  const scalar_t* rescale;
  ImageCouplingGeometry g;
};

// Writes the planes [begin, end) of y; partial[b, cc] = the plane's logdet.
template <typename scalar_t, typename Reverse>
FASTFLOW_ALWAYS_INLINE void image_coupling_planes_body(Reverse, ImageCouplingData<scalar_t> in,
                                                       scalar_t* y, at::opmath_type<scalar_t>* partial,
                                                       int64_t begin, int64_t end) {
  using opmath_t = at::opmath_type<scalar_t>;
  const ImageCouplingGeometry g = in.g;
  const int64_t hw = g.height * g.width;
  for (int64_t plane = begin; plane < end; ++plane) {
    const int64_t b = plane / g.channels, cc = conditioner_channel(g, plane % g.channels);
    const scalar_t* x = in.x + plane * hw;
    scalar_t* y_plane = y + plane * hw;
    if (cc < 0) {
      std::copy(x, x + hw, y_plane);
      continue;
    }
    const scalar_t* s = in.st + (b * 2 * g.cond_channels + cc) * hw;
    const scalar_t* t = s + g.cond_channels * hw;
    const opmath_t weight = in.rescale[cc];
    opmath_t sum = 0;
    for (int64_t h = 0; h < g.height; ++h) {
#pragma omp simd reduction(+ : sum)
      for (int64_t w = 0; w < g.width; ++w) {
        const int64_t i = h * g.width + w;
        const auto out = image_coupling_forward<Reverse::value, cpu::VectorMath>(
            opmath_t(x[i]), opmath_t(s[i]), opmath_t(t[i]), weight,
            changed_pixel<opmath_t>(g, h, w));
        y_plane[i] = out.y;
        sum += out.s_masked;
      }
    }
    partial[b * g.cond_channels + cc] = Reverse::value ? -sum : sum;
  }
}
FASTFLOW_CPU_DISPATCH(image_coupling_planes)

template <typename scalar_t>
struct ImageCouplingGrads {
  const scalar_t* grad_y;
  const at::opmath_type<scalar_t>* grad_logdet;  // [B], contiguous
  scalar_t* grad_x;
  scalar_t* grad_st;
  at::opmath_type<scalar_t>* grad_rescale_partial;  // [B, Cc]
};

template <typename scalar_t, typename Reverse>
FASTFLOW_ALWAYS_INLINE void image_coupling_backward_planes_body(
    Reverse, ImageCouplingData<scalar_t> in, ImageCouplingGrads<scalar_t> out,
    int64_t begin, int64_t end) {
  using opmath_t = at::opmath_type<scalar_t>;
  const ImageCouplingGeometry g = in.g;
  const int64_t hw = g.height * g.width;
  for (int64_t plane = begin; plane < end; ++plane) {
    const int64_t b = plane / g.channels, cc = conditioner_channel(g, plane % g.channels);
    const scalar_t* x = in.x + plane * hw;
    const scalar_t* grad_y = out.grad_y + plane * hw;
    scalar_t* grad_x = out.grad_x + plane * hw;
    if (cc < 0) {
      std::copy(grad_y, grad_y + hw, grad_x);
      continue;
    }
    const int64_t s_offset = (b * 2 * g.cond_channels + cc) * hw;
    const int64_t t_offset = s_offset + g.cond_channels * hw;
    const scalar_t* s = in.st + s_offset;
    const scalar_t* t = in.st + t_offset;
    scalar_t* grad_s = out.grad_st + s_offset;
    scalar_t* grad_t = out.grad_st + t_offset;
    const opmath_t weight = in.rescale[cc];
    const opmath_t grad_logdet = out.grad_logdet[b];
    opmath_t grad_weight = 0;
    for (int64_t h = 0; h < g.height; ++h) {
#pragma omp simd reduction(+ : grad_weight)
      for (int64_t w = 0; w < g.width; ++w) {
        const int64_t i = h * g.width + w;
        const auto grad = image_coupling_backward<Reverse::value, cpu::VectorMath>(
            opmath_t(x[i]), opmath_t(s[i]), opmath_t(t[i]), weight,
            changed_pixel<opmath_t>(g, h, w), opmath_t(grad_y[i]), grad_logdet);
        grad_x[i] = grad.x;
        grad_s[i] = grad.s;
        grad_t[i] = grad.t;
        grad_weight += grad.weight;
      }
    }
    out.grad_rescale_partial[b * g.cond_channels + cc] = grad_weight;
  }
}
FASTFLOW_CPU_DISPATCH(image_coupling_backward_planes)

int64_t planes_per_task(int64_t hw) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(hw, 1)); }

std::tuple<at::Tensor, at::Tensor> image_coupling_cpu(const at::Tensor& x_in,
                                                      const at::Tensor& st_in,
                                                      const at::Tensor& rescale_in,
                                                      bool channel_wise, bool reverse_mask,
                                                      bool reverse) {
  const auto g = image_coupling_geometry(x_in, st_in, rescale_in, channel_wise, reverse_mask);
  const at::Tensor x = x_in.contiguous(), st = st_in.contiguous(), rescale = rescale_in.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  const auto opmath = at::toOpMathType(x.scalar_type());
  at::Tensor partial = at::empty({g.batch, g.cond_channels}, x.options().dtype(opmath));
  if (x.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "image_coupling", [&] {
      const ImageCouplingData<scalar_t> in{x.const_data_ptr<scalar_t>(), st.const_data_ptr<scalar_t>(),
                                           rescale.const_data_ptr<scalar_t>(), g};
      auto* y_ptr = y.mutable_data_ptr<scalar_t>();
      auto* partial_ptr = partial.mutable_data_ptr<at::opmath_type<scalar_t>>();
      dispatch_flag(reverse, [&](auto reverse_flag) {
        at::parallel_for(0, g.batch * g.channels, planes_per_task(g.height * g.width),
                         [&](int64_t begin, int64_t end) {
                           image_coupling_planes(reverse_flag, in, y_ptr, partial_ptr, begin, end);
                         });
      });
    });
  } else {
    partial.zero_();
  }
  return {y, partial.sum(1)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> image_coupling_backward_cpu(
    const at::Tensor& grad_y_in, const at::Tensor& grad_logdet_in, const at::Tensor& x_in,
    const at::Tensor& st_in, const at::Tensor& rescale_in, bool channel_wise, bool reverse_mask,
    bool reverse) {
  const auto g = image_coupling_geometry(x_in, st_in, rescale_in, channel_wise, reverse_mask);
  check_image_coupling_backward(grad_y_in, grad_logdet_in, x_in);
  const auto opmath = at::toOpMathType(x_in.scalar_type());
  const at::Tensor x = x_in.contiguous(), st = st_in.contiguous(), rescale = rescale_in.contiguous();
  const at::Tensor grad_y = grad_y_in.contiguous(), grad_logdet = grad_logdet_in.contiguous();
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  at::Tensor grad_st = at::empty(st.sizes(), st.options());
  at::Tensor partial = at::zeros({g.batch, g.cond_channels}, x.options().dtype(opmath));
  if (x.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "image_coupling_backward", [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      const ImageCouplingData<scalar_t> in{x.const_data_ptr<scalar_t>(), st.const_data_ptr<scalar_t>(),
                                           rescale.const_data_ptr<scalar_t>(), g};
      const ImageCouplingGrads<scalar_t> out{
          grad_y.const_data_ptr<scalar_t>(), grad_logdet.const_data_ptr<opmath_t>(),
          grad_x.mutable_data_ptr<scalar_t>(), grad_st.mutable_data_ptr<scalar_t>(),
          partial.mutable_data_ptr<opmath_t>()};
      dispatch_flag(reverse, [&](auto reverse_flag) {
        at::parallel_for(0, g.batch * g.channels, planes_per_task(g.height * g.width),
                         [&](int64_t begin, int64_t end) {
                           image_coupling_backward_planes(reverse_flag, in, out, begin, end);
                         });
      });
    });
  }
  return {grad_x, grad_st, partial.sum(0).to(rescale_in.scalar_type()).view(rescale_in.sizes())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastflow, CPU, m) {
  m.impl("image_coupling", &image_coupling_cpu);
  m.impl("image_coupling_backward", &image_coupling_backward_cpu);
}

}  // namespace fastflow
