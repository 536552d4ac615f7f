// Registers the vector affine coupling CUDA kernels under the CUDA dispatch key.
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../affine_coupling.h"
#include "affine_coupling.cuh"
#include "binding_utils.h"

namespace fastflow {
namespace {

cuda::AffineCouplingArgs coupling_args(const at::Tensor& x, const at::Tensor& s,
                                       const at::Tensor& t, const at::Tensor& mask,
                                       bool tanh_scale, bool reverse) {
  return {x.const_data_ptr(), s.const_data_ptr(), t.const_data_ptr(), mask.const_data_ptr(),
          x.size(0), x.size(1), x.stride(0), s.stride(0), t.stride(0),
          cuda_dtype(x.scalar_type()), tanh_scale, reverse};
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_cuda(const at::Tensor& x_in,
                                                        const at::Tensor& s_in,
                                                        const at::Tensor& t_in,
                                                        const at::Tensor& mask_in,
                                                        bool tanh_scale, bool reverse) {
  check_affine_coupling(x_in, s_in, t_in, mask_in);
  const at::Tensor x = rows_contiguous(x_in), s = rows_contiguous(s_in), t = rows_contiguous(t_in);
  const at::Tensor mask = mask_in.contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor logdet = at::empty({x.size(0)}, x.options().dtype(logdet_dtype(x)));
  C10_CUDA_CHECK(cuda::launch_affine_coupling_forward(
      coupling_args(x, s, t, mask, tanh_scale, reverse), y.mutable_data_ptr(),
      logdet.mutable_data_ptr(), at::cuda::getCurrentCUDAStream()));
  return {y, logdet};
}

void affine_coupling_backward_into(const at::Tensor& grad_y_in, const at::Tensor& grad_logdet,
                                   const at::Tensor& x_in, const at::Tensor& s_in,
                                   const at::Tensor& t_in, const at::Tensor& mask_in,
                                   bool tanh_scale, bool reverse, at::Tensor& grad_x,
                                   at::Tensor& grad_s, at::Tensor& grad_t) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = rows_contiguous(x_in), s = rows_contiguous(s_in), t = rows_contiguous(t_in);
  const at::Tensor grad_y = rows_contiguous(grad_y_in), mask = mask_in.contiguous();
  const cuda::AffineCouplingGrads grads{grad_y.const_data_ptr(), grad_y.stride(0),
                                        grad_logdet.const_data_ptr(), grad_logdet.stride(0),
                                        grad_x.mutable_data_ptr(), grad_s.mutable_data_ptr(),
                                        grad_s.stride(0), grad_t.mutable_data_ptr(),
                                        grad_t.stride(0)};
  C10_CUDA_CHECK(cuda::launch_affine_coupling_backward(
      coupling_args(x, s, t, mask, tanh_scale, reverse), grads, at::cuda::getCurrentCUDAStream()));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
    const at::Tensor& s, const at::Tensor& t, const at::Tensor& mask, bool tanh_scale,
    bool reverse) {
  return affine_coupling_backward_op(affine_coupling_backward_into, grad_y, grad_logdet, x, s, t,
                                     mask, tanh_scale, reverse);
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_packed_cuda(const at::Tensor& x,
                                                               const at::Tensor& st,
                                                               const at::Tensor& mask,
                                                               bool tanh_scale, bool reverse) {
  const auto [s, t] = split_packed(x, st);
  return affine_coupling_cuda(x, s, t, mask, tanh_scale, reverse);
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_packed_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
    const at::Tensor& st, const at::Tensor& mask, bool tanh_scale, bool reverse) {
  return affine_coupling_packed_backward_op(affine_coupling_backward_into, grad_y, grad_logdet, x,
                                            st, mask, tanh_scale, reverse);
}

}  // namespace

TORCH_LIBRARY_IMPL(FASTFLOW_CUDA_LIBRARY, FASTFLOW_CUDA_KEY, m) {
  m.impl("affine_coupling", &affine_coupling_cuda);
  m.impl("affine_coupling_backward", &affine_coupling_backward_cuda);
  m.impl("affine_coupling_packed", &affine_coupling_packed_cuda);
  m.impl("affine_coupling_packed_backward", &affine_coupling_packed_backward_cuda);
}

}  // namespace fastflow
