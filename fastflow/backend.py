"""Backend choice: which implementation of an op runs.

  'auto'    the fastest backend verified for the tensor's device (each op lists its own)
  'cuda'    the C++/CUDA extension kernels (CUDA tensors)
  'triton'  the Triton kernels (CUDA tensors; CPU tensors under TRITON_INTERPRET=1)
  'cpu'     the C++ extension kernels (CPU tensors)
  'torch'   the pure-PyTorch reference (fastflow.reference), any device

Set it with `fastflow.set_backend(name)`, for a block with `with fastflow.backend(name):`,
or for the process with the environment variable FASTFLOW_BACKEND. The setting is
process-wide (not per thread).
"""

from __future__ import annotations

import contextlib
import os

import torch

from . import triton as _triton
from ._extension import EXTENSION

BACKENDS = ("auto", "cuda", "triton", "cpu", "torch")
ENV_VAR = "FASTFLOW_BACKEND"


class BackendUnavailableError(RuntimeError):
    """The backend asked for cannot run on this machine; the message says what is missing."""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"unknown fastflow backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


def _initial_backend() -> str:
    name = os.environ.get(ENV_VAR, "auto").strip() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={name!r} is not a fastflow backend; "
                         f"expected one of {', '.join(BACKENDS)}")
    return name


_current = _initial_backend()
_reasons: dict[str, str | None] = {}  # backend -> why it is unavailable (None: available)


def unavailable_reason(name: str) -> str | None:
    """Why backend `name` cannot run on this machine, or None if it can."""
    _check_name(name)
    if name not in _reasons:
        _reasons[name] = _compute_reason(name)
    return _reasons[name]


def _compute_reason(name: str) -> str | None:
    if name in ("auto", "torch"):
        return None
    if name == "triton":
        if _triton.VERSION is None:
            return "triton is not installed (pip install triton)"
        if not _triton.INTERPRETED and not torch.cuda.is_available():
            return ("triton needs a CUDA GPU, or TRITON_INTERPRET=1 set before fastflow is "
                    "imported to run its kernels on the CPU")
        return None
    if not EXTENSION.loaded:
        return f"the fastflow extension is not loaded: {EXTENSION.error}"
    if name == "cuda":
        if not EXTENSION.cuda:
            return ("the fastflow extension was built without CUDA kernels (they need nvcc and "
                    "a CUDA build of torch at build time; see README, Building from source)")
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible to torch"
    return None


def _runs_on(name: str, device_type: str) -> bool:
    if name == "torch":
        return True
    if name == "triton":
        return device_type == "cuda" or (_triton.INTERPRETED and device_type == "cpu")
    return name == device_type


def get_backend() -> str:
    """The backend setting: 'auto' or the name of a backend."""
    return _current


def set_backend(name: str) -> str:
    """Sets the backend for every op; returns the previous setting.

    Raises ValueError for an unknown name and BackendUnavailableError for a backend that
    cannot run here, saying what is missing.
    """
    global _current
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(f"fastflow backend {name!r} is unavailable: {reason}")
    previous, _current = _current, name
    return previous


@contextlib.contextmanager
def backend(name: str):
    """`with fastflow.backend('cpu'): ...` runs the block on that backend."""
    previous = set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def resolve(op: str, auto_order: dict[str, tuple[str, ...]], device: torch.device,
            name: str | None = None) -> str:
    """The backend that runs `op` on a tensor on `device` under setting `name` (default:
    the current setting).

    `auto_order` maps a device type to the backends 'auto' may pick for it, fastest first.
    An op lists a backend there only once it has been verified on that device type.
    """
    name = _current if name is None else _check_name(name)
    if name == "auto":
        for candidate in auto_order.get(device.type, ()):
            if unavailable_reason(candidate) is None and _runs_on(candidate, device.type):
                return candidate
        return "torch"
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(f"fastflow backend {name!r} is unavailable: {reason}")
    if not _runs_on(name, device.type):
        raise ValueError(f"{op}: fastflow backend {name!r} cannot run on a tensor on "
                         f"{device.type}; use 'auto', 'torch' or a backend for {device.type}")
    return name
