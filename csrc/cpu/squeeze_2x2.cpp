// squeeze_2x2 on the CPU: a strided gather copied as raw bits (a permutation needs no
// arithmetic, so every float type is bit-exact), into the reference's layout
// (../squeeze_2x2.h): NCHW or channels-last.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstring>

#include "../squeeze_2x2.h"
#include "../squeeze_2x2_index.h"

namespace fastflow {
namespace {

// NCHW output. One task per (b, c) plane of the full tensor L: row y of L pairs
// with row y/2 of the two planes of S that hold its even and odd columns,
// squeezed_channel(c, y & 1, 0 or 1). Forward reads L's rows and writes S's; reverse the
// other way round. Either way each task reads and writes whole rows, in order.
template <typename bits_t, bool kReverse>
void squeeze_planes(const bits_t* x, bits_t* out, int64_t batch, int64_t channels, int64_t h,
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

// Channels-last output: the output is walked in memory order ([B, rows,
// cols, channels]), one task per output row, each element gathered through x's strides.
template <typename bits_t, bool kReverse>
void squeeze_channels_last(const bits_t* x, bits_t* out, int64_t batch, int64_t channels,
                           int64_t h, int64_t w, const int64_t* s, bool alt_order) {
  const int64_t rows = kReverse ? 2 * h : h, cols = kReverse ? 2 * w : w;
  const int64_t out_channels = kReverse ? channels : 4 * channels;
  at::parallel_for(0, batch * rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t br = begin; br < end; ++br) {
      const int64_t b = br / rows, r = br % rows;
      bits_t* dst = out + br * cols * out_channels;
      for (int64_t col = 0; col < cols; ++col) {
        for (int64_t q = 0; q < out_channels; ++q) {
          if constexpr (kReverse) {  // out is L: channel q at (r, col) = (2i + di, 2j + dj)
            const int64_t sc = squeezed_channel<int64_t>(q, r & 1, col & 1, channels, alt_order);
            *dst++ = x[b * s[0] + sc * s[1] + (r >> 1) * s[2] + (col >> 1) * s[3]];
          } else {  // out is S: squeezed channel q at (i, j) = (r, col)
            int64_t c, di, dj;
            unsqueezed_channel<int64_t>(q, channels, alt_order, c, di, dj);
            *dst++ = x[b * s[0] + c * s[1] + (2 * r + di) * s[2] + (2 * col + dj) * s[3]];
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
  const bool nchw = out.is_contiguous();
  if (nchw && reverse) {
    squeeze_planes<bits_t, true>(src, dst, batch, channels, h, w, strides, alt_order);
  } else if (nchw) {
    squeeze_planes<bits_t, false>(src, dst, batch, channels, h, w, strides, alt_order);
  } else if (reverse) {
    squeeze_channels_last<bits_t, true>(src, dst, batch, channels, h, w, strides, alt_order);
  } else {
    squeeze_channels_last<bits_t, false>(src, dst, batch, channels, h, w, strides, alt_order);
  }
}

at::Tensor squeeze_2x2_cpu(const at::Tensor& x, bool reverse, bool alt_order) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), "squeeze_2x2 (cpu): x must be a CPU tensor, got ",
                    x.device());
  const auto shape = squeeze_2x2_output_shape(x, reverse, alt_order);
  at::Tensor out = at::empty(shape, x.options().memory_format(squeeze_2x2_output_format(x, alt_order)));
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
