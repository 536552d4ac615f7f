"""One-pass MADE / MAF sampling in Triton: the push form of csrc/cpu/made_sample.cpp (plan
and rules: csrc/made_sample.h), step for step.

One program owns a tile of BLOCK_B samples and runs the whole step loop for it in one
launch (the steps are a chain of dependencies). The launcher packs every layer in sorted
positions, as the CPU kernel does: (W⊙M) with rows gathered by the output order and columns
by the input order, transposed to [inputs, outputs], so that a unit's push reads one
contiguous row slice. All layers go into one flat buffer, and all running pre-activations
into one scratch [N, Σ widths] initialised with the sorted biases, so the kernel takes the
same arguments whatever the number of layers (their offsets in an int64 table).

A push adds value[b] · row_p[begin:end) into the next layer's accumulators in chunks of
BLOCK_N positions. The accumulators live in global memory and are read back by other
threads of the program (a hidden unit's value in the next step or layer, a position pushed
again with a different chunk alignment), hence a barrier after every push.

The plan's values are not checked (that would be a copy to the host per call): the launcher
clamps the unit orders into range (they feed its gathers) and the kernel clamps every offset
and range it reads, so that a bad plan gives wrong samples, never an access out of bounds.
"""

import functools

import torch
import triton
import triton.language as tl

from . import INTERPRETED

BLOCK_B = 16  # samples per program
BLOCK_N = 64  # output positions per push chunk


@triton.jit
def _rounded(x, STORE: tl.constexpr, BF16_BY_BITS: tl.constexpr):
    """float32 or float64 x rounded to the storage dtype (to nearest even), in that dtype."""
    if BF16_BY_BITS:
        # The interpreter truncates float32 to bfloat16 (a GPU rounds to nearest even):
        # rounded in the bits first, the truncation is exact.
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(STORE)


@triton.jit
def _clamped(index, high):
    """index clamped into [0, high]: what the kernel makes of an offset read from the plan."""
    return tl.minimum(tl.maximum(index, 0), high)


@triton.jit
def _push(rows_ptr, ranges_ptr, table_ptr, acc_ptr, layer, position, value, samples, live,
          acc_stride, BLOCK_N: tl.constexpr):
    """acc[b, layer's begin:end) += value[b] · row[begin:end) for the input `position` of
    `layer`, then a barrier. A tile whose values are all zero (ReLU, Bernoulli, samples past
    the end) pushes nothing. The layer table's row: where the layer's packed rows, its
    accumulators (a column of the scratch) and its push ranges start, and its outputs."""
    info = table_ptr + layer * 4
    rows = tl.load(info + 0)
    acc_col = tl.load(info + 1)
    ranges = tl.load(info + 2)
    width = tl.load(info + 3)
    begin = _clamped(tl.load(ranges_ptr + (ranges + position) * 2), width)
    end = _clamped(tl.load(ranges_ptr + (ranges + position) * 2 + 1), width)
    end = tl.where(tl.max(tl.abs(value), axis=0) != 0, end, begin)
    row = rows_ptr + rows + position * width
    acc_rows = acc_ptr + samples[:, None] * acc_stride + acc_col
    for q0 in range(begin, end, BLOCK_N):
        q = q0 + tl.arange(0, BLOCK_N)
        q_ok = q < end
        w = tl.load(row + q, mask=q_ok, other=0.0)
        ok = live[:, None] & q_ok[None, :]
        a = tl.load(acc_rows + q[None, :], mask=ok, other=0.0)
        tl.store(acc_rows + q[None, :], a + value[:, None] * w[None, :], mask=ok)
    tl.debug_barrier()


@triton.jit
def _made_sample_kernel(noise_ptr, rows_ptr, ranges_ptr, table_ptr, acc_ptr, finalize_ptr,
                        steps_ptr, dim_order_ptr, out_order_ptr, values_ptr, log_ptr,
                        outputs_ptr, samples_total, dims, steps, layers, acc_stride,
                        RULE: tl.constexpr, STORE: tl.constexpr, ACC: tl.constexpr,
                        BF16_BY_BITS: tl.constexpr, BLOCK_B: tl.constexpr,
                        BLOCK_N: tl.constexpr):
    samples = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    live = samples < samples_total
    last = layers - 1
    last_col = tl.load(table_ptr + last * 4 + 1)
    log_term = tl.zeros([BLOCK_B], dtype=tl.float64)
    for t in range(1, steps + 1):
        # Hidden units ready at t − 1 are final: push them, lower layers first (a unit of
        # layer l + 1 ready at t − 1 may need units of layer l that just became final).
        for l in range(0, last):
            hidden_col = tl.load(table_ptr + l * 4 + 1)
            hidden_width = tl.load(table_ptr + l * 4 + 3)
            p0 = _clamped(tl.load(finalize_ptr + l * (steps + 2) + t - 1), hidden_width)
            p1 = _clamped(tl.load(finalize_ptr + l * (steps + 2) + t), hidden_width)
            for p in range(p0, p1):
                h = tl.load(acc_ptr + samples * acc_stride + hidden_col + p, mask=live,
                            other=0.0)
                # Rounded to the model's dtype, as the reference's activations are.
                h = _rounded(tl.maximum(h, 0.0), STORE, BF16_BY_BITS).to(ACC)
                _push(rows_ptr, ranges_ptr, table_ptr, acc_ptr, l + 1, p, h, samples, live,
                      acc_stride, BLOCK_N)
        # The dimensions of step t: their outputs are final now.
        i0 = _clamped(tl.load(steps_ptr + t - 1), dims)
        i1 = _clamped(tl.load(steps_ptr + t), dims)
        for i in range(i0, i1):
            d = tl.load(dim_order_ptr + i)
            e = tl.load(noise_ptr + samples * dims + d, mask=live, other=0.0).to(ACC)
            if RULE == "bernoulli":
                out = acc_ptr + samples * acc_stride + last_col + i
                logit = _rounded(tl.load(out, mask=live, other=0.0), STORE, BF16_BY_BITS).to(ACC)
                prob = _rounded(1.0 / (1.0 + tl.exp(-logit)), STORE, BF16_BY_BITS).to(ACC)
                v = tl.where(e < prob, 1.0, 0.0).to(ACC)
                # log p(v | logit) = −BCE-with-logits in its stable form, in float64 as the
                # CPU kernel sums it.
                l64 = logit.to(tl.float64)
                log_term -= (tl.maximum(l64, 0.0) - l64 * v.to(tl.float64)
                             + tl.log(1.0 + tl.exp(-tl.abs(l64))))
            else:
                out = acc_ptr + samples * acc_stride + last_col + 2 * i
                mu = _rounded(tl.load(out, mask=live, other=0.0), STORE, BF16_BY_BITS).to(ACC)
                alpha = _rounded(tl.load(out + 1, mask=live, other=0.0), STORE,
                                 BF16_BY_BITS).to(ACC)
                if RULE == "gaussian":
                    v = mu + _rounded(e * tl.exp(alpha), STORE, BF16_BY_BITS).to(ACC)
                else:
                    v = _rounded(e - mu, STORE, BF16_BY_BITS).to(ACC) * tl.exp(-alpha)
                log_term -= alpha.to(tl.float64)
            stored = _rounded(v, STORE, BF16_BY_BITS)
            tl.store(values_ptr + samples * dims + d, stored, mask=live)
            # Past the end v may be nonzero (Gaussian): zeroed so those samples push nothing.
            _push(rows_ptr, ranges_ptr, table_ptr, acc_ptr, 0, i,
                  tl.where(live, stored.to(ACC), 0.0), samples, live, acc_stride, BLOCK_N)
    tl.store(log_ptr + samples, log_term.to(log_ptr.dtype.element_ty), mask=live)
    # The last layer's accumulators, back in natural order.
    out_width = tl.load(table_ptr + last * 4 + 3)
    for q0 in range(0, out_width, BLOCK_N):
        q = q0 + tl.arange(0, BLOCK_N)
        q_ok = q < out_width
        unit = tl.load(out_order_ptr + q, mask=q_ok, other=0)
        ok = live[:, None] & q_ok[None, :]
        a = tl.load(acc_ptr + samples[:, None] * acc_stride + last_col + q[None, :], mask=ok,
                    other=0.0)
        tl.store(outputs_ptr + samples[:, None] * out_width + unit[None, :],
                 _rounded(a, STORE, BF16_BY_BITS), mask=ok)


_TL_DTYPE = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
             torch.float64: tl.float64}


def _pack(weights, biases, masks, unit_orders, acc_dtype):
    """(rows, biases): every layer's W⊙M in sorted positions, [inputs, outputs] each, flat;
    the sorted biases, concatenated."""
    rows, sorted_biases = [], []
    for l, (weight, bias, mask) in enumerate(zip(weights, biases, masks)):
        packed = (weight.to(acc_dtype) * mask.to(acc_dtype)).index_select(0, unit_orders[l + 1])
        rows.append(packed.index_select(1, unit_orders[l]).t().contiguous().reshape(-1))
        sorted_biases.append(
            torch.zeros(weight.shape[0], dtype=acc_dtype, device=weight.device) if bias is None
            else bias.to(acc_dtype).index_select(0, unit_orders[l + 1]))
    return torch.cat(rows), torch.cat(sorted_biases)


@functools.lru_cache(maxsize=64)
def _layer_table(shapes: tuple, device: torch.device) -> torch.Tensor:
    """The int64 layer table [L, 4] of layers of these (outputs, inputs) shapes: where each
    layer's packed rows, accumulators and push ranges start, and its outputs. Made once per
    shape and device: a table copied to the device at every call would make the host wait."""
    table, row_start, acc_start, range_start = [], 0, 0, 0
    for outputs, inputs in shapes:
        table.append((row_start, acc_start, range_start, outputs))
        row_start += inputs * outputs
        acc_start += outputs
        range_start += inputs
    return torch.tensor(table, dtype=torch.int64, device=device)


def made_sample(noise, weights, biases, masks, unit_orders, push_ranges, finalize_offsets,
                step_offsets, rule):
    """(values [N, D] in noise's dtype, log terms [N] float32 (float64 for float64),
    outputs [N, out] in natural order), as fastflow::made_sample. Arguments checked by the
    caller; noise contiguous."""
    samples, dims = noise.shape
    acc_dtype = torch.float64 if noise.dtype == torch.float64 else torch.float32
    device = noise.device
    out_width = weights[-1].shape[0]
    values = torch.empty(samples, dims, dtype=noise.dtype, device=device)
    log_terms = torch.empty(samples, dtype=acc_dtype, device=device)
    outputs = torch.empty(samples, out_width, dtype=noise.dtype, device=device)
    if samples == 0:
        return values, log_terms, outputs
    unit_orders = [order.clamp(0, order.shape[0] - 1) for order in unit_orders]
    rows, sorted_biases = _pack(weights, biases, masks, unit_orders, acc_dtype)
    table = _layer_table(tuple(tuple(w.shape) for w in weights), device)
    ranges = torch.cat([r.contiguous() for r in push_ranges])
    acc = sorted_biases[None, :].repeat(samples, 1)
    # With a single layer there are no hidden units to finalise: step_offsets stands in for
    # the (never read) finalize table.
    finalize = (torch.stack(finalize_offsets) if finalize_offsets else step_offsets).contiguous()
    grid = (triton.cdiv(samples, BLOCK_B),)
    _made_sample_kernel[grid](noise, rows, ranges, table, acc, finalize,
                              step_offsets.contiguous(), unit_orders[0],
                              unit_orders[-1], values, log_terms, outputs,
                              samples, dims, step_offsets.shape[0] - 1, len(weights),
                              acc.shape[1], RULE=rule, STORE=_TL_DTYPE[noise.dtype],
                              ACC=_TL_DTYPE[acc_dtype],
                              BF16_BY_BITS=INTERPRETED and noise.dtype == torch.bfloat16,
                              BLOCK_B=BLOCK_B, BLOCK_N=BLOCK_N)
    return values, log_terms, outputs
