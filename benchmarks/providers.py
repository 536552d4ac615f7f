"""Providers for the benchmarks: the fastflow backends with compiled kernels on this
machine, and a timer-friendly wrapper that waits for the GPU."""

import torch

import fastflow
from fastflow.backend import unavailable_reason

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def fastflow_providers():
    """The fastflow backends that run compiled kernels on DEVICE (Triton's CPU interpreter
    is for tests, not timing)."""
    names = ("cuda", "triton") if DEVICE == "cuda" else ("cpu",)
    return [name for name in names if unavailable_reason(name) is None]


def synchronized(fn):
    """fn, followed by a wait for the GPU, so that the timer sees the kernel's time."""
    if DEVICE != "cuda":
        return fn

    def run(*args):
        out = fn(*args)
        torch.cuda.synchronize()
        return out
    return run


def on_backend(name, fn):
    def run(*args):
        with fastflow.backend(name):
            return fn(*args)
    return run
