// Registers the image affine coupling CUDA kernels under the CUDA dispatch key.
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../image_coupling.h"
#include "binding_utils.h"
#include "image_coupling.cuh"

namespace fastflow {
namespace {

std::tuple<at::Tensor, at::Tensor> image_coupling_cuda(const at::Tensor& x_in,
                                                       const at::Tensor& st_in,
                                                       const at::Tensor& rescale_in,
                                                       bool channel_wise, bool reverse_mask,
                                                       bool reverse) {
  const auto g = image_coupling_geometry(x_in, st_in, rescale_in, channel_wise, reverse_mask);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), st = st_in.contiguous(), rescale = rescale_in.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor partial = at::zeros({g.batch, g.cond_channels},
                                 x.options().dtype(at::toOpMathType(x.scalar_type())));
  C10_CUDA_CHECK(cuda::launch_image_coupling_forward(
      g, cuda_dtype(x.scalar_type()), x.const_data_ptr(), st.const_data_ptr(),
      rescale.const_data_ptr(), y.mutable_data_ptr(), partial.mutable_data_ptr(), reverse,
      at::cuda::getCurrentCUDAStream()));
  return {y, partial.sum(1)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> image_coupling_backward_cuda(
    const at::Tensor& grad_y_in, const at::Tensor& grad_logdet_in, const at::Tensor& x_in,
    const at::Tensor& st_in, const at::Tensor& rescale_in, bool channel_wise, bool reverse_mask,
    bool reverse) {
  const auto g = image_coupling_geometry(x_in, st_in, rescale_in, channel_wise, reverse_mask);
  check_image_coupling_backward(grad_y_in, grad_logdet_in, x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), st = st_in.contiguous(), rescale = rescale_in.contiguous();
  const at::Tensor grad_y = grad_y_in.contiguous(), grad_logdet = grad_logdet_in.contiguous();
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  at::Tensor grad_st = at::empty(st.sizes(), st.options());
  at::Tensor partial = at::zeros({g.batch, g.cond_channels},
                                 x.options().dtype(at::toOpMathType(x.scalar_type())));
  C10_CUDA_CHECK(cuda::launch_image_coupling_backward(
      g, cuda_dtype(x.scalar_type()), grad_y.const_data_ptr(), grad_logdet.const_data_ptr(),
      x.const_data_ptr(), st.const_data_ptr(), rescale.const_data_ptr(),
      grad_x.mutable_data_ptr(), grad_st.mutable_data_ptr(), partial.mutable_data_ptr(), reverse,
      at::cuda::getCurrentCUDAStream()));
  return {grad_x, grad_st, partial.sum(0).to(rescale_in.scalar_type()).view(rescale_in.sizes())};
}

}  // namespace

TORCH_LIBRARY_IMPL(FASTFLOW_CUDA_LIBRARY, FASTFLOW_CUDA_KEY, m) {
  m.impl("image_coupling", &image_coupling_cuda);
  m.impl("image_coupling_backward", &image_coupling_backward_cuda);
}

}  // namespace fastflow
