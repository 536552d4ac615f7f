"""One-pass MADE / MAF sampling in Triton: the push form of csrc/cpu/made_sample.cpp (plan
and rules: csrc/made_sample.h), step for step.

One program owns a tile of BLOCK_B samples and runs the whole step loop for it in one
launch (the steps are a chain of dependencies). The launcher packs every layer in sorted
positions, as the CPU kernel does: (W⊙M) with rows gathered by the output order and columns
by the input order, transposed to [inputs, outputs], so that a unit's push reads one
contiguous row slice. All layers go into one flat buffer, and all running pre-activations
into one scratch [N, Σ widths] initialised with the sorted biases, so the kernel takes the
same arguments whatever the number of layers (their offsets and wiring in an int64 table).
The layers' context terms (context_biases) are added to that scratch there too.

The formulas follow csrc/made_sample_math.h line by line: a hidden unit's activation
(ACTIVATION: relu, leaky_relu, elu, silu, tanh, sigmoid) when it becomes final, where its
layer is activated, its residual skips (added to the target layer's accumulator), and a
dimension's rule (RULE, PER_DIM outputs at last-layer positions PER_DIM·i .. PER_DIM·i +
PER_DIM − 1 for the dimension at position i; the rule's constants as float64 scalars).

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
from .affine_coupling import _tanh

BLOCK_B = 16  # samples per program
BLOCK_N = 64  # output positions per push chunk
TABLE_COLUMNS = tl.constexpr(6)  # of the layer table: see _layer_table


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
def _log1p(x):
    """log(1 + x), accurate for small x too (Goldberg's: log(w)·x/(w − 1), w = 1 + x): the
    core language has no log1p that the interpreter runs (libdevice's runs on a GPU only)."""
    w = 1.0 + x
    return tl.where(w == 1.0, x, tl.log(w) * (x / (w - 1.0)))


@triton.jit
def _activated(x, ACTIVATION: tl.constexpr):
    """The hidden units' activation: activate in csrc/made_sample_math.h."""
    if ACTIVATION == "relu":
        y = tl.where(x < 0.0, 0.0, x)
    elif ACTIVATION == "leaky_relu":
        y = tl.where(x < 0.0, x * 0.01, x)
    elif ACTIVATION == "elu":
        y = tl.where(x > 0.0, x, tl.exp(x) - 1.0)
    elif ACTIVATION == "silu":
        y = x / (1.0 + tl.exp(-x))
    elif ACTIVATION == "tanh":
        y = _tanh(x)
    elif ACTIVATION == "sigmoid":
        y = 1.0 / (1.0 + tl.exp(-x))
    return y


@triton.jit
def _soft_clamp(x, limit):
    """x / (1 + |x / limit|): zuko's soft clamp into (−|limit|, |limit|)."""
    return x / (1.0 + tl.abs(x / limit))


@triton.jit
def _spline_param(ptr, live, limit):
    """A spline parameter of each sample, soft-clamped into (−|limit|, |limit|)."""
    return _soft_clamp(tl.load(ptr, mask=live, other=0.0), limit)


@triton.jit
def _rqs_inverse(o, live, y, bound, log_slope, BINS: tl.constexpr):
    """rqs_inverse of csrc/made_sample_math.h for a tile of samples: (x, log f′(x) in float64)
    of zuko's spline at y, whose parameters (BINS widths, BINS heights, BINS − 1
    derivatives) start at o per sample. Every bin is computed; each sample keeps the first
    whose knots hold y (identity outside [−bound, bound])."""
    widths = o
    heights = o + BINS
    derivatives = o + 2 * BINS
    limit = 0.5 * log_slope  # widths and heights: x / (1 + |2x / log slope|)
    w_max = _spline_param(widths, live, limit)
    h_max = _spline_param(heights, live, limit)
    for k in tl.static_range(1, BINS):
        w_max = tl.maximum(w_max, _spline_param(widths + k, live, limit))
        h_max = tl.maximum(h_max, _spline_param(heights + k, live, limit))
    w_sum = tl.zeros_like(y)
    h_sum = tl.zeros_like(y)
    for k in tl.static_range(BINS):
        w_sum += tl.exp(_spline_param(widths + k, live, limit) - w_max)
        h_sum += tl.exp(_spline_param(heights + k, live, limit) - h_max)
    # Knots: x_k = bound·(2·Σ_{j<k} softmax(widths)_j − 1), likewise y_k; derivatives at the
    # knots exp(d), 1 at both ends.
    w_cum = tl.zeros_like(y)
    h_cum = tl.zeros_like(y)
    x0 = tl.zeros_like(y) - bound
    y0 = tl.zeros_like(y) - bound
    d1 = tl.zeros_like(y) + 1.0  # the derivative at knot k + 1, carried to the next bin
    x = y
    log_det = tl.zeros_like(y).to(tl.float64)
    done = ~(y > y0)  # below the spline (or NaN): y itself, as rqs_inverse returns it
    for k in tl.static_range(BINS):
        w_cum += tl.exp(_spline_param(widths + k, live, limit) - w_max) / w_sum
        h_cum += tl.exp(_spline_param(heights + k, live, limit) - h_max) / h_sum
        x1 = bound * (2.0 * w_cum - 1.0)
        y1 = bound * (2.0 * h_cum - 1.0)
        d0 = d1
        # The last knot's load is masked: exp(soft_clamp(0)) = 1.
        d1 = tl.exp(_spline_param(derivatives + k, live & (k < BINS - 1), log_slope))
        dy = y1 - y0
        dx = x1 - x0
        s = dy / dx
        here = ~done & (y <= y1)
        # 0 for the samples whose y lies in another bin keeps their unused arithmetic finite.
        y_ = tl.where(here, y - y0, 0.0)
        bend = d0 + d1 - 2.0 * s
        a = dy * (s - d0) + y_ * bend
        b = dy * d0 - y_ * bend
        c = -s * y_
        z = 2.0 * c / (-b - tl.sqrt(b * b - 4.0 * a * c))
        # log f′(x) = log(s²·(2s·z(1 − z) + d0·(1 − z)² + d1·z²)) − 2·log(s + bend·z(1 − z)).
        zz = z * (1.0 - z)
        num = s * s * (2.0 * s * zz + d0 * (1.0 - z) * (1.0 - z) + d1 * z * z)
        den = s + bend * zz
        x = tl.where(here, x0 + z * dx, x)
        log_det = tl.where(here, tl.log(num).to(tl.float64) - 2.0 * tl.log(den).to(tl.float64),
                           log_det)
        done = done | here
        x0 = x1
        y0 = y1
    return x, log_det


@triton.jit
def _rounded_output(out, live, STORE: tl.constexpr, ACC: tl.constexpr,
                    BF16_BY_BITS: tl.constexpr):
    """A network output read through the model's dtype, as the reference's tensors hold it."""
    return _rounded(tl.load(out, mask=live, other=0.0), STORE, BF16_BY_BITS).to(ACC)


@triton.jit
def _sample_dimension(out, live, e, rule_param0, rule_param1, RULE: tl.constexpr,
                      PER_DIM: tl.constexpr, STORE: tl.constexpr, ACC: tl.constexpr,
                      BF16_BY_BITS: tl.constexpr):
    """(value, term in float64) of one dimension of a tile of samples: sample_dimension in
    csrc/made_sample_math.h. out: the dimension's first output per sample; e: its noise."""
    if RULE == "bernoulli":
        logit = _rounded_output(out, live, STORE, ACC, BF16_BY_BITS)
        prob = _rounded(1.0 / (1.0 + tl.exp(-logit)), STORE, BF16_BY_BITS).to(ACC)
        v = tl.where(e < prob, 1.0, 0.0).to(ACC)
        # −log p(v | logit) = BCE-with-logits in its stable form, in float64 as the CPU
        # kernel sums it.
        l64 = logit.to(tl.float64)
        term = tl.maximum(l64, 0.0) - l64 * v.to(tl.float64) + _log1p(tl.exp(-tl.abs(l64)))
    elif RULE == "zuko_rqs_inverse":
        v, term = _rqs_inverse(out, live, e, tl.full([], rule_param0, ACC),
                               tl.full([], rule_param1, ACC), (PER_DIM + 1) // 3)
    else:
        first = _rounded_output(out, live, STORE, ACC, BF16_BY_BITS)
        second = _rounded_output(out + 1, live, STORE, ACC, BF16_BY_BITS)
        if RULE == "gaussian":
            v = first + _rounded(e * tl.exp(second), STORE, BF16_BY_BITS).to(ACC)
            term = second.to(tl.float64)
        elif RULE == "gaussian_inverse":
            v = _rounded(e - first, STORE, BF16_BY_BITS).to(ACC) * tl.exp(-second)
            term = second.to(tl.float64)
        elif RULE == "zuko_affine_inverse":
            log_scale = _soft_clamp(second, tl.full([], rule_param0, ACC))
            v = _rounded(e - first, STORE, BF16_BY_BITS).to(ACC) / tl.exp(log_scale)
            term = log_scale.to(tl.float64)
        elif RULE == "nflows_affine_inverse":
            # torch's softplus: u above 20 is returned as is.
            scale = tl.where(first > 20.0, first, _log1p(tl.exp(first))) + \
                tl.full([], rule_param0, ACC)
            v = _rounded(e - second, STORE, BF16_BY_BITS).to(ACC) / scale
            term = tl.log(scale).to(tl.float64)
    return v, term


@triton.jit
def _push(rows_ptr, ranges_ptr, table_ptr, acc_ptr, layer, position, value, samples, live,
          acc_stride, BLOCK_N: tl.constexpr):
    """acc[b, layer's begin:end) += value[b] · row[begin:end) for the input `position` of
    `layer`, then a barrier. A tile whose values are all zero (of ReLU, of Bernoulli, samples
    past the end) pushes nothing: zeros add nothing, whatever the activation. The layer
    table's row: where the layer's packed rows, its accumulators (a column of the scratch)
    and its push ranges start, and its outputs."""
    info = table_ptr + layer * TABLE_COLUMNS
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
                        skip_ptr, steps_ptr, dim_order_ptr, out_order_ptr, values_ptr, log_ptr,
                        outputs_ptr, samples_total, dims, steps, layers, acc_stride,
                        rule_param0: tl.float64, rule_param1: tl.float64,
                        RULE: tl.constexpr, PER_DIM: tl.constexpr, ACTIVATION: tl.constexpr,
                        STORE: tl.constexpr, ACC: tl.constexpr, BF16_BY_BITS: tl.constexpr,
                        BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    samples = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    live = samples < samples_total
    last = layers - 1
    last_col = tl.load(table_ptr + last * TABLE_COLUMNS + 1)
    log_term = tl.zeros([BLOCK_B], dtype=tl.float64)
    for t in range(1, steps + 1):
        # Hidden units ready at t − 1 are final: push them, lower layers first (a unit of
        # layer l + 1 ready at t − 1 may need units of layer l that just became final).
        for l in range(0, last):
            hidden_col = tl.load(table_ptr + l * TABLE_COLUMNS + 1)
            hidden_width = tl.load(table_ptr + l * TABLE_COLUMNS + 3)
            activated = tl.load(table_ptr + l * TABLE_COLUMNS + 4)
            p0 = _clamped(tl.load(finalize_ptr + l * (steps + 2) + t - 1), hidden_width)
            p1 = _clamped(tl.load(finalize_ptr + l * (steps + 2) + t), hidden_width)
            for p in range(p0, p1):
                y = tl.load(acc_ptr + samples * acc_stride + hidden_col + p, mask=live,
                            other=0.0)
                # Rounded to the model's dtype, as the reference's tensors are.
                y = _rounded(y, STORE, BF16_BY_BITS).to(ACC)
                h = y
                if activated != 0:
                    h = _rounded(_activated(y, ACTIVATION), STORE, BF16_BY_BITS).to(ACC)
                # Residual skips out of layer l: y added to the same unit of the target.
                for m in range(l + 2, layers):
                    if tl.load(table_ptr + m * TABLE_COLUMNS + 5) == l:
                        target_col = tl.load(table_ptr + m * TABLE_COLUMNS + 1)
                        target_width = tl.load(table_ptr + m * TABLE_COLUMNS + 3)
                        q = _clamped(tl.load(skip_ptr + target_col + p), target_width - 1)
                        target = acc_ptr + samples * acc_stride + target_col + q
                        a = tl.load(target, mask=live, other=0.0)
                        tl.store(target, a + y, mask=live)
                        tl.debug_barrier()
                _push(rows_ptr, ranges_ptr, table_ptr, acc_ptr, l + 1, p, h, samples, live,
                      acc_stride, BLOCK_N)
        # The dimensions of step t: their outputs are final now.
        i0 = _clamped(tl.load(steps_ptr + t - 1), dims)
        i1 = _clamped(tl.load(steps_ptr + t), dims)
        for i in range(i0, i1):
            d = tl.load(dim_order_ptr + i)
            e = tl.load(noise_ptr + samples * dims + d, mask=live, other=0.0).to(ACC)
            v, term = _sample_dimension(acc_ptr + samples * acc_stride + last_col + PER_DIM * i,
                                        live, e, rule_param0, rule_param1, RULE, PER_DIM,
                                        STORE, ACC, BF16_BY_BITS)
            log_term -= term
            stored = _rounded(v, STORE, BF16_BY_BITS)
            tl.store(values_ptr + samples * dims + d, stored, mask=live)
            # Past the end v may be nonzero (Gaussian): zeroed so those samples push nothing.
            _push(rows_ptr, ranges_ptr, table_ptr, acc_ptr, 0, i,
                  tl.where(live, stored.to(ACC), 0.0), samples, live, acc_stride, BLOCK_N)
    tl.store(log_ptr + samples, log_term.to(log_ptr.dtype.element_ty), mask=live)
    # The last layer's accumulators, back in natural order.
    out_width = tl.load(table_ptr + last * TABLE_COLUMNS + 3)
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
def _layer_table(shapes: tuple, activated: tuple, skips: tuple,
                 device: torch.device) -> torch.Tensor:
    """The int64 layer table [L, TABLE_COLUMNS] of layers of these (outputs, inputs) shapes
    and wiring: where each layer's packed rows, accumulators and push ranges start, its
    outputs, whether the next layer reads its activation, and its skip source (−1: none).
    Made once per shape, wiring and device: a table copied to the device at every call would
    make the host wait."""
    table, row_start, acc_start, range_start = [], 0, 0, 0
    for l, (outputs, inputs) in enumerate(shapes):
        table.append((row_start, acc_start, range_start, outputs,
                      int(l < len(activated) and activated[l]), skips[l]))
        row_start += inputs * outputs
        acc_start += outputs
        range_start += inputs
    return torch.tensor(table, dtype=torch.int64, device=device)


def _skip_positions(weights, unit_orders, skips, device) -> torch.Tensor:
    """[Σ widths] int64, sorted like the accumulators: for a layer with a skip source k, the
    position in the layer of each of k's positions' units (0 elsewhere)."""
    parts = []
    for l, weight in enumerate(weights):
        positions = torch.zeros(weight.shape[0], dtype=torch.int64, device=device)
        if skips[l] >= 0:
            position_of = torch.empty_like(positions)
            position_of[unit_orders[l + 1]] = torch.arange(weight.shape[0], device=device)
            positions = position_of[unit_orders[skips[l] + 1]]
        parts.append(positions)
    return torch.cat(parts)


def made_sample(noise, weights, biases, masks, unit_orders, push_ranges, finalize_offsets,
                step_offsets, rule, rule_params, activation, activated, skips, context_biases):
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
    table = _layer_table(tuple(tuple(w.shape) for w in weights), tuple(activated), tuple(skips),
                         device)
    ranges = torch.cat([r.contiguous() for r in push_ranges])
    acc = sorted_biases[None, :].repeat(samples, 1)
    start = 0
    for l, (weight, context) in enumerate(zip(weights, context_biases)):
        if context is not None:  # the layer's accumulators, in sorted positions
            acc[:, start:start + weight.shape[0]] += \
                context.to(acc_dtype).index_select(1, unit_orders[l + 1])
        start += weight.shape[0]
    # At most two constants, 0 where unused. Passed to kernel arguments annotated float64:
    # a plain float argument would reach a compiled kernel as float32.
    rule_param0, rule_param1 = [*rule_params, 0.0, 0.0][:2]
    # With a single layer there are no hidden units to finalise: step_offsets stands in for
    # the (never read) finalize table.
    finalize = (torch.stack(finalize_offsets) if finalize_offsets else step_offsets).contiguous()
    grid = (triton.cdiv(samples, BLOCK_B),)
    skip_positions = _skip_positions(weights, unit_orders, skips, device)
    _made_sample_kernel[grid](noise, rows, ranges, table, acc, finalize, skip_positions,
                              step_offsets.contiguous(), unit_orders[0],
                              unit_orders[-1], values, log_terms, outputs,
                              samples, dims, step_offsets.shape[0] - 1, len(weights),
                              acc.shape[1], rule_param0, rule_param1, RULE=rule,
                              PER_DIM=out_width // max(dims, 1), ACTIVATION=activation,
                              STORE=_TL_DTYPE[noise.dtype], ACC=_TL_DTYPE[acc_dtype],
                              BF16_BY_BITS=INTERPRETED and noise.dtype == torch.bfloat16,
                              BLOCK_B=BLOCK_B, BLOCK_N=BLOCK_N)
    return values, log_terms, outputs
