"""Masked linear (the MaskedLinear of the MADE and of the MAF) as PyTorch sees it.

    y = x·(W⊙M)ᵀ + b        x [B, K], weight W [N, K], mask M [N, K], bias b [N] or None
    dX = dY·(W⊙M),   dW = (dYᵀ·X)⊙M,   db = Σ_rows dY

The reference is F.linear(x, mask * weight, bias). The CUDA and Triton kernels apply the mask
to each weight tile as it is loaded; the C++ CPU kernels run the CPU BLAS (csrc/cpu).

masked_linear takes M as a matrix. degree_masked_linear takes it as MADE builds it, from
degrees: M[j, k] = [in_degrees[k] ≤ out_degrees[j]] (`<` with strict=True, MADE's output
layer). Sorted by degree the mask is a staircase, and the kernels skip its all-zero part:
about half the FLOPs of the dense product for MADE's masks (5/8 with the CPU's 4 blocks,
each one BLAS call). The units
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
from . import registry
from ._checks import require_float, require_like_x, require_tensors


def degree_mask(in_degrees: torch.Tensor, out_degrees: torch.Tensor) -> torch.Tensor:
    """M[j, k] = in_degrees[k] <= out_degrees[j], as a bool [N, K] tensor."""
    return in_degrees[None, :] <= out_degrees[:, None]


def masked_linear_reference(x, weight, mask, bias=None):
    """The reference MaskedLinear.forward (the 'torch' backend)."""
    return F.linear(x, mask * weight, bias)


def degree_masked_linear_reference(x, weight, in_degrees, out_degrees, bias=None):
    return F.linear(x, _float_degree_mask(in_degrees, out_degrees, weight.dtype) * weight, bias)


_DEGREE_MASKS: list = []  # (in_degrees, out_degrees, dtype, mask), most recent first
_DEGREE_MASKS_KEPT = 32  # a few MAFs' layers


def _float_degree_mask(in_degrees, out_degrees, dtype):
    """degree_mask(in_degrees, out_degrees) as `dtype`, kept for the last 32 degree pairs
    and found by the degrees' values (a few hundred integers compared), so edits of any
    kind are seen and a new tensor with the same values (strict=True's out_degrees − 1,
    made on every call) finds its mask."""
    if torch.compiler.is_compiling():
        return degree_mask(in_degrees, out_degrees).to(dtype)
    for i, (ins, outs, kept_dtype, mask) in enumerate(_DEGREE_MASKS):
        if (kept_dtype == dtype and ins.device == in_degrees.device
                and ins.shape == in_degrees.shape and outs.shape == out_degrees.shape
                and torch.equal(ins, in_degrees) and torch.equal(outs, out_degrees)):
            _DEGREE_MASKS.insert(0, _DEGREE_MASKS.pop(i))
            return mask
    mask = degree_mask(in_degrees, out_degrees).to(dtype)
    _DEGREE_MASKS.insert(0, (in_degrees.clone(), out_degrees.clone(), dtype, mask))
    del _DEGREE_MASKS[_DEGREE_MASKS_KEPT:]
    return mask


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
        if suffix:  # the C++ kernels' autograd is in C++ (csrc/cpu/masked_linear.cpp)
            _register_autograd(op, suffix)


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

for _suffix in registry.KERNEL_SUFFIXES:
    _register(_suffix)


def _sizes(x, weight, *rest):
    return (f"{weight.shape[1]}->{weight.shape[0]}",)


# 'auto' on the CPU. The mask as a matrix: the reference. Its C++ kernel multiplies the
# masked weight on the BLAS as the reference does (it has no degrees to skip zeros by):
# timed call by call against it on a 2-core AMD EPYC (Zen 4), 0.77-1.01x at the bench's
# sizes, and 'auto' measuring between the two ran at 0.83-0.97x the reference. The degree
# form: the C++ kernels where measured faster than the reference on this machine, per shape
# class (fastflow.autotune). The staircase halves the matrix products, but the blocks run
# below the BLAS's full speed and the gathers into degree order cost back part of the
# saving, so which wins depends on the CPU, the thread count and the sizes. The CUDA and
# Triton kernels wait for a GPU check (run on the CPU, emulated or interpreted).
OP = registry.register(registry.Op(
    name="masked_linear", functions=("masked_linear",),
    summary="`x·(weight⊙mask)ᵀ + bias`, the mask as a matrix (MADE, MAF)",
    reference=masked_linear_reference, reference_source="`F.linear(x, mask * weight, bias)`",
    check=check_masked_linear, tensors=("x", "weight", "mask"),
    auto={"cpu": ("torch",), "cuda": ("torch",)}, bench="masked_linear"))
DEGREE_OP = registry.register(registry.Op(
    name="degree_masked_linear", functions=("degree_masked_linear",),
    summary="the same, the mask given by MADE degrees; skips the sorted staircase's zeros",
    reference=degree_masked_linear_reference, reference_source="the same, mask from degrees",
    check=check_degree_masked_linear, tensors=("x", "weight", "in_degrees", "out_degrees"),
    auto={"cpu": ("cpu",), "cuda": ("torch",)}, bench="degree_masked_linear",
    measured_sizes=_sizes))


def masked_linear_backend(x, weight, mask, bias=None) -> str:
    """The backend masked_linear(x, weight, mask, bias) runs now (for checked arguments;
    under 'auto' on the CPU, measured on the first call of its shape class)."""
    return registry.choose(OP, (x, weight, mask, bias))


def degree_masked_linear_backend(x, weight, in_degrees, out_degrees, bias=None) -> str:
    """The backend degree_masked_linear(x, weight, in_degrees, out_degrees, bias) runs now
    (non-strict degrees, checked arguments)."""
    return registry.choose(DEGREE_OP, (x, weight, in_degrees, out_degrees, bias))


def masked_linear(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """x·(weight⊙mask)ᵀ + bias on the current backend.

    Args:
        x: [B, in_features] (float32/float64/float16/bfloat16; rows may be strided).
        weight: [out_features, in_features], x's dtype.
        mask: [out_features, in_features] float (cast to x's dtype); no gradient.
        bias: [out_features] or None.
    """
    if (isinstance(mask, torch.Tensor) and isinstance(x, torch.Tensor) and mask.is_floating_point()
            and mask.dtype != x.dtype):
        mask = mask.to(x.dtype)
    return registry.call(OP, x, weight, mask, bias)


def degree_masked_linear(x: torch.Tensor, weight: torch.Tensor, in_degrees: torch.Tensor,
                         out_degrees: torch.Tensor, bias: torch.Tensor | None = None, *,
                         strict: bool = False) -> torch.Tensor:
    """masked_linear with the mask given by MADE degrees: unit j of the output sees input k
    when in_degrees[k] <= out_degrees[j] (strictly less with strict=True). The kernels
    skip the all-zero part of the degree-sorted staircase.

    Args:
        in_degrees: [in_features] int64; out_degrees: [out_features] int64, on x's device.
        strict: MADE's output-layer rule, in_degrees[k] < out_degrees[j].
    """
    if strict and isinstance(out_degrees, torch.Tensor):
        out_degrees = out_degrees - 1
    return registry.call(DEGREE_OP, x, weight, in_degrees, out_degrees, bias)
