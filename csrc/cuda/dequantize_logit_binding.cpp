// Registers the dequantize-and-logit CUDA kernel under the CUDA dispatch key.
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../dequantize_logit.h"
#include "binding_utils.h"
#include "dequantize_logit.cuh"

namespace fastflow {
namespace {

std::tuple<at::Tensor, at::Tensor> dequantize_logit_cuda(const at::Tensor& x_in,
                                                         const at::Tensor& noise_in,
                                                         const at::Tensor& constraint) {
  check_dequantize_logit(x_in, noise_in, constraint);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), noise = noise_in.contiguous();
  const int64_t batch = x.size(0), n = batch > 0 ? x.numel() / batch : 0;
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor sldj = at::empty({batch}, x.options().dtype(at::toOpMathType(x.scalar_type())));
  C10_CUDA_CHECK(cuda::launch_dequantize_logit(
      cuda_dtype(x.scalar_type()), x.const_data_ptr(), noise.const_data_ptr(),
      constraint.contiguous().const_data_ptr(), y.mutable_data_ptr(), sldj.mutable_data_ptr(),
      batch, n, at::cuda::getCurrentCUDAStream()));
  return {y, sldj};
}

}  // namespace

TORCH_LIBRARY_IMPL(FASTFLOW_CUDA_LIBRARY, FASTFLOW_CUDA_KEY, m) { m.impl("dequantize_logit", &dequantize_logit_cuda); }

}  // namespace fastflow
