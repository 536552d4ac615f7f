"""Masked linear (MADE) in Triton: y = x·(W⊙M)ᵀ + b and its backward, as tiled tl.dot
matmuls accumulating in float32 (float64 for float64 inputs). The math and the degree plan
are in csrc/masked_linear.h.

Tiling (BLOCK_M batch rows, BLOCK_N outputs, BLOCK_K inputs):
  forward  one program per [BLOCK_M, BLOCK_N] tile of y, looping over the inputs in BLOCK_K
           steps;
  grad_x   one program per [BLOCK_M, BLOCK_K] tile of dX = dY·(W⊙M), looping over the
           outputs in BLOCK_N steps;
  grad_W   one program per [BLOCK_N, BLOCK_K] tile of dW = (dYᵀ·X)⊙M, looping over the batch
           in BLOCK_M steps; the mask is applied once, to the finished tile.

The mask comes one of two ways, and each kernel serves both, the constexpr DEGREE choosing
(the other form's arguments are None):
  matrix   M [N, K] in x's dtype, multiplied into each weight tile as it is loaded (and into
           the finished dW tile); every tile is computed.
  degree   the plan (in_order, out_order, row_prefix): sorted output r (output unit
           out_order[r]) sees exactly the sorted inputs c < row_prefix[r] (input units
           in_order[c]), and row_prefix is non-decreasing, so in sorted coordinates the mask
           is a staircase. Tiles run over sorted coordinates; x columns, weight entries and
           dY columns are gathered through in_order / out_order as they are loaded, and y, dX
           and dW are scattered back the same way. Tiles of the staircase that are all zero
           are skipped by loop bounds (no loads, no FLOPs), and tiles that are all one are
           loaded without a mask:
    forward  sorted rows [r0, r1) need only inputs c < row_prefix[r1 - 1]; the inputs
             c < row_prefix[r0] are seen by every row of the tile (unmasked steps), the
             steps in between load W under the mask c < row_prefix[r].
    grad_x   sorted columns [c0, c1) get contributions only from the suffix of rows with
             row_prefix[r] > c0; rows with row_prefix[r] >= c1 see the whole tile. Both
             row starts come per column tile from torch.searchsorted in the launcher (the
             plan arrays are small).
    grad_W   a tile of sorted rows [r0, r1) x sorted columns [c0, c1) with
             c0 >= row_prefix[r1 - 1] is all masked: its batch loop is empty and it stores
             zeros. Every entry of dW is written, zeros where masked.
"""

import torch
import triton
import triton.language as tl

from . import INTERPRETED

BLOCK_M = 64  # batch rows
BLOCK_N = 64  # outputs (rows of W)
BLOCK_K = 32  # inputs (columns of W)


@triton.jit
def _dot(a, b, acc, OPERAND: tl.constexpr):
    # "ieee": float32 inputs stay float32 (no TF32), so results match fp32 references.
    return tl.dot(a.to(OPERAND), b.to(OPERAND), acc, input_precision="ieee",
                  out_dtype=acc.dtype)


@triton.jit
def _units(order_ptr, tile_units, ok, DEGREE: tl.constexpr):
    # The weight's rows (columns) at a tile's coordinates: sorted ones mapped through
    # out_order (in_order) in the degree form, the weight's own in the matrix form.
    if DEGREE:
        return tl.load(order_ptr + tile_units, mask=ok, other=0)
    else:
        return tile_units


@triton.jit
def _weight_tile(w_ptr, mask_ptr, offsets, ok, DEGREE: tl.constexpr, OPERAND: tl.constexpr):
    # W⊙M at offsets, zero where not ok. The degree form has no mask to load: the caller's
    # ok carries the staircase's c < row_prefix[r] test where the tile straddles it.
    w = tl.load(w_ptr + offsets, mask=ok, other=0.0).to(OPERAND)
    if not DEGREE:
        w = w * tl.load(mask_ptr + offsets, mask=ok, other=0.0).to(OPERAND)
    return w


@triton.jit
def _forward_kernel(x_ptr, w_ptr, mask_ptr, in_order_ptr, out_order_ptr, row_prefix_ptr,
                    bias_ptr, y_ptr, batch, in_features, out_features, x_row,
                    DEGREE: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
                    OPERAND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    first = tl.program_id(1).to(tl.int64) * BLOCK_N
    tile_outs = first + tl.arange(0, BLOCK_N)
    row_ok = rows < batch
    out_ok = tile_outs < out_features
    outs = _units(out_order_ptr, tile_outs, out_ok, DEGREE)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    if DEGREE:
        # Rows past the end see nothing; they are not stored.
        prefix = tl.load(row_prefix_ptr + tile_outs, mask=out_ok, other=0)
        seen_by_all = (tl.load(row_prefix_ptr + first) // BLOCK_K) * BLOCK_K
        seen_by_any = tl.load(row_prefix_ptr + tl.minimum(first + BLOCK_N, out_features) - 1)
        # Input steps that every row of the tile sees whole: no mask on the inputs.
        for k0 in range(0, seen_by_all, BLOCK_K):
            ins = tl.load(in_order_ptr + k0 + tl.arange(0, BLOCK_K))
            x = tl.load(x_ptr + rows[:, None] * x_row + ins[None, :], mask=row_ok[:, None],
                        other=0.0)
            w = _weight_tile(w_ptr, mask_ptr, outs[None, :] * in_features + ins[:, None],
                             out_ok[None, :], DEGREE, OPERAND)
            acc = _dot(x, w, acc, OPERAND)
    else:
        prefix = tl.where(out_ok, in_features, 0)  # every row sees every input
        seen_by_all = 0
        seen_by_any = in_features
    # The staircase (the matrix form: every input): W loaded under c < prefix[r], W and M
    # transposed to [BLOCK_K, BLOCK_N], the tile of (W⊙M)ᵀ; inputs past seen_by_any never
    # loaded.
    for k0 in range(seen_by_all, seen_by_any, BLOCK_K):
        tile_ins = k0 + tl.arange(0, BLOCK_K)
        in_ok = tile_ins < seen_by_any
        ins = _units(in_order_ptr, tile_ins, in_ok, DEGREE)
        x = tl.load(x_ptr + rows[:, None] * x_row + ins[None, :],
                    mask=row_ok[:, None] & in_ok[None, :], other=0.0)
        w = _weight_tile(w_ptr, mask_ptr, outs[None, :] * in_features + ins[:, None],
                         tile_ins[:, None] < prefix[None, :], DEGREE, OPERAND)
        acc = _dot(x, w, acc, OPERAND)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + outs, mask=out_ok, other=0.0).to(ACC)[None, :]
    tl.store(y_ptr + rows[:, None] * out_features + outs[None, :],
             acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & out_ok[None, :])


@triton.jit
def _grad_x_kernel(grad_y_ptr, w_ptr, mask_ptr, in_order_ptr, out_order_ptr, row_prefix_ptr,
                   first_row_ptr, full_row_ptr, grad_x_ptr, batch, in_features, out_features,
                   grad_y_row, DEGREE: tl.constexpr, ACC: tl.constexpr, OPERAND: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    tile = tl.program_id(1)
    tile_ins = tile.to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    row_ok = rows < batch
    in_ok = tile_ins < in_features
    ins = _units(in_order_ptr, tile_ins, in_ok, DEGREE)
    acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=ACC)
    if DEGREE:
        # Sorted outputs before first_row see none of this tile's inputs; from full_row on
        # they see all of them. The staircase between is rounded up to whole steps.
        first_row = tl.load(first_row_ptr + tile)
        full_row = tl.load(full_row_ptr + tile)
        staircase_end = first_row + tl.cdiv(full_row - first_row, BLOCK_N) * BLOCK_N
        for n0 in range(first_row, staircase_end, BLOCK_N):
            tile_outs = n0 + tl.arange(0, BLOCK_N)
            out_ok = tile_outs < out_features
            outs = _units(out_order_ptr, tile_outs, out_ok, DEGREE)
            prefix = tl.load(row_prefix_ptr + tile_outs, mask=out_ok, other=0)
            gy = tl.load(grad_y_ptr + rows[:, None] * grad_y_row + outs[None, :],
                         mask=row_ok[:, None] & out_ok[None, :], other=0.0)
            w = _weight_tile(w_ptr, mask_ptr, outs[:, None] * in_features + ins[None, :],
                             (tile_ins[None, :] < prefix[:, None]) & in_ok[None, :], DEGREE,
                             OPERAND)
            acc = _dot(gy, w, acc, OPERAND)
    else:
        staircase_end = 0
    # Outputs that see the whole tile (the matrix form: every output).
    for n0 in range(staircase_end, out_features, BLOCK_N):
        tile_outs = n0 + tl.arange(0, BLOCK_N)
        out_ok = tile_outs < out_features
        outs = _units(out_order_ptr, tile_outs, out_ok, DEGREE)
        gy = tl.load(grad_y_ptr + rows[:, None] * grad_y_row + outs[None, :],
                     mask=row_ok[:, None] & out_ok[None, :], other=0.0)
        w = _weight_tile(w_ptr, mask_ptr, outs[:, None] * in_features + ins[None, :],
                         out_ok[:, None] & in_ok[None, :], DEGREE, OPERAND)
        acc = _dot(gy, w, acc, OPERAND)
    tl.store(grad_x_ptr + rows[:, None] * in_features + ins[None, :],
             acc.to(grad_x_ptr.dtype.element_ty), mask=row_ok[:, None] & in_ok[None, :])


@triton.jit
def _grad_weight_kernel(grad_y_ptr, x_ptr, mask_ptr, in_order_ptr, out_order_ptr,
                        row_prefix_ptr, grad_w_ptr, batch, in_features, out_features,
                        grad_y_row, x_row, DEGREE: tl.constexpr, ACC: tl.constexpr,
                        OPERAND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr):
    first = tl.program_id(0).to(tl.int64) * BLOCK_N
    first_in = tl.program_id(1).to(tl.int64) * BLOCK_K
    tile_outs = first + tl.arange(0, BLOCK_N)
    tile_ins = first_in + tl.arange(0, BLOCK_K)
    out_ok = tile_outs < out_features
    in_ok = tile_ins < in_features
    outs = _units(out_order_ptr, tile_outs, out_ok, DEGREE)
    ins = _units(in_order_ptr, tile_ins, in_ok, DEGREE)
    if DEGREE:
        # A tile left of the staircase is all masked: empty batch loop, zeros stored.
        seen_by_any = tl.load(row_prefix_ptr + tl.minimum(first + BLOCK_N, out_features) - 1)
        batch_end = tl.where(first_in < seen_by_any, batch, 0)
    else:
        batch_end = batch
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=ACC)
    for m0 in range(0, batch_end, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < batch
        # dY transposed to [BLOCK_N, BLOCK_M].
        gy_t = tl.load(grad_y_ptr + rows[None, :] * grad_y_row + outs[:, None],
                       mask=row_ok[None, :] & out_ok[:, None], other=0.0)
        x = tl.load(x_ptr + rows[:, None] * x_row + ins[None, :],
                    mask=row_ok[:, None] & in_ok[None, :], other=0.0)
        acc = _dot(gy_t, x, acc, OPERAND)
    w_offsets = outs[:, None] * in_features + ins[None, :]
    w_ok = out_ok[:, None] & in_ok[None, :]
    if DEGREE:
        prefix = tl.load(row_prefix_ptr + tile_outs, mask=out_ok, other=0)
        grad_w = tl.where(tile_ins[None, :] < prefix[:, None], acc, 0.0)
    else:
        grad_w = acc * tl.load(mask_ptr + w_offsets, mask=w_ok, other=0.0).to(ACC)
    tl.store(grad_w_ptr + w_offsets, grad_w.to(grad_w_ptr.dtype.element_ty), mask=w_ok)


_TL_DTYPE = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
             torch.float64: tl.float64}


def _constexprs(x):
    """The kernels' constexprs: the tile sizes, ACC, the accumulator's dtype, and OPERAND,
    the dtype tiles are multiplied in: x's own, except bfloat16 under the interpreter, which
    stores bfloat16 as raw uint16 bits and multiplies those (wrong results); there tiles go
    to float32 first, which is exact and gives what a bfloat16 tl.dot with float32
    accumulation gives."""
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    operand = tl.float32 if INTERPRETED and x.dtype == torch.bfloat16 else _TL_DTYPE[x.dtype]
    return dict(ACC=acc, OPERAND=operand, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
                BLOCK_K=BLOCK_K)


def _is_degree_form(mask, in_order, out_order, row_prefix):
    plan = (in_order, out_order, row_prefix)
    if mask is None:
        assert all(p is not None for p in plan), "degree form needs in_order, out_order, row_prefix"
        return True
    assert all(p is None for p in plan), "give either mask or the degree plan, not both"
    return False


def masked_linear_forward(x, weight, mask, in_order, out_order, row_prefix, bias, y):
    """Writes y = x·(W⊙M)ᵀ + b into y [B, N] (contiguous, allocated by the caller). x [B, K]
    has contiguous rows; weight (and mask) [N, K] contiguous. The mask is either `mask` or
    the degree plan (in_order, out_order, row_prefix: int64), the other given as None."""
    batch, in_features = x.shape
    out_features = weight.shape[0]
    if batch == 0 or out_features == 0:
        return
    degree = _is_degree_form(mask, in_order, out_order, row_prefix)
    grid = (triton.cdiv(batch, BLOCK_M), triton.cdiv(out_features, BLOCK_N))
    # None arguments (the other mask form's, a missing bias) are constexprs, never read.
    _forward_kernel[grid](x, weight, mask, in_order, out_order, row_prefix, bias, y, batch,
                          in_features, out_features, x.stride(0), DEGREE=degree,
                          HAS_BIAS=bias is not None, **_constexprs(x))


def masked_linear_backward(grad_y, x, weight, mask, in_order, out_order, row_prefix, grad_x,
                           grad_weight):
    """Writes grad_x = dY·(W⊙M) [B, K] and grad_weight = (dYᵀ·X)⊙M [N, K] (every entry,
    zeros where masked), both contiguous and allocated by the caller. The bias gradient is
    the caller's. Mask arguments as in masked_linear_forward."""
    batch, in_features = x.shape
    out_features = weight.shape[0]
    if batch == 0 or in_features == 0 or out_features == 0:
        # Nothing to reduce over (or nothing to write): the gradients are zero.
        grad_x.zero_()
        grad_weight.zero_()
        return
    degree = _is_degree_form(mask, in_order, out_order, row_prefix)
    first_row = full_row = None
    if degree:
        # Per column tile [c0, c1): the first sorted output with row_prefix > c0 (sees some
        # of the tile) and the first with row_prefix >= c1 (sees all of it).
        starts = torch.arange(0, in_features, BLOCK_K, device=x.device, dtype=torch.int64)
        ends = torch.clamp(starts + BLOCK_K, max=in_features)
        first_row = torch.searchsorted(row_prefix, starts, right=True)
        full_row = torch.searchsorted(row_prefix, ends - 1, right=True)
    plan = (in_order, out_order, row_prefix)
    x_grid = (triton.cdiv(batch, BLOCK_M), triton.cdiv(in_features, BLOCK_K))
    _grad_x_kernel[x_grid](grad_y, weight, mask, *plan, first_row, full_row, grad_x, batch,
                           in_features, out_features, grad_y.stride(0), DEGREE=degree,
                           **_constexprs(x))
    w_grid = (triton.cdiv(out_features, BLOCK_N), triton.cdiv(in_features, BLOCK_K))
    _grad_weight_kernel[w_grid](grad_y, x, mask, *plan, grad_weight, batch, in_features,
                                out_features, grad_y.stride(0), x.stride(0), DEGREE=degree,
                                **_constexprs(x))
