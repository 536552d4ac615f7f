"""fastflow: fused kernels (C++, CUDA, Triton) for normalizing flows.

    import fastflow
    print(fastflow.info())                  # what was built, what can run here
    y = fastflow.squeeze_2x2(x)             # on the best verified backend
    with fastflow.backend("triton"): ...    # or pick one: auto, cuda, triton, cpu, torch

fastflow.reference holds the pure-PyTorch reference models (the seeds' models).
"""

from . import reference
from ._info import Info, info
from .backend import BackendUnavailableError, backend, get_backend, set_backend
from .ops import squeeze_2x2
from . import nn, ops

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Info",
    "backend",
    "get_backend",
    "info",
    "nn",
    "ops",
    "reference",
    "set_backend",
    "squeeze_2x2",
]
