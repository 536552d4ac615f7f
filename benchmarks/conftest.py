"""Benchmark setup. Run with `python -m pytest benchmarks --benchmark-only`: the cases of
fastflow/bench/cases.py (see bench_cases.py), each provider checked before it is timed."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _reset_dynamo():
    torch._dynamo.reset()  # a fresh compile per test, not dynamo's recompile limit
    yield
