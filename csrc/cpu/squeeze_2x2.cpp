// squeeze_2x2 on the CPU: a strided gather, one plane of the full tensor per task, copied
// as raw bits (a permutation needs no arithmetic, so every float type is bit-exact).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstring>

#include "../squeeze_2x2.h"
#include "../squeeze_2x2_index.h"

namespace fastflow {
namespace {

// One task per (b, c) plane of the full tensor L: row y of L pairs with row y/2 of the two
// planes of S that hold its even and odd columns, squeezed_channel(c, y & 1, 0 or 1).
// Forward reads L's rows and writes S's; reverse the other way round. Either way each
// task reads and writes whole rows, in order.
template <typename bits_t, bool kReverse>
void squeeze_rows(const bits_t* x, bits_t* out, int64_t batch, int64_t channels, int64_t h,
                  int64_t w, const int64_t* s, bool alt_order) {
  at::parallel_for(0, batch * channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t b = plane / channels, c = plane % channels;
      for (int64_t y = 0; y < 2 * h; ++y) {
        const int64_t di = y & 1, i = y >> 1;
        const int64_t even_sc = squeezed_channel<int64_t>(c, di, 0, channels, alt_order);
        const int64_t odd_sc = squeezed_channel<int64_t>(c, di, 1, channels, alt_order);
        if constexpr (kReverse) {  // x is S (strided), out is L (contiguous)
          const bits_t* even = x + b * s[0] + even_sc * s[1] + i * s[2];
          const bits_t* odd = x + b * s[0] + odd_sc * s[1] + i * s[2];
          bits_t* row = out + (plane * 2 * h + y) * 2 * w;
          for (int64_t j = 0; j < w; ++j) {
            row[2 * j] = even[j * s[3]];
            row[2 * j + 1] = odd[j * s[3]];
          }
        } else {  // x is L (strided), out is S (contiguous)
          const bits_t* row = x + b * s[0] + c * s[1] + y * s[2];
          bits_t* even = out + ((b * 4 * channels + even_sc) * h + i) * w;
          bits_t* odd = out + ((b * 4 * channels + odd_sc) * h + i) * w;
          for (int64_t j = 0; j < w; ++j) {
            even[j] = row[2 * j * s[3]];
            odd[j] = row[(2 * j + 1) * s[3]];
          }
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
  // Sizes of the full tensor [B, C, 2h, 2w] in terms of the squeezed [B, 4C, h, w].
  const at::Tensor& full = reverse ? out : x;
  const at::Tensor& squeezed = reverse ? x : out;
  const int64_t batch = x.size(0), channels = full.size(1);
  const int64_t h = squeezed.size(2), w = squeezed.size(3);
  if (reverse) {
    squeeze_rows<bits_t, true>(src, dst, batch, channels, h, w, strides, alt_order);
  } else {
    squeeze_rows<bits_t, false>(src, dst, batch, channels, h, w, strides, alt_order);
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
