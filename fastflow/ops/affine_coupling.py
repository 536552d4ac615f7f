"""Vector affine coupling with its log-determinant (the MLP RealNVP and the 2-D RealNVP) as
PyTorch sees it.

From x [B, D], the conditioner's raw s and t [B, D] and a mask m [D] (1: kept, 0: changed):

    s' = act(s)·(1−m)   (act: tanh when tanh_scale, else identity),   t' = t·(1−m)
    forward: y = x·m + (1−m)·(x·exp(s') + t'),       logdet = Σ_d s'
    reverse: y = x·m + (1−m)·(x − t')·exp(−s'),      logdet = −Σ_d s'

One fused kernel reads x, s and t once and writes y and the per-row logdet (float32, or
float64 for float64 inputs), where the reference launches about ten elementwise kernels
and a reduction. s and t may be the two halves of one conditioner output
(`st.chunk(2, dim=1)`), read in place. The mask gets no gradient (it is not a parameter in
the reference models).

affine_coupling_packed takes s and t as one tensor st = [s | t] (the 2-D RealNVP's st_net
output) and writes st's gradient as one tensor.

Ops: torch.ops.fastflow.affine_coupling[_packed][_backward] (C++ CPU and CUDA kernels)
and torch.ops.fastflow.affine_coupling[_packed][_backward]_triton (Triton).
"""

from __future__ import annotations

import torch

from .. import triton as _triton
from . import registry
from ._checks import require_float, require_like_x, require_tensors
from ._registration import register_backward_op


def logdet_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def affine_coupling_reference(x, s, t, mask, tanh_scale=False, reverse=False):
    """The reference models' coupling in plain PyTorch (the 'torch' backend)."""
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


def check_affine_coupling(x, s, t, mask, *flags) -> None:
    """ValueError/TypeError naming the argument (the twin of csrc/affine_coupling.h)."""
    require_tensors("affine_coupling", x=x, s=s, t=t, mask=mask)
    if x.dim() != 2:
        raise ValueError(f"affine_coupling: expected x of shape [B, D], got {tuple(x.shape)}")
    require_float("affine_coupling", "x", x)
    for name, value in (("s", s), ("t", t)):
        if value.shape != x.shape:
            raise ValueError(f"affine_coupling: {name} must have x's shape {tuple(x.shape)}, got {tuple(value.shape)}")
    if mask.shape != (x.shape[1],):
        raise ValueError(f"affine_coupling: mask must have shape [{x.shape[1]}] (one entry per "
                         f"column of x), got {tuple(mask.shape)}")
    if not mask.is_floating_point():
        raise TypeError(f"affine_coupling: mask must be a float tensor, got {mask.dtype}")
    require_like_x("affine_coupling", x, s=s, t=t, mask=mask)


def _rows_contiguous(v):
    return v if v.shape[1] <= 1 or v.stride(1) == 1 else v.contiguous()


def split_packed(x, st):
    """The packed form's s and t: the halves of st [B, 2D] (views)."""
    require_tensors("affine_coupling_packed", x=x, st=st)
    if x.dim() != 2:
        raise ValueError(f"affine_coupling_packed: expected x of shape [B, D], got {tuple(x.shape)}")
    if st.dim() != 2 or st.shape[0] != x.shape[0] or st.shape[1] != 2 * x.shape[1]:
        raise ValueError(f"affine_coupling_packed: st must have shape [{x.shape[0]}, {2 * x.shape[1]}], "
                         f"got {tuple(st.shape)}")
    return st.narrow(1, 0, x.shape[1]), st.narrow(1, x.shape[1], x.shape[1])


def check_affine_coupling_packed(x, st, mask, *flags) -> None:
    check_affine_coupling(x, *split_packed(x, st), mask)


def affine_coupling_packed_reference(x, st, mask, tanh_scale=False, reverse=False):
    return affine_coupling_reference(x, *st.chunk(2, dim=1), mask, tanh_scale, reverse)


def _register(prefix: str, suffix: str) -> None:
    """Fake implementations and autograd of fastflow::<prefix>[_packed][_backward]<suffix>."""
    @torch.library.register_fake(f"fastflow::{prefix}{suffix}")
    def _fake(x, s, t, mask, tanh_scale, reverse):
        check_affine_coupling(x, s, t, mask)
        return x.new_empty(x.shape), x.new_empty(x.shape[0], dtype=logdet_dtype(x.dtype))

    @torch.library.register_fake(f"fastflow::{prefix}_backward{suffix}")
    def _fake_backward(grad_y, grad_logdet, x, s, t, mask, tanh_scale, reverse):
        return x.new_empty(x.shape), x.new_empty(x.shape), x.new_empty(x.shape)

    @torch.library.register_fake(f"fastflow::{prefix}_packed{suffix}")
    def _fake_packed(x, st, mask, tanh_scale, reverse):
        check_affine_coupling_packed(x, st, mask)
        return x.new_empty(x.shape), x.new_empty(x.shape[0], dtype=logdet_dtype(x.dtype))

    @torch.library.register_fake(f"fastflow::{prefix}_packed_backward{suffix}")
    def _fake_packed_backward(grad_y, grad_logdet, x, st, mask, tanh_scale, reverse):
        return x.new_empty(x.shape), st.new_empty(st.shape)

    register_backward_op(f"{prefix}{suffix}", f"{prefix}_backward{suffix}", num_tensors=4)
    register_backward_op(f"{prefix}_packed{suffix}", f"{prefix}_packed_backward{suffix}", num_tensors=3)


if _triton.VERSION is not None:
    from ..triton import affine_coupling as _kernels

    def _forward_triton(x, s, t, mask, tanh_scale, reverse):
        x, s, t = _rows_contiguous(x), _rows_contiguous(s), _rows_contiguous(t)
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        logdet = torch.empty(x.shape[0], dtype=logdet_dtype(x.dtype), device=x.device)
        _kernels.affine_coupling_forward(x, s, t, mask.contiguous(), y, logdet, tanh_scale, reverse)
        return y, logdet

    def _backward_triton(grad_y, grad_logdet, x, s, t, mask, grad_s, grad_t, tanh_scale, reverse):
        x, s, t, grad_y = (_rows_contiguous(v) for v in (x, s, t, grad_y))
        grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        _kernels.affine_coupling_backward(grad_y, grad_logdet, x, s, t, mask.contiguous(), grad_x,
                                          grad_s, grad_t, tanh_scale, reverse)
        return grad_x

    @torch.library.custom_op("fastflow::affine_coupling_triton", mutates_args=())
    def _affine_coupling_triton(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
                                mask: torch.Tensor, tanh_scale: bool,
                                reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        check_affine_coupling(x, s, t, mask)
        return _forward_triton(x, s, t, mask, tanh_scale, reverse)

    @torch.library.custom_op("fastflow::affine_coupling_backward_triton", mutates_args=())
    def _affine_coupling_backward_triton(
            grad_y: torch.Tensor, grad_logdet: torch.Tensor, x: torch.Tensor, s: torch.Tensor,
            t: torch.Tensor, mask: torch.Tensor, tanh_scale: bool,
            reverse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        grad_s, grad_t = (torch.empty(x.shape, dtype=x.dtype, device=x.device) for _ in range(2))
        grad_x = _backward_triton(grad_y, grad_logdet, x, s, t, mask, grad_s, grad_t, tanh_scale, reverse)
        return grad_x, grad_s, grad_t

    @torch.library.custom_op("fastflow::affine_coupling_packed_triton", mutates_args=())
    def _affine_coupling_packed_triton(x: torch.Tensor, st: torch.Tensor, mask: torch.Tensor,
                                       tanh_scale: bool,
                                       reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        check_affine_coupling_packed(x, st, mask)
        return _forward_triton(x, *split_packed(x, st), mask, tanh_scale, reverse)

    @torch.library.custom_op("fastflow::affine_coupling_packed_backward_triton", mutates_args=())
    def _affine_coupling_packed_backward_triton(
            grad_y: torch.Tensor, grad_logdet: torch.Tensor, x: torch.Tensor, st: torch.Tensor,
            mask: torch.Tensor, tanh_scale: bool,
            reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        grad_st = torch.empty(st.shape, dtype=st.dtype, device=st.device)
        grad_x = _backward_triton(grad_y, grad_logdet, x, *split_packed(x, st), mask,
                                  *split_packed(x, grad_st), tanh_scale, reverse)
        return grad_x, grad_st

for _suffix in registry.KERNEL_SUFFIXES:
    _register("affine_coupling", _suffix)

# GPU kernels join `auto` once they have been verified on a GPU (not yet).
_AUTO = {"cpu": ("cpu", "torch"), "cuda": ("torch",)}
# The CPU kernels' exp and tanh are vectorized float32 polynomials (float64 calls the C
# library per element). Measured on a 2-core AMD EPYC (Zen 4): 2.0-3.9x the reference in
# float32, but 0.17-0.36x in half and bfloat16 and 0.57-0.60x in float64 at 128x784.
AUTO_DTYPES = {"cpu": (torch.float32,)}
OP = registry.register(registry.Op(
    name="affine_coupling", functions=("affine_coupling",),
    summary="vector affine coupling with its log-determinant, s and t apart (MLP RealNVP)",
    reference=affine_coupling_reference, reference_source="the RealNVPs' formula",
    check=check_affine_coupling, tensors=("x", "s", "t", "mask"), auto=_AUTO,
    auto_dtypes=AUTO_DTYPES, bench="affine_coupling"))  # the benchmark's cases run the packed form: the same kernels
PACKED_OP = registry.register(registry.Op(
    name="affine_coupling_packed", functions=("affine_coupling_packed",),
    summary="the same with s and t the two halves of one conditioner output `st` (2-D RealNVP)",
    reference=affine_coupling_packed_reference, reference_source="the RealNVPs' formula",
    check=check_affine_coupling_packed, tensors=("x", "st", "mask"), auto=_AUTO,
    auto_dtypes=AUTO_DTYPES, bench="affine_coupling"))


def affine_coupling(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, *,
                    tanh_scale: bool = False, reverse: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused vector affine coupling on the current backend; returns (y, logdet).

    Args:
        x: [B, D] input (float32/float64/float16/bfloat16).
        s, t: [B, D] raw scale and shift from the conditioner, x's dtype; views with
            contiguous rows (such as the halves of `st.chunk(2, dim=1)`) are read in place.
        mask: [D], 1 where x is kept, 0 where it is transformed; cast to x's dtype.
        tanh_scale: apply tanh to s first (the 2-D RealNVP; the MLP RealNVP's s-net ends in
            Tanh itself).
        reverse: the inverse transform (logdet = −Σ s').
    """
    if isinstance(mask, torch.Tensor) and isinstance(x, torch.Tensor) and mask.is_floating_point():
        mask = mask.to(x.dtype)
    return registry.call(OP, x, s, t, mask, tanh_scale, reverse)


def affine_coupling_packed(x: torch.Tensor, st: torch.Tensor, mask: torch.Tensor, *,
                           tanh_scale: bool = False, reverse: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """affine_coupling with s and t packed in one conditioner output st = [s | t] of shape
    [B, 2D] (the 2-D RealNVP's st_net). The same kernels; the backward writes st's gradient
    as one tensor (with `st.chunk(2, dim=1)` autograd would concatenate two)."""
    if isinstance(mask, torch.Tensor) and isinstance(x, torch.Tensor) and mask.is_floating_point():
        mask = mask.to(x.dtype)
    return registry.call(PACKED_OP, x, st, mask, tanh_scale, reverse)
