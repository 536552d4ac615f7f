"""Argument checks shared by the ops: a TypeError or ValueError that names the argument."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def require_tensors(op: str, **tensors) -> None:
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def require_float(op: str, name: str, value: torch.Tensor) -> None:
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32, float64, float16 or bfloat16, got {value.dtype}")


def require_like_x(op: str, x: torch.Tensor, **others) -> None:
    """Each of `others` has x's dtype and device (a mismatch is a ValueError: each dtype may
    be fine alone, the arguments disagree)."""
    for name, value in others.items():
        if value.dtype != x.dtype:
            raise ValueError(f"{op}: {name} must have x's dtype {x.dtype}, got {value.dtype}")
        if value.device != x.device:
            raise ValueError(f"{op}: {name} must be on x's device {x.device}, got {value.device}")
