"""The cases of `python -m fastflow.bench` (fastflow/bench/cases.py) as pytest-benchmark
tests: one per case, mode and provider, in float32, quick configuration
(FASTFLOW_BENCH_FULL=1: the full one). Each provider is checked against the reference
exactly as the runner checks it before it is timed; `dense` (a different function) is
timed unchecked, as in the runner."""

import os

import pytest
import torch

from fastflow.backend import unavailable_reason
from fastflow.bench.cases import OPS, cases
from fastflow.bench.runner import PROVIDERS, Task, case_providers, checked_provider, fastflow_providers

FULL = os.environ.get("FASTFLOW_BENCH_FULL") == "1"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.float32
BACKENDS = ("cpu", "cuda", "triton")

PARAMS = [pytest.param(case, mode, provider,
                       id=f"{case.op}-{case.label}-{mode}-{provider}".replace(" ", "_"))
          for case in cases(OPS, FULL) if DTYPE in case.dtypes
          for mode in case.modes for provider in case_providers(case, PROVIDERS)]


def synchronized(fn):
    """fn, followed by a wait for the GPU, so that the timer sees the kernels' time."""
    if DEVICE.type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


@pytest.mark.parametrize("case, mode, provider", PARAMS)
def test_case(benchmark, case, mode, provider):
    if provider in BACKENDS and provider not in fastflow_providers(DEVICE):
        pytest.skip(unavailable_reason(provider) or f"no compiled {provider} kernels for {DEVICE.type} tensors")
    task = Task(case, DEVICE, DTYPE, mode)
    fn, leaves, status, reason = checked_provider(task, provider)
    if status == "n/a":
        pytest.skip(reason)
    if status == "FAILED":
        pytest.fail(f"{provider} disagrees with the float64 reference: {reason}")
    benchmark.group = f"{case.op} {case.label} {mode} {DEVICE.type}"
    if reason:
        benchmark.extra_info["note"] = reason
    if task.setup.nbytes:
        benchmark.extra_info["bytes"] = task.setup.nbytes
    if task.setup.flops:
        benchmark.extra_info["flops"] = task.setup.flops
    benchmark(synchronized(task.step(fn, leaves)))
