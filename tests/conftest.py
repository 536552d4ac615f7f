"""Test setup: without a GPU, Triton kernels run under its interpreter, which must be
chosen before any kernel is defined, so before fastflow is imported."""

import os

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastflow  # noqa: E402
from fastflow.backend import unavailable_reason  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def backend_params(device):
    """(device, backend) pairs for parametrize: every backend that can run tensors on
    `device`. Each is marked to skip, saying why, where this machine can't run it."""
    names = {"cpu": ("torch", "cpu", "triton"), "cuda": ("torch", "cuda", "triton")}[device]
    params = []
    for name in names:
        marks = [pytest.mark.cuda] if device == "cuda" else []
        reason = unavailable_reason(name)
        if reason is not None:
            marks.append(pytest.mark.skip(reason=f"backend {name}: {reason}"))
        params.append(pytest.param(device, name, marks=marks, id=f"{device}-{name}"))
    return params


ALL_BACKENDS = backend_params("cpu") + backend_params("cuda")


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
