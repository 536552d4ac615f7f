"""Dequantize-and-logit (the multi-scale RealNVP's _pre_process) on every backend against
the reference, with the noise given: logits, log-determinant and gradients."""

import pytest
import torch

import fastflow
from fastflow.ops.dequantize_logit import dequantize_logit_reference

from backends import ALL_BACKENDS
from utils import assert_matches_float64, assert_raises_on_every_path, reference_unless_torch

DTYPES = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64"),
    pytest.param(torch.bfloat16, id="bfloat16"),
]
SHAPES = [(1, 1, 2, 2), (3, 1, 14, 14), (2, 3, 5, 7), (0, 1, 2, 2), (4, 10)]


def make_inputs(shape, dtype, device, requires_grad=False):
    x = torch.rand(shape, dtype=dtype, device=device)  # images in [0, 1]
    noise = torch.rand(shape, dtype=dtype, device=device)
    constraint = torch.tensor([0.9], dtype=torch.float32, device=device)
    return x.requires_grad_(requires_grad), noise.requires_grad_(requires_grad), constraint


def run(backend, *args):
    with fastflow.backend(backend):
        return fastflow.ops.dequantize_logit(*args)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(device, backend, dtype, shape):
    x, noise, constraint = make_inputs(shape, dtype, device)
    y, sldj = run(backend, x, noise, constraint)
    constraint = constraint.to(dtype)  # as the op casts it: the float64 twin's input too
    y64, sldj64 = dequantize_logit_reference(x.double(), noise.double(), constraint.double())
    assert y.dtype == dtype and y.shape == x.shape and sldj.shape == (shape[0],)
    assert_matches_float64(y, y64, "y")
    # sldj (float32 for bfloat16 inputs) is a sum: the reference's own rounding counts
    _, sldj_ref = dequantize_logit_reference(x, noise, constraint)
    assert_matches_float64(sldj, sldj64, "sldj", dtype=dtype,
                           reference=reference_unless_torch(backend, dtype, sldj_ref))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_gradients_match_reference(device, backend):
    x, noise, constraint = make_inputs((2, 1, 4, 4), torch.float64, device, requires_grad=True)
    y, sldj = run(backend, x, noise, constraint)
    grad_y, grad_sldj = torch.randn_like(y), torch.randn_like(sldj)
    grads = torch.autograd.grad((y * grad_y).sum() + (sldj * grad_sldj).sum(), (x, noise))
    y64, sldj64 = dequantize_logit_reference(x, noise, constraint.double())
    grads64 = torch.autograd.grad((y64 * grad_y).sum() + (sldj64 * grad_sldj).sum(), (x, noise))
    for name, got, truth in zip(("grad_x", "grad_noise"), grads, grads64):
        assert_matches_float64(got, truth, name)


@pytest.mark.parametrize("device,backend", [p for p in ALL_BACKENDS if p.values[1] != "torch"])
def test_opcheck(device, backend):
    op = getattr(torch.ops.fastflow, "dequantize_logit" + ("_triton" if backend == "triton" else ""))
    for shape in [(3, 1, 4, 4), (0, 2)]:
        x, noise, constraint = make_inputs(shape, torch.float32, device, requires_grad=True)
        torch.library.opcheck(op.default, (x, noise, constraint))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_bad_input_names_the_argument(device, backend):
    x, noise, constraint = make_inputs((2, 1, 4, 4), torch.float32, device)
    cases = [
        ((x, noise[:1], constraint), ValueError, "noise must have x's shape"),
        ((x, noise, torch.tensor([0.9, 0.8], device=device)), ValueError, "constraint must have one element"),
        ((x, noise.double(), constraint), ValueError, "noise must have x's dtype"),
        ((x.int(), noise, constraint), TypeError, "x must be float32"),
        ((x, 0.5, constraint), TypeError, "noise must be a torch.Tensor"),
        ((x[0, 0, 0, 0], noise[0, 0, 0, 0], constraint), ValueError, "x needs a batch dimension"),
    ]
    for args, error, message in cases:
        assert_raises_on_every_path(backend, "dequantize_logit", error, message,
                                    lambda: fastflow.ops.dequantize_logit(*args), args)
