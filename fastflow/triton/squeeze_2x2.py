"""squeeze_2x2 in Triton: one program per BLOCK output elements, a strided gather.

The index map is the one in csrc/squeeze_2x2_index.h (see there): squeezed S[B, 4C, h, w],
full L[B, C, 2h, 2w], S[b, squeezed_channel(c, di, dj), i, j] == L[b, c, 2i+di, 2j+dj].
"""

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _squeeze_2x2_kernel(x_ptr, out_ptr, total, channels, h, w, s0, s1, s2, s3,
                        REVERSE: tl.constexpr, ALT_ORDER: tl.constexpr,
                        INDEX_64: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    idx = pid * BLOCK + tl.arange(0, BLOCK)
    in_bounds = idx < total
    if REVERSE:
        # idx walks L; read S[b, sc, row // 2, col // 2].
        col = idx % (2 * w)
        t = idx // (2 * w)
        row = t % (2 * h)
        t = t // (2 * h)
        c = t % channels
        b = t // channels
        di = row % 2
        dj = col % 2
        if ALT_ORDER:
            sc = (di | ((di ^ dj) << 1)) * channels + c
        else:
            sc = 4 * c + 2 * di + dj
        src = b * s0 + sc * s1 + (row // 2) * s2 + (col // 2) * s3
    else:
        # idx walks S; read L[b, c, 2i + di, 2j + dj].
        j = idx % w
        t = idx // w
        i = t % h
        t = t // h
        sc = t % (4 * channels)
        b = t // (4 * channels)
        if ALT_ORDER:
            k = sc // channels
            c = sc % channels
            di = k & 1
            dj = (k ^ (k >> 1)) & 1
        else:
            c = sc // 4
            di = (sc // 2) % 2
            dj = sc % 2
        src = b * s0 + c * s1 + (2 * i + di) * s2 + (2 * j + dj) * s3
    value = tl.load(x_ptr + src, mask=in_bounds)
    tl.store(out_ptr + idx, value, mask=in_bounds)


def squeeze_2x2_triton(x: torch.Tensor, out: torch.Tensor, reverse: bool, alt_order: bool) -> None:
    """Writes squeeze_2x2(x) into `out` (contiguous, already shaped; checked by the caller)."""
    total = out.numel()
    if total == 0:
        return
    full, squeezed = (out, x) if reverse else (x, out)
    furthest = sum((size - 1) * stride for size, stride in zip(x.shape, x.stride()))
    index_64 = max(total + BLOCK, furthest) >= 2**31
    grid = (triton.cdiv(total, BLOCK),)
    _squeeze_2x2_kernel[grid](x, out, total, full.shape[1], squeezed.shape[2], squeezed.shape[3],
                              *x.stride(), REVERSE=reverse, ALT_ORDER=alt_order,
                              INDEX_64=index_64, BLOCK=BLOCK)
