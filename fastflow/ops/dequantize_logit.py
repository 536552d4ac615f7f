"""Dequantize-and-logit with its log-determinant (the multi-scale RealNVP's _pre_process)
as PyTorch sees it: one kernel instead of about fifteen elementwise ones and a reduction.

    p = ((2·(x·255 + noise)/256 − 1)·c + 1)/2,   y = log(p) − log(1 − p)
    sldj = Σ [softplus(y) + softplus(−y) − softplus(log(1 − c) − log(c))]   per sample

The noise is an argument (the multi-scale RealNVP draws torch.rand_like(x) inside), so
results can be compared exactly. The gradient (to x and noise; the constraint is a buffer)
is a short PyTorch formula shared by every backend. Ops: torch.ops.fastflow.dequantize_logit
(C++ CPU and CUDA kernels) and torch.ops.fastflow.dequantize_logit_triton.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import triton as _triton
from . import registry
from ._checks import require_float, require_like_x, require_tensors
from .affine_coupling import logdet_dtype


def dequantize_logit_reference(x, noise, constraint):
    """The multi-scale RealNVP's _pre_process, with the noise given, in plain PyTorch."""
    y = (x * 255. + noise) / 256.
    y = (2 * y - 1) * constraint
    y = (y + 1) / 2
    y = y.log() - (1. - y).log()
    ldj = F.softplus(y) + F.softplus(-y) - F.softplus((1. - constraint).log() - constraint.log())
    return y, ldj.flatten(1).sum(-1).to(logdet_dtype(x.dtype))


def check_dequantize_logit(x, noise, constraint) -> None:
    require_tensors("dequantize_logit", x=x, noise=noise, constraint=constraint)
    if x.dim() < 1:
        raise ValueError("dequantize_logit: x needs a batch dimension, got a scalar")
    require_float("dequantize_logit", "x", x)
    if noise.shape != x.shape:
        raise ValueError(f"dequantize_logit: noise must have x's shape {tuple(x.shape)}, got {tuple(noise.shape)}")
    if constraint.numel() != 1:
        raise ValueError(f"dequantize_logit: constraint must have one element, got {constraint.numel()}")
    require_like_x("dequantize_logit", x, noise=noise, constraint=constraint)


def _register(name: str) -> None:
    @torch.library.register_fake(f"fastflow::{name}")
    def _fake(x, noise, constraint):
        check_dequantize_logit(x, noise, constraint)
        return x.new_empty(x.shape), x.new_empty(x.shape[0], dtype=logdet_dtype(x.dtype))

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward(ctx, grad_y, grad_sldj):
        x, noise, c = ctx.saved_tensors
        p = ((2 * ((x * 255. + noise) / 256.) - 1) * c + 1) / 2
        # dy/dp = 1/(p(1-p)); d(ldj)/dp = (2p-1)/(p(1-p)); dp/dx = 255c/256; dp/dnoise = c/256
        grad_sldj = grad_sldj.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        grad_p = (grad_y + grad_sldj * (2 * p - 1)) / (p * (1 - p)) * (c / 256.)
        return grad_p * 255., grad_p, None

    torch.library.register_autograd(f"fastflow::{name}", backward, setup_context=setup_context)


if _triton.VERSION is not None:
    from ..triton import dequantize_logit as _kernels

    @torch.library.custom_op("fastflow::dequantize_logit_triton", mutates_args=())
    def _dequantize_logit_triton(x: torch.Tensor, noise: torch.Tensor,
                                 constraint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_dequantize_logit(x, noise, constraint)
        x, noise = x.contiguous(), noise.contiguous()
        y = torch.empty_like(x)
        sldj = torch.empty(x.shape[0], dtype=logdet_dtype(x.dtype), device=x.device)
        _kernels.dequantize_logit(x, noise, constraint.contiguous(), y, sldj)
        return y, sldj

for _suffix in registry.KERNEL_SUFFIXES:
    _register("dequantize_logit" + _suffix)

OP = registry.register(registry.Op(
    name="dequantize_logit", functions=("dequantize_logit",),
    summary="dequantize, logit and their log-determinant (multi-scale RealNVP's pre-process)",
    reference=dequantize_logit_reference, reference_source="the RealNVP's `_pre_process`",
    check=check_dequantize_logit, tensors=("x", "noise", "constraint"), bench="dequantize_logit",
    auto={"cpu": ("cpu", "torch"), "cuda": ("torch",)}))


def dequantize_logit(x: torch.Tensor, noise: torch.Tensor, constraint: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The multi-scale RealNVP's pre-process on the current backend; returns
    (logits, sldj [B]).

    Args:
        x: [B, ...] data in [0, 1] (not checked here: the model checks its input).
        noise: uniform noise in [0, 1), x's shape and dtype.
        constraint: the data_constraint buffer (one element, e.g. 0.9); cast to x's dtype.
    """
    if isinstance(constraint, torch.Tensor) and isinstance(x, torch.Tensor) and constraint.is_floating_point():
        constraint = constraint.to(x.dtype)
    return registry.call(OP, x, noise, constraint)
