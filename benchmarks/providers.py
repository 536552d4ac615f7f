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


def provider_fn(provider, fused, reference):
    """The function a provider times: the reference eager, the reference under
    torch.compile, or the fused function on a fastflow backend."""
    if provider == "reference":
        return reference
    if provider == "reference-compile":
        return torch.compile(reference)
    return on_backend(provider, fused)


def timed_step(fn, inputs, mode, grads):
    """fn on inputs; with mode fwd+bwd also the backward of its outputs against `grads`."""
    if mode == "fwd":
        def forward():
            with torch.no_grad():
                return fn(*inputs)
        return forward

    def step():
        outputs = fn(*inputs)
        torch.autograd.backward(outputs, grads)
        return outputs
    return step
