// Registers the masked linear CUDA kernels under the CUDA dispatch key.
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../masked_linear.h"
#include "binding_utils.h"
#include "masked_linear.cuh"

namespace fastflow {
namespace {

// One of `mask` (contiguous) and `plan` is given; x has unit-stride rows, weight is contiguous.
cuda::MaskedLinearArgs launch_args(const at::Tensor& x, const at::Tensor& weight,
                                   const at::Tensor* mask, const DegreePlan* plan) {
  return {x.const_data_ptr(),
          x.stride(0),
          weight.const_data_ptr(),
          plan != nullptr,
          mask ? mask->const_data_ptr() : nullptr,
          plan ? plan->in_order.const_data_ptr<int64_t>() : nullptr,
          plan ? plan->out_order.const_data_ptr<int64_t>() : nullptr,
          plan ? plan->row_prefix.const_data_ptr<int64_t>() : nullptr,
          x.size(0),
          x.size(1),
          weight.size(0),
          cuda_dtype(x.scalar_type())};
}

at::Tensor forward(const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor* mask,
                   const DegreePlan* plan, const std::optional<at::Tensor>& bias_in) {
  const at::Tensor x = rows_contiguous(x_in), weight = weight_in.contiguous();
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  at::Tensor y = at::empty({x.size(0), weight.size(0)},
                           x.options().memory_format(at::MemoryFormat::Contiguous));
  C10_CUDA_CHECK(cuda::launch_masked_linear_forward(
      launch_args(x, weight, mask, plan), bias.defined() ? bias.const_data_ptr() : nullptr,
      y.mutable_data_ptr(), at::cuda::getCurrentCUDAStream()));
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& grad_y_in,
                                                        const at::Tensor& x_in,
                                                        const at::Tensor& weight_in,
                                                        const at::Tensor* mask,
                                                        const DegreePlan* plan, bool input_grad) {
  const at::Tensor x = rows_contiguous(x_in), weight = weight_in.contiguous();
  const at::Tensor grad_y = rows_contiguous(grad_y_in);
  const auto options = x.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor grad_x = input_grad ? at::empty({x.size(0), x.size(1)}, options)
                                 : at::empty({0}, options);
  at::Tensor grad_weight = at::empty(weight.sizes(), options);
  C10_CUDA_CHECK(cuda::launch_masked_linear_backward(
      launch_args(x, weight, mask, plan), grad_y.const_data_ptr(), grad_y.stride(0),
      input_grad ? grad_x.mutable_data_ptr() : nullptr, grad_weight.mutable_data_ptr(),
      at::cuda::getCurrentCUDAStream()));
  return {grad_x, grad_weight, grad_y_in.sum(0)};
}

at::Tensor masked_linear_cuda(const at::Tensor& x, const at::Tensor& weight,
                              const at::Tensor& mask, const std::optional<at::Tensor>& bias) {
  check_masked_linear(x, weight, mask, bias);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor mask_contiguous = mask.contiguous();
  return forward(x, weight, &mask_contiguous, nullptr, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_linear_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& mask, bool input_grad) {
  check_masked_linear(x, weight, mask, std::nullopt);
  check_grad_y("masked_linear_backward", grad_y, x, weight);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor mask_contiguous = mask.contiguous();
  return backward(grad_y, x, weight, &mask_contiguous, nullptr, input_grad);
}

at::Tensor degree_masked_linear_cuda(const at::Tensor& x, const at::Tensor& weight,
                                     const at::Tensor& in_degrees, const at::Tensor& out_degrees,
                                     const std::optional<at::Tensor>& bias) {
  check_degree_masked_linear(x, weight, in_degrees, out_degrees, bias);
  const c10::cuda::CUDAGuard guard(x.device());
  const DegreePlan plan = degree_plan(in_degrees, out_degrees);
  return forward(x, weight, nullptr, &plan, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> degree_masked_linear_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& in_degrees, const at::Tensor& out_degrees, bool input_grad) {
  check_degree_masked_linear(x, weight, in_degrees, out_degrees, std::nullopt);
  check_grad_y("degree_masked_linear_backward", grad_y, x, weight);
  const c10::cuda::CUDAGuard guard(x.device());
  const DegreePlan plan = degree_plan(in_degrees, out_degrees);
  return backward(grad_y, x, weight, nullptr, &plan, input_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(FASTFLOW_CUDA_LIBRARY, FASTFLOW_CUDA_KEY, m) {
  m.impl("masked_linear", &masked_linear_cuda);
  m.impl("masked_linear_backward", &masked_linear_backward_cuda);
  m.impl("degree_masked_linear", &degree_masked_linear_cuda);
  m.impl("degree_masked_linear_backward", &degree_masked_linear_backward_cuda);
}

}  // namespace fastflow
