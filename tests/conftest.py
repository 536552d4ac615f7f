"""Test setup: without a GPU, Triton kernels run under its interpreter, which must be
chosen before any kernel is defined, so before fastflow is imported."""

import os

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastflow  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_backend():
    previous = fastflow.get_backend()
    yield
    fastflow.set_backend(previous)
