"""squeeze_2x2 as PyTorch sees it: custom ops, fake implementations, autograd, and the
public function that picks a backend.

The multi-scale RealNVP's squeeze_2x2 moves each 2x2 spatial block into channels
([B, C, H, W] -> [B, 4C, H/2, W/2]), or back when reverse. It is a permutation, so every
backend equals the reference bit for bit, and its gradient is the opposite squeeze.

Ops: torch.ops.fastflow.squeeze_2x2 (C++ CPU and CUDA kernels, schema in
csrc/registration.cpp) and torch.ops.fastflow.squeeze_2x2_triton (Triton).
"""

from __future__ import annotations

import torch

from .. import reference
from .. import triton as _triton
from . import registry
from ._checks import require_float, require_tensors


def squeeze_2x2_output_shape(x: torch.Tensor, reverse: bool, alt_order: bool) -> tuple[int, ...]:
    """Checks the arguments as the reference squeeze_2x2 does (same ValueErrors) and returns
    the output shape.

    The twin of csrc/squeeze_2x2.h, for the Python-side paths (reference, fake tensors, Triton).
    """
    require_tensors("squeeze_2x2", x=x)
    if x.dim() != 4:
        raise ValueError(f"squeeze_2x2: expected a 4-D NCHW tensor x, got shape {tuple(x.shape)}")
    require_float("squeeze_2x2", "x", x)
    b, c, h, w = x.shape
    if reverse:
        if c % 4 != 0:
            raise ValueError(f"Number of channels must be divisible by 4, got {c}." if alt_order
                             else f"Number of channels {c} is not divisible by 4")
        return (b, c // 4, 2 * h, 2 * w)
    if alt_order:
        if h % 2 != 0:
            raise ValueError(f"Height must be divisible by 2, got {h}.")
        if w % 2 != 0:
            raise ValueError(f"Width must be divisible by 4, got {w}.")  # the reference's words
    elif h % 2 != 0 or w % 2 != 0:
        raise ValueError(f"Expected even spatial dims HxW, got {h}x{w}")
    return (b, 4 * c, h // 2, w // 2)


def _register_fake_and_autograd(name: str) -> None:
    qualname = f"fastflow::{name}"

    @torch.library.register_fake(qualname)
    def _fake(x, reverse=False, alt_order=False):
        return x.new_empty(squeeze_2x2_output_shape(x, reverse, alt_order))

    def setup_context(ctx, inputs, output):
        _, ctx.reverse, ctx.alt_order = inputs

    def backward(ctx, grad):
        # A permutation's gradient is its inverse: the opposite squeeze, same order.
        op = getattr(torch.ops.fastflow, name)
        return op(grad, not ctx.reverse, ctx.alt_order), None, None

    torch.library.register_autograd(qualname, backward, setup_context=setup_context)


if _triton.VERSION is not None:
    from ..triton.squeeze_2x2 import squeeze_2x2_triton as _launch_triton

    @torch.library.custom_op("fastflow::squeeze_2x2_triton", mutates_args=())
    def _squeeze_2x2_triton(x: torch.Tensor, reverse: bool = False,
                            alt_order: bool = False) -> torch.Tensor:
        out = x.new_empty(squeeze_2x2_output_shape(x, reverse, alt_order))
        _launch_triton(x, out, reverse, alt_order)
        return out

for _suffix in registry.KERNEL_SUFFIXES:
    _register_fake_and_autograd("squeeze_2x2" + _suffix)


def _reference(x, reverse, alt_order):
    return reference.squeeze_2x2(x, reverse=reverse, alt_order=alt_order)


# A backend is listed in `auto` only once it has been verified on that device type: the
# CUDA and Triton kernels have run on the CPU (emulated, interpreted) but not yet on a GPU.
OP = registry.register(registry.Op(
    name="squeeze_2x2", functions=("squeeze_2x2",),
    summary="2x2 blocks into channels and back, `alt_order` (multi-scale RealNVP)",
    reference=_reference, reference_source="RealNVP's `squeeze_2x2`",
    check=squeeze_2x2_output_shape, tensors=("x",), bench="squeeze_2x2",
    auto={"cpu": ("cpu", "torch"), "cuda": ("torch",)}))


def squeeze_2x2(x: torch.Tensor, reverse: bool = False, alt_order: bool = False) -> torch.Tensor:
    """The multi-scale RealNVP's squeeze_2x2 on the current backend (see fastflow.backend).

    Args:
        x: NCHW tensor, float32/float64/float16/bfloat16, any strides.
        reverse: undo a squeeze ([B, 4C, h, w] -> [B, C, 2h, 2w]).
        alt_order: the reference's alternate channel order (used before the multi-scale
            split).

    Returns a new contiguous tensor. Raises the reference's ValueErrors for odd H or W
    (forward) and C not divisible by 4 (reverse), a ValueError if x is not 4-D, and a
    TypeError for a non-float x.
    """
    return registry.call(OP, x, reverse, alt_order)
