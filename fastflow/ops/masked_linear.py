"""Masked linear (MADE's MaskedLinear, seeds 000 and 003) as PyTorch sees it.

    y = x·(W⊙M)ᵀ + b        x [B, K], weight W [N, K], mask M [N, K], bias b [N] or None
    dX = dY·(W⊙M),   dW = (dYᵀ·X)⊙M,   db = Σ_rows dY

The reference (F.linear(x, mask * weight, bias)) writes W⊙M to memory on every call before
the matrix product. Here the mask is applied to each weight tile as it is loaded.

masked_linear takes M as a matrix. degree_masked_linear takes it as MADE builds it, from
degrees: M[j, k] = [in_degrees[k] ≤ out_degrees[j]] (`<` with strict=True, MADE's output
layer). Sorted by degree the mask is a staircase, and the kernels skip the weight tiles that
are entirely zero: about half the FLOPs of the dense product for MADE's masks. The units
stay in the caller's order (the kernels gather and scatter through the sort order).
degrees_from_mask recovers degrees from any mask that has them (a staircase up to
permutation), which is how fastflow.nn.MaskedLinear picks the degree form for masks loaded
from a reference model.

Ops: torch.ops.fastflow.[degree_]masked_linear[_backward] (C++ CPU and CUDA kernels) and
the same names with _triton (Triton). The mask and the degrees get no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import triton as _triton
from .._extension import EXTENSION
from ..backend import get_backend, resolve
from ._checks import require_float, require_like_x, require_tensors

# Backends 'auto' may pick, fastest first, per device type. On the CPU the C++ kernels of
# the degree form beat the reference once a call has about 2^24 multiply-adds (batch 64 on
# seed 000's 512-wide layers: README, Benchmarks; the whole MADE fwd+bwd 1.0x at batch 64,
# 1.3x at 256); below that, packing the weights and the op's overhead cost more than the
# skipped tiles save (seed 003's 64-wide MADE runs 2x slower at batch 256). The
# matrix-mask form (no tiles to skip) is slower than the reference's BLAS call at every size
# measured. 'auto' keeps those calls on the reference. The CUDA and Triton kernels wait
# for a GPU check (run on the CPU, emulated or interpreted, not yet on a GPU).
AUTO_ORDER = {"cpu": ("cpu",), "cuda": ("torch",)}
AUTO_MIN_MACS_CPU = 1 << 24


def _backend(x: torch.Tensor, weight: torch.Tensor, degree_form: bool) -> str:
    name = resolve("masked_linear", AUTO_ORDER, x.device)
    if get_backend() == "auto" and name == "cpu" and (
            not degree_form or x.shape[0] * weight.numel() < AUTO_MIN_MACS_CPU):
        return "torch"
    return name


def degree_mask(in_degrees: torch.Tensor, out_degrees: torch.Tensor) -> torch.Tensor:
    """M[j, k] = in_degrees[k] <= out_degrees[j], as a bool [N, K] tensor."""
    return in_degrees[None, :] <= out_degrees[:, None]


def masked_linear_reference(x, weight, mask, bias=None):
    """The seeds' MaskedLinear.forward (the 'torch' backend)."""
    return F.linear(x, mask * weight, bias)


def degree_masked_linear_reference(x, weight, in_degrees, out_degrees, bias=None):
    return F.linear(x, degree_mask(in_degrees, out_degrees).to(weight.dtype) * weight, bias)


def degree_plan(in_degrees: torch.Tensor, out_degrees: torch.Tensor):
    """(in_order, out_order, row_prefix): units sorted by degree (stable), and for each sorted
    output r the number of sorted inputs it sees (the twin of csrc/masked_linear.h)."""
    in_sorted, in_order = torch.sort(in_degrees, stable=True)
    out_sorted, out_order = torch.sort(out_degrees, stable=True)
    return in_order, out_order, torch.searchsorted(in_sorted, out_sorted, right=True)


def degrees_from_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Degrees (in_degrees [K], out_degrees [N], int64) with degree_mask(...) == mask, or
    None when the mask has none.

    A 0/1 mask has degrees exactly when its rows' supports are nested (a staircase once rows
    and columns are sorted). Then column k's degree is the number of rows that do not see
    it, and row j's is the largest degree among the columns it sees (−1 for an empty row).
    One pass over the mask, plus one to check the result.
    """
    seen = mask != 0
    in_degrees = mask.shape[0] - seen.sum(dim=0)
    if mask.shape[1] == 0:
        out_degrees = torch.full((mask.shape[0],), -1, dtype=torch.long, device=mask.device)
    else:
        out_degrees = torch.where(seen, in_degrees[None, :], -1).amax(dim=1)
    if not torch.equal(degree_mask(in_degrees, out_degrees), seen):
        return None
    return in_degrees, out_degrees


def _check_common(op, x, weight, bias):
    if x.dim() != 2:
        raise ValueError(f"{op}: expected x of shape [B, in_features], got {tuple(x.shape)}")
    require_float(op, "x", x)
    if weight.dim() != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: weight must have shape [out_features, {x.shape[1]}], got "
                         f"{tuple(weight.shape)}")
    require_like_x(op, x, weight=weight)
    if bias is not None:
        require_tensors(op, bias=bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"{op}: bias must have shape [{weight.shape[0]}], got {tuple(bias.shape)}")
        require_like_x(op, x, bias=bias)


def check_masked_linear(x, weight, mask, bias) -> None:
    """ValueError/TypeError naming the argument (the twin of csrc/masked_linear.h)."""
    require_tensors("masked_linear", x=x, weight=weight, mask=mask)
    _check_common("masked_linear", x, weight, bias)
    if mask.shape != weight.shape:
        raise ValueError(f"masked_linear: mask must have weight's shape {tuple(weight.shape)}, "
                         f"got {tuple(mask.shape)}")
    if not mask.is_floating_point():
        raise TypeError(f"masked_linear: mask must be a float tensor, got {mask.dtype}")
    require_like_x("masked_linear", x, mask=mask)


def check_degree_masked_linear(x, weight, in_degrees, out_degrees, bias) -> None:
    op = "degree_masked_linear"
    require_tensors(op, x=x, weight=weight, in_degrees=in_degrees, out_degrees=out_degrees)
    _check_common(op, x, weight, bias)
    for name, value, size in (("in_degrees", in_degrees, weight.shape[1]),
                              ("out_degrees", out_degrees, weight.shape[0])):
        if value.shape != (size,):
            raise ValueError(f"{op}: {name} must have shape [{size}], got {tuple(value.shape)}")
        if value.dtype != torch.int64:
            raise TypeError(f"{op}: {name} must be int64, got {value.dtype}")
        if value.device != x.device:
            raise ValueError(f"{op}: {name} must be on x's device {x.device}, got {value.device}")


def _register_autograd(op: str, suffix: str) -> None:
    """Autograd of fastflow::<op><suffix>(x, weight, mask or degrees..., bias) from
    fastflow::<op>_backward<suffix>(grad_y, x, weight, mask or degrees..., input_grad) ->
    (grad_x, grad_weight, grad_bias); grad_x is skipped when x needs none."""
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:-1])
        ctx.has_bias = inputs[-1] is not None

    def backward(ctx, grad_y):
        input_grad = ctx.needs_input_grad[0]
        grad_x, grad_weight, grad_bias = getattr(torch.ops.fastflow, f"{op}_backward{suffix}")(
            grad_y.contiguous(), *ctx.saved_tensors, input_grad)
        no_grads = [None] * (len(ctx.saved_tensors) - 2)
        return (grad_x if input_grad else None), grad_weight, *no_grads, \
            (grad_bias if ctx.has_bias else None)

    torch.library.register_autograd(f"fastflow::{op}{suffix}", backward,
                                    setup_context=setup_context)


def _fake_backward(grad_y, x, weight, *mask_or_degrees_and_input_grad):
    grad_x = x.new_empty(x.shape if mask_or_degrees_and_input_grad[-1] else (0,))
    return grad_x, weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])


def _register(suffix: str) -> None:
    """Fake implementations and autograd of fastflow::[degree_]masked_linear<suffix>."""
    @torch.library.register_fake(f"fastflow::masked_linear{suffix}")
    def _fake(x, weight, mask, bias):
        check_masked_linear(x, weight, mask, bias)
        return x.new_empty(x.shape[0], weight.shape[0])

    @torch.library.register_fake(f"fastflow::degree_masked_linear{suffix}")
    def _fake_degree(x, weight, in_degrees, out_degrees, bias):
        check_degree_masked_linear(x, weight, in_degrees, out_degrees, bias)
        return x.new_empty(x.shape[0], weight.shape[0])

    for op in ("masked_linear", "degree_masked_linear"):
        torch.library.register_fake(f"fastflow::{op}_backward{suffix}", _fake_backward)
        _register_autograd(op, suffix)


if EXTENSION.loaded:
    _register("")

if _triton.VERSION is not None:
    from ..triton import masked_linear as _kernels

    def _rows_unit_stride(x):
        return x if x.shape[1] <= 1 or x.stride(1) == 1 else x.contiguous()

    def _forward_triton(x, weight, mask, plan, bias):
        y = torch.empty(x.shape[0], weight.shape[0], dtype=x.dtype, device=x.device)
        bias = bias.contiguous() if bias is not None else None
        _kernels.masked_linear_forward(_rows_unit_stride(x), weight.contiguous(), mask, *plan,
                                       bias, y)
        return y

    def _backward_triton(grad_y, x, weight, mask, plan, input_grad):
        grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        grad_weight = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
        _kernels.masked_linear_backward(grad_y.contiguous(), _rows_unit_stride(x),
                                        weight.contiguous(), mask, *plan, grad_x, grad_weight)
        if not input_grad:  # computed all the same: the kernels have no switch for it
            grad_x = x.new_empty(0)
        return grad_x, grad_weight, grad_y.sum(0)

    @torch.library.custom_op("fastflow::masked_linear_triton", mutates_args=())
    def _masked_linear_triton(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                              bias: torch.Tensor | None) -> torch.Tensor:
        check_masked_linear(x, weight, mask, bias)
        return _forward_triton(x, weight, mask.contiguous(), (None, None, None), bias)

    @torch.library.custom_op("fastflow::masked_linear_backward_triton", mutates_args=())
    def _masked_linear_backward_triton(
            grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
            input_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _backward_triton(grad_y, x, weight, mask.contiguous(), (None, None, None),
                                input_grad)

    @torch.library.custom_op("fastflow::degree_masked_linear_triton", mutates_args=())
    def _degree_masked_linear_triton(x: torch.Tensor, weight: torch.Tensor,
                                     in_degrees: torch.Tensor, out_degrees: torch.Tensor,
                                     bias: torch.Tensor | None) -> torch.Tensor:
        check_degree_masked_linear(x, weight, in_degrees, out_degrees, bias)
        return _forward_triton(x, weight, None, degree_plan(in_degrees, out_degrees), bias)

    @torch.library.custom_op("fastflow::degree_masked_linear_backward_triton", mutates_args=())
    def _degree_masked_linear_backward_triton(
            grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, in_degrees: torch.Tensor,
            out_degrees: torch.Tensor,
            input_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _backward_triton(grad_y, x, weight, None, degree_plan(in_degrees, out_degrees),
                                input_grad)

    _register("_triton")


def masked_linear(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """x·(weight⊙mask)ᵀ + bias on the current backend, the mask applied as weight tiles load.

    Args:
        x: [B, in_features] (float32/float64/float16/bfloat16; rows may be strided).
        weight: [out_features, in_features], x's dtype.
        mask: [out_features, in_features] float (cast to x's dtype); no gradient.
        bias: [out_features] or None.
    """
    if isinstance(mask, torch.Tensor) and isinstance(x, torch.Tensor) and mask.is_floating_point():
        mask = mask.to(x.dtype)
    check_masked_linear(x, weight, mask, bias)
    name = _backend(x, weight, degree_form=False)
    if name == "torch":
        return masked_linear_reference(x, weight, mask, bias)
    op = torch.ops.fastflow.masked_linear_triton if name == "triton" else torch.ops.fastflow.masked_linear
    return op(x, weight, mask, bias)


def degree_masked_linear(x: torch.Tensor, weight: torch.Tensor, in_degrees: torch.Tensor,
                         out_degrees: torch.Tensor, bias: torch.Tensor | None = None, *,
                         strict: bool = False) -> torch.Tensor:
    """masked_linear with the mask given by MADE degrees: unit j of the output sees input k
    when in_degrees[k] <= out_degrees[j] (strictly less with strict=True). The all-zero
    weight tiles of the degree-sorted staircase are skipped.

    Args:
        in_degrees: [in_features] int64; out_degrees: [out_features] int64, on x's device.
        strict: MADE's output-layer rule, in_degrees[k] < out_degrees[j].
    """
    if strict and isinstance(out_degrees, torch.Tensor):
        out_degrees = out_degrees - 1
    check_degree_masked_linear(x, weight, in_degrees, out_degrees, bias)
    name = _backend(x, weight, degree_form=True)
    if name == "torch":
        return degree_masked_linear_reference(x, weight, in_degrees, out_degrees, bias)
    op = (torch.ops.fastflow.degree_masked_linear_triton if name == "triton"
          else torch.ops.fastflow.degree_masked_linear)
    return op(x, weight, in_degrees, out_degrees, bias)
