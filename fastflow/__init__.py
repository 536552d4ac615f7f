"""fastflow: fused kernels (C++, CUDA, Triton) for normalizing flows.

    import torch, fastflow
    print(fastflow.info())                  # what was built, what can run here
    y = fastflow.squeeze_2x2(torch.randn(8, 3, 32, 32))  # on the best verified backend
    made = fastflow.nn.MADE(784, [512, 512], 784)
    x, log_p = fastflow.made_sample(made, 16)  # MADE samples in about one forward pass
    with fastflow.backend("torch"): ...     # or pick one: auto, cuda, triton, cpu, torch

fastflow.reference holds the pure-PyTorch reference models (ported from the notebooks the
project started from).
"""

from . import reference
from ._info import Info, info
from .backend import BackendUnavailableError, backend, get_backend, set_backend
from .ops import gaussian_made_sample, iaf_inverse, made_sample, squeeze_2x2
from . import autotune, nn, ops

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Info",
    "autotune",
    "backend",
    "gaussian_made_sample",
    "get_backend",
    "iaf_inverse",
    "info",
    "made_sample",
    "nn",
    "ops",
    "reference",
    "set_backend",
    "squeeze_2x2",
]
