"""Which backends the tests run, per device (imported by the test modules; conftest.py has
already chosen Triton's interpreter where there is no GPU)."""

import pytest
import torch

from fastflow import triton as fastflow_triton
from fastflow.backend import unavailable_reason

HAS_GPU = torch.cuda.is_available()


def backend_params(device):
    """(device, backend) pairs for parametrize: every backend that can run tensors on
    `device`. Each is marked to skip, saying why, where this machine can't run it."""
    names = {"cpu": ("torch", "cpu", "triton"), "cuda": ("torch", "cuda", "triton")}[device]
    params = []
    for name in names:
        marks = [pytest.mark.cuda] if device == "cuda" else []
        reason = unavailable_reason(name)
        if reason is None and name == "triton" and device == "cpu" and not fastflow_triton.INTERPRETED:
            reason = "Triton runs CPU tensors only under its interpreter (TRITON_INTERPRET=1)"
        if reason is not None:
            marks.append(pytest.mark.skip(reason=f"backend {name}: {reason}"))
        params.append(pytest.param(device, name, marks=marks, id=f"{device}-{name}"))
    return params


ALL_BACKENDS = backend_params("cpu") + backend_params("cuda")


