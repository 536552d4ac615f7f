"""Benchmark setup. Run with `python -m pytest benchmarks --benchmark-only`; each benchmark
checks its provider's output against the reference on the same input before timing it."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _reset_dynamo():
    torch._dynamo.reset()
    yield
