// Registers the squeeze_2x2 CUDA kernel under the CUDA dispatch key.
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../squeeze_2x2.h"
#include "binding_utils.h"
#include "squeeze_2x2.cuh"

namespace fastflow {
namespace {

at::Tensor squeeze_2x2_cuda(const at::Tensor& x, bool reverse, bool alt_order) {
  const auto shape = squeeze_2x2_output_shape(x, reverse, alt_order);
  at::Tensor out = at::empty(shape, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const c10::cuda::CUDAGuard guard(x.device());
  // Sizes of the full tensor [B, C, 2h, 2w] and the squeezed one [B, 4C, h, w].
  const at::Tensor& full = reverse ? out : x;
  const at::Tensor& squeezed = reverse ? x : out;
  cuda::Squeeze2x2Args args{};
  args.x = x.const_data_ptr();
  args.out = out.mutable_data_ptr();
  args.batch = x.size(0);
  args.channels = full.size(1);
  args.height = squeezed.size(2);
  args.width = squeezed.size(3);
  for (int d = 0; d < 4; ++d) args.x_stride[d] = x.stride(d);
  args.element_size = static_cast<int>(x.element_size());
  args.reverse = reverse;
  args.alt_order = alt_order;
  C10_CUDA_CHECK(cuda::launch_squeeze_2x2(args, at::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(FASTFLOW_CUDA_LIBRARY, FASTFLOW_CUDA_KEY, m) { m.impl("squeeze_2x2", &squeeze_2x2_cuda); }

}  // namespace fastflow
