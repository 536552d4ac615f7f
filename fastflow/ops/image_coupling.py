"""Image affine coupling with its log-determinant (the multi-scale RealNVP's CouplingLayer)
as PyTorch sees it.

From x [B, C, H, W], the ResNet's output st [B, 2·Cc, H, W] and the weight-normalized
rescale vector [Cc]: s = rescale·tanh(st[:, :Cc]), t = st[:, Cc:], masked either by a
checkerboard computed from the indices (Cc = C) or by channel halves (Cc = C/2), then

    forward: y = (x + t)·exp(s), logdet = Σ s;    reverse: y = x·exp(−s) − t, logdet = −Σ s

(the multi-scale RealNVP only accumulates the logdet going forward). The fused kernels read
st and the rescale weight in place; gradients reach x, st and the rescale weight. Details
of the masks: csrc/image_coupling_index.h.

Ops: torch.ops.fastflow.image_coupling[_backward] (C++ CPU and CUDA kernels) and
torch.ops.fastflow.image_coupling[_backward]_triton (Triton).
"""

from __future__ import annotations

import torch

from .. import triton as _triton
from . import registry
from ._checks import require_float, require_like_x, require_tensors
from ._registration import register_backward_op
from .affine_coupling import AUTO_DTYPES, logdet_dtype


def checkerboard_keep(height, width, reverse_mask, dtype, device):
    """The multi-scale RealNVP's checkerboard_mask as [H, W]: 1 where the pixel is kept."""
    rows = torch.arange(height, device=device).view(-1, 1)
    cols = torch.arange(width, device=device).view(1, -1)
    keep = ((rows % 2) + cols) % 2
    return (1 - keep if reverse_mask else keep).to(dtype)


def image_coupling_reference(x, st, rescale, channel_wise=False, reverse_mask=False, reverse=False):
    """The multi-scale RealNVP's coupling math on a given st, in plain PyTorch (the 'torch'
    backend)."""
    weight = rescale.reshape(-1, 1, 1)
    s, t = st.chunk(2, dim=1)
    s = weight * torch.tanh(s)
    if channel_wise:
        x_kept, x_change = x.chunk(2, dim=1) if reverse_mask else reversed(x.chunk(2, dim=1))
    else:
        change = 1 - checkerboard_keep(x.shape[2], x.shape[3], reverse_mask, x.dtype, x.device)
        s, t = s * change, t * change
        x_change = x
    y = x_change * torch.exp(-s) - t if reverse else (x_change + t) * torch.exp(s)
    # flatten: the reference's reshape fails at B = 0
    logdet = s.flatten(1).sum(-1).to(logdet_dtype(x.dtype))
    if channel_wise:
        y = torch.cat((x_kept, y) if reverse_mask else (y, x_kept), dim=1)
    return y, -logdet if reverse else logdet


def check_image_coupling(x, st, rescale, channel_wise, *flags) -> None:
    """ValueError/TypeError naming the argument (the twin of csrc/image_coupling.h)."""
    require_tensors("image_coupling", x=x, st=st, rescale=rescale)
    if x.dim() != 4:
        raise ValueError(f"image_coupling: expected x of shape [B, C, H, W], got {tuple(x.shape)}")
    require_float("image_coupling", "x", x)
    b, c, h, w = x.shape
    if channel_wise and c % 2:
        raise ValueError(f"image_coupling: channel-wise coupling needs an even channel count in x, got {c}")
    cond = c // 2 if channel_wise else c
    if tuple(st.shape) != (b, 2 * cond, h, w):
        raise ValueError(f"image_coupling: st must have shape {[b, 2 * cond, h, w]}, got {list(st.shape)}")
    if rescale.numel() != cond:
        raise ValueError(f"image_coupling: rescale must have {cond} entries, got {rescale.numel()}")
    require_like_x("image_coupling", x, st=st, rescale=rescale)


def _register(suffix: str) -> None:
    forward, backward = "image_coupling" + suffix, "image_coupling_backward" + suffix

    @torch.library.register_fake(f"fastflow::{forward}")
    def _fake(x, st, rescale, channel_wise, reverse_mask, reverse):
        check_image_coupling(x, st, rescale, channel_wise)
        return x.new_empty(x.shape), x.new_empty(x.shape[0], dtype=logdet_dtype(x.dtype))

    @torch.library.register_fake(f"fastflow::{backward}")
    def _fake_backward(grad_y, grad_logdet, x, st, rescale, channel_wise, reverse_mask, reverse):
        return x.new_empty(x.shape), st.new_empty(st.shape), rescale.new_empty(rescale.shape)

    register_backward_op(forward, backward, num_tensors=3)


if _triton.VERSION is not None:
    from ..triton import image_coupling as _kernels

    def _partials(x, channel_wise):
        cond = x.shape[1] // 2 if channel_wise else x.shape[1]
        return torch.zeros(x.shape[0], cond, dtype=logdet_dtype(x.dtype), device=x.device)

    @torch.library.custom_op("fastflow::image_coupling_triton", mutates_args=())
    def _image_coupling_triton(x: torch.Tensor, st: torch.Tensor, rescale: torch.Tensor,
                               channel_wise: bool, reverse_mask: bool,
                               reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        check_image_coupling(x, st, rescale, channel_wise)
        x, st, rescale = x.contiguous(), st.contiguous(), rescale.contiguous()
        y = torch.empty_like(x)
        partial = _partials(x, channel_wise)
        _kernels.image_coupling_forward(x, st, rescale, y, partial, channel_wise, reverse_mask, reverse)
        return y, partial.sum(1)

    @torch.library.custom_op("fastflow::image_coupling_backward_triton", mutates_args=())
    def _image_coupling_backward_triton(
            grad_y: torch.Tensor, grad_logdet: torch.Tensor, x: torch.Tensor, st: torch.Tensor,
            rescale: torch.Tensor, channel_wise: bool, reverse_mask: bool,
            reverse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, st, rescale = x.contiguous(), st.contiguous(), rescale.contiguous()
        grad_x, grad_st = torch.empty_like(x), torch.empty_like(st)
        partial = _partials(x, channel_wise)
        _kernels.image_coupling_backward(grad_y.contiguous(), grad_logdet.contiguous(), x, st,
                                         rescale, grad_x, grad_st, partial, channel_wise,
                                         reverse_mask, reverse)
        return grad_x, grad_st, partial.sum(0).to(rescale.dtype).view(rescale.shape)

for _suffix in registry.KERNEL_SUFFIXES:
    _register(_suffix)

OP = registry.register(registry.Op(
    name="image_coupling", functions=("image_coupling",),
    summary="image affine coupling with its log-determinant, checkerboard or channel-wise "
            "(multi-scale RealNVP)",
    reference=image_coupling_reference, reference_source="the RealNVP's coupling layer",
    check=check_image_coupling, tensors=("x", "st", "rescale"), bench="image_coupling",
    auto={"cpu": ("cpu", "torch"), "cuda": ("torch",)}, auto_dtypes=AUTO_DTYPES))


def image_coupling(x: torch.Tensor, st: torch.Tensor, rescale: torch.Tensor, *,
                   channel_wise: bool = False, reverse_mask: bool = False,
                   reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused image coupling (the multi-scale RealNVP's) on the current backend; returns
    (y, logdet [B]).

    Args:
        x: [B, C, H, W].
        st: [B, 2·Cc, H, W], the s/t network's output (Cc = C, or C/2 when channel_wise).
        rescale: the Rescale module's weight (Cc entries, e.g. [Cc, 1, 1]); cast to x's dtype.
        channel_wise: channel-wise mask (else checkerboard).
        reverse_mask: the multi-scale CouplingLayer's reverse_mask.
        reverse: the inverse transform (logdet = −Σ s).
    """
    if isinstance(rescale, torch.Tensor) and isinstance(x, torch.Tensor) and rescale.is_floating_point():
        rescale = rescale.reshape(-1).to(x.dtype)
    return registry.call(OP, x, st, rescale, channel_wise, reverse_mask, reverse)
