"""Vector affine coupling with its log-determinant (seeds 000 and 004) as PyTorch sees it.

From x [B, D], the conditioner's raw s and t [B, D] and a mask m [D] (1: kept, 0: changed):

    s' = act(s)·(1−m)   (act: tanh when tanh_scale, else identity),   t' = t·(1−m)
    forward: y = x·m + (1−m)·(x·exp(s') + t'),       logdet = Σ_d s'
    reverse: y = x·m + (1−m)·(x − t')·exp(−s'),      logdet = −Σ_d s'

One fused kernel reads x, s and t once and writes y and the per-row logdet (float32, or
float64 for float64 inputs), where the reference launches about ten elementwise kernels
and a reduction. s and t may be the two halves of one conditioner output
(`st.chunk(2, dim=1)`), read in place. The mask gets no gradient (it is a buffer in the
seeds).

Ops: torch.ops.fastflow.affine_coupling[_backward] (C++ CPU and CUDA kernels) and
torch.ops.fastflow.affine_coupling[_backward]_triton (Triton).
"""

from __future__ import annotations

import torch

from .. import triton as _triton
from .._extension import EXTENSION
from ..backend import resolve
from ._registration import register_backward_op

# Backends 'auto' may pick, fastest first, per device type; GPU kernels are listed once
# they have been verified on a GPU (not yet).
AUTO_ORDER = {"cpu": ("cpu", "torch"), "cuda": ("torch",)}

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def logdet_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def affine_coupling_reference(x, s, t, mask, tanh_scale=False, reverse=False):
    """The seeds' coupling in plain PyTorch (the 'torch' backend)."""
    change = 1 - mask
    s_masked = (torch.tanh(s) if tanh_scale else s) * change
    t_masked = t * change
    if reverse:
        y = x * mask + change * ((x - t_masked) * torch.exp(-s_masked))
        logdet = -s_masked.sum(dim=1)
    else:
        y = x * mask + change * (x * torch.exp(s_masked) + t_masked)
        logdet = s_masked.sum(dim=1)
    return y, logdet.to(logdet_dtype(x.dtype))


def check_affine_coupling(x, s, t, mask) -> None:
    """ValueError/TypeError naming the argument (the twin of csrc/affine_coupling.h)."""
    for name, value in (("x", x), ("s", s), ("t", t), ("mask", mask)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"affine_coupling: {name} must be a torch.Tensor, got {type(value).__name__}")
    if x.dim() != 2:
        raise ValueError(f"affine_coupling: expected x of shape [B, D], got {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"affine_coupling: x must be float32, float64, float16 or bfloat16, got {x.dtype}")
    for name, value in (("s", s), ("t", t)):
        if value.shape != x.shape:
            raise ValueError(f"affine_coupling: {name} must have x's shape {tuple(x.shape)}, got {tuple(value.shape)}")
        if value.dtype != x.dtype:
            raise TypeError(f"affine_coupling: {name} must have x's dtype {x.dtype}, got {value.dtype}")
    if mask.shape != (x.shape[1],):
        raise ValueError(f"affine_coupling: mask must have shape [{x.shape[1]}] (one entry per "
                         f"column of x), got {tuple(mask.shape)}")
    if not mask.is_floating_point():
        raise TypeError(f"affine_coupling: mask must be a float tensor, got {mask.dtype}")
    for name, value in (("s", s), ("t", t), ("mask", mask)):
        if value.device != x.device:
            raise ValueError(f"affine_coupling: {name} must be on x's device {x.device}, got {value.device}")


def _rows_contiguous(v):
    return v if v.shape[1] <= 1 or v.stride(1) == 1 else v.contiguous()


def _register_fake_and_autograd(forward: str, backward: str) -> None:
    @torch.library.register_fake(f"fastflow::{forward}")
    def _fake(x, s, t, mask, tanh_scale, reverse):
        check_affine_coupling(x, s, t, mask)
        return x.new_empty(x.shape), x.new_empty(x.shape[0], dtype=logdet_dtype(x.dtype))

    @torch.library.register_fake(f"fastflow::{backward}")
    def _fake_backward(grad_y, grad_logdet, x, s, t, mask, tanh_scale, reverse):
        return x.new_empty(x.shape), x.new_empty(x.shape), x.new_empty(x.shape)

    register_backward_op(forward, backward, num_tensors=4)


if EXTENSION.loaded:
    _register_fake_and_autograd("affine_coupling", "affine_coupling_backward")

if _triton.VERSION is not None:
    from ..triton import affine_coupling as _kernels

    @torch.library.custom_op("fastflow::affine_coupling_triton", mutates_args=())
    def _affine_coupling_triton(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
                                mask: torch.Tensor, tanh_scale: bool,
                                reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        check_affine_coupling(x, s, t, mask)
        x, s, t = _rows_contiguous(x), _rows_contiguous(s), _rows_contiguous(t)
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        logdet = torch.empty(x.shape[0], dtype=logdet_dtype(x.dtype), device=x.device)
        _kernels.affine_coupling_forward(x, s, t, mask.contiguous(), y, logdet, tanh_scale, reverse)
        return y, logdet

    @torch.library.custom_op("fastflow::affine_coupling_backward_triton", mutates_args=())
    def _affine_coupling_backward_triton(
            grad_y: torch.Tensor, grad_logdet: torch.Tensor, x: torch.Tensor, s: torch.Tensor,
            t: torch.Tensor, mask: torch.Tensor, tanh_scale: bool,
            reverse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, s, t, grad_y = (_rows_contiguous(v) for v in (x, s, t, grad_y))
        grads = [torch.empty(x.shape, dtype=x.dtype, device=x.device) for _ in range(3)]
        _kernels.affine_coupling_backward(grad_y, grad_logdet, x, s, t, mask.contiguous(), *grads,
                                          tanh_scale, reverse)
        return tuple(grads)

    _register_fake_and_autograd("affine_coupling_triton", "affine_coupling_backward_triton")


def affine_coupling(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, *,
                    tanh_scale: bool = False, reverse: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused vector affine coupling on the current backend; returns (y, logdet).

    Args:
        x: [B, D] input (float32/float64/float16/bfloat16).
        s, t: [B, D] raw scale and shift from the conditioner, x's dtype; views with
            contiguous rows (such as the halves of `st.chunk(2, dim=1)`) are read in place.
        mask: [D], 1 where x is kept, 0 where it is transformed; cast to x's dtype.
        tanh_scale: apply tanh to s first (seed 004; seed 000's s-net ends in Tanh itself).
        reverse: the inverse transform (logdet = −Σ s').
    """
    if isinstance(mask, torch.Tensor) and isinstance(x, torch.Tensor) and mask.is_floating_point():
        mask = mask.to(x.dtype)
    check_affine_coupling(x, s, t, mask)
    name = resolve("affine_coupling", AUTO_ORDER, x.device)
    if name == "torch":
        return affine_coupling_reference(x, s, t, mask, tanh_scale, reverse)
    op = torch.ops.fastflow.affine_coupling_triton if name == "triton" else torch.ops.fastflow.affine_coupling
    return op(x, s, t, mask, tanh_scale, reverse)
