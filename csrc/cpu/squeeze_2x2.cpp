// squeeze_2x2 on the CPU: a strided gather, one output plane per task, copied as raw bits
// (a permutation needs no arithmetic, so every float type is bit-exact).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstring>

#include "../squeeze_2x2.h"
#include "../squeeze_2x2_index.h"

namespace fastflow {
namespace {

// Forward: output plane (b, sc) of S is the sub-pixel (di, dj) of plane (b, c) of L.
template <typename bits_t>
void squeeze_forward(const bits_t* x, bits_t* out, int64_t batch, int64_t channels, int64_t h,
                     int64_t w, const int64_t* s, bool alt_order) {
  const int64_t planes = batch * 4 * channels;
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t b = plane / (4 * channels), sc = plane % (4 * channels);
      int64_t c, di, dj;
      unsqueezed_channel<int64_t>(sc, channels, alt_order, c, di, dj);
      bits_t* dst = out + plane * h * w;
      for (int64_t i = 0; i < h; ++i) {
        const bits_t* src = x + b * s[0] + c * s[1] + (2 * i + di) * s[2] + dj * s[3];
        for (int64_t j = 0; j < w; ++j) dst[i * w + j] = src[2 * j * s[3]];
      }
    }
  });
}

// Reverse: row y of output plane (b, c) of L interleaves row y/2 of two planes of S.
template <typename bits_t>
void squeeze_reverse(const bits_t* x, bits_t* out, int64_t batch, int64_t channels, int64_t h,
                     int64_t w, const int64_t* s, bool alt_order) {
  const int64_t planes = batch * channels;
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t b = plane / channels, c = plane % channels;
      bits_t* dst = out + plane * 4 * h * w;
      for (int64_t y = 0; y < 2 * h; ++y) {
        const int64_t di = y & 1, row = b * s[0] + (y >> 1) * s[2];
        const bits_t* even = x + row + squeezed_channel<int64_t>(c, di, 0, channels, alt_order) * s[1];
        const bits_t* odd = x + row + squeezed_channel<int64_t>(c, di, 1, channels, alt_order) * s[1];
        for (int64_t j = 0; j < w; ++j) {
          dst[y * 2 * w + 2 * j] = even[j * s[3]];
          dst[y * 2 * w + 2 * j + 1] = odd[j * s[3]];
        }
      }
    }
  });
}

template <typename bits_t>
void squeeze_2x2_bits(const at::Tensor& x, at::Tensor& out, bool reverse, bool alt_order) {
  const int64_t strides[4] = {x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const auto* src = static_cast<const bits_t*>(x.const_data_ptr());
  auto* dst = static_cast<bits_t*>(out.mutable_data_ptr());
  if (reverse) {
    squeeze_reverse(src, dst, out.size(0), out.size(1), x.size(2), x.size(3), strides, alt_order);
  } else {
    squeeze_forward(src, dst, x.size(0), x.size(1), out.size(2), out.size(3), strides, alt_order);
  }
}

at::Tensor squeeze_2x2_cpu(const at::Tensor& x, bool reverse, bool alt_order) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), "squeeze_2x2 (cpu): x must be a CPU tensor, got ",
                    x.device());
  const auto shape = squeeze_2x2_output_shape(x, reverse, alt_order);
  at::Tensor out = at::empty(shape, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  switch (x.element_size()) {
    case 2: squeeze_2x2_bits<uint16_t>(x, out, reverse, alt_order); break;
    case 4: squeeze_2x2_bits<uint32_t>(x, out, reverse, alt_order); break;
    case 8: squeeze_2x2_bits<uint64_t>(x, out, reverse, alt_order); break;
    default: TORCH_CHECK(false, "squeeze_2x2: unsupported element size ", x.element_size());
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastflow, CPU, m) { m.impl("squeeze_2x2", &squeeze_2x2_cpu); }

}  // namespace fastflow
