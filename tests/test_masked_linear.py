"""Masked linear on every backend against the reference formula (the MADE's and the MAF's):
both mask forms (a matrix, MADE degrees), forward and all gradients, odd sizes,
batch 0 and 1, strided inputs, empty and full mask rows, degrees recovered from masks,
opcheck, bad arguments."""

import importlib

import pytest
import torch

import fastflow
from fastflow._extension import EXTENSION
from fastflow.ops.masked_linear import (degree_mask, degree_masked_linear_reference, degree_plan,
                                        degrees_from_mask, masked_linear_reference)

from backends import ALL_BACKENDS
from utils import assert_matches_float64, assert_raises_on_every_path, reference_unless_torch

DTYPES = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64"),
    pytest.param(torch.bfloat16, id="bfloat16"),
    pytest.param(torch.float16, id="float16"),
]
# (batch, in_features, out_features)
SHAPES = [(1, 1, 1), (7, 13, 17), (33, 70, 150), (0, 5, 3), (4, 1, 9), (5, 9, 1)]


def made_degrees(in_features, out_features, device, strict=False):
    """Degrees as MADE draws them: inputs a permutation of 1..K (an input order), outputs
    random in 0..K+1, so some rows see nothing and some see everything."""
    in_degrees = torch.randperm(in_features, device=device) + 1
    out_degrees = torch.randint(0, in_features + 2, (out_features,), device=device)
    return in_degrees, out_degrees


def make_inputs(shape, dtype, device, strided=False):
    b, k, n = shape
    x = torch.randn(b, k + 3 if strided else k, dtype=dtype, device=device)
    if strided:
        x = x[:, 2:2 + k]  # a column slice: rows strided
    weight = torch.randn(n, k, dtype=dtype, device=device) / max(k, 1) ** 0.5
    bias = torch.randn(n, dtype=dtype, device=device)
    return x, weight, bias


def run(backend, fn, *args, **kwargs):
    with fastflow.backend(backend):
        return fn(*args, **kwargs)


def reference_run(x, weight, mask, bias, grad_y):
    """The reference formula on copies of the inputs: y and the gradients of (x, weight,
    bias), in the inputs' dtype."""
    x, weight = (t.detach().requires_grad_() for t in (x, weight))
    bias = bias.detach().requires_grad_() if bias is not None else None
    y = masked_linear_reference(x, weight, mask.to(x.dtype), bias)
    y.backward(grad_y.to(y.dtype))
    return y.detach(), x.grad, weight.grad, bias.grad if bias is not None else None


def check_forward_backward(backend, form, x, weight, bias, in_degrees, out_degrees):
    """The backend's y and gradients against the reference in float64 on the same inputs;
    the reference in x's dtype sets the allowance (a matmul: its rounding counts)."""
    mask = degree_mask(in_degrees, out_degrees)
    grad_y = torch.randn(x.shape[0], weight.shape[0], dtype=x.dtype, device=x.device)
    truth = reference_run(x.double(), weight.double(), mask,
                          bias.double() if bias is not None else None, grad_y.double())
    reference = [reference_unless_torch(backend, x.dtype, r)
                 for r in reference_run(x, weight, mask, bias, grad_y)]

    x_, weight_ = (t.detach().requires_grad_() for t in (x, weight))
    bias_ = bias.detach().requires_grad_() if bias is not None else None
    if form == "matrix":
        y = run(backend, fastflow.ops.masked_linear, x_, weight_, mask.to(x.dtype), bias_)
    else:
        y = run(backend, fastflow.ops.degree_masked_linear, x_, weight_, in_degrees, out_degrees,
                bias_)
    assert y.dtype == x.dtype
    assert_matches_float64(y, truth[0], "y", reference=reference[0])
    y.backward(grad_y)
    assert_matches_float64(x_.grad, truth[1], "grad_x", reference=reference[1])
    assert_matches_float64(weight_.grad, truth[2], "grad_weight", reference=reference[2])
    assert bool((weight_.grad[~mask] == 0).all()), "grad_weight must be zero where the mask is"
    if bias is not None:
        assert_matches_float64(bias_.grad, truth[3], "grad_bias", reference=reference[3])


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("form", ["matrix", "degrees"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(device, backend, form, dtype, shape):
    x, weight, bias = make_inputs(shape, dtype, device)
    in_degrees, out_degrees = made_degrees(shape[1], shape[2], device)
    check_forward_backward(backend, form, x, weight, bias, in_degrees, out_degrees)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("form", ["matrix", "degrees"])
def test_made_layer_sizes_strided_no_bias(device, backend, form):
    """A MADE hidden layer's size (several row blocks: tiles are skipped), x a column slice,
    no bias."""
    shape = (9, 200, 300)
    x, weight, _ = make_inputs(shape, torch.float32, device, strided=True)
    assert not x.is_contiguous()
    in_degrees = torch.randint(1, 200, (200,), device=device)
    out_degrees = torch.randint(1, 200, (300,), device=device)
    check_forward_backward(backend, form, x, weight, None, in_degrees, out_degrees)


# (in_features, out_features) for the CPU kernel's blocks (csrc/cpu/masked_linear.cpp): each
# side is cut into about one block per 0.7e6 multiply-adds of the dense product (batch × in
# × out), at least 1, at most 16 (two per thread on larger machines), each block whole
# groups of 16 units (so at most one block per group) and the last block the remainder. At
# batch 5 every layer here is one block. At batch 300 they take: 1 (a side of 0 or 1 unit,
# a side of 15, 16 or 17 units: one group, or little work), 3 (600 outputs: blocks of 192,
# 200 and 208), 7 (blocks of one and two groups, a 17-unit last block), 8 and 13, and the
# cap of 16 with one group per block (256 inputs), with a 2-unit last block (130 outputs)
# and with 2- and 3-group blocks (641 inputs).
BLOCK_SIZES = [(127, 129), (128, 255), (256, 257), (383, 384), (385, 386), (512, 511),
               (513, 1), (1, 513), (641, 130), (0, 300), (300, 0), (16, 17), (17, 16),
               (15, 600)]


def staircase_degrees(kind, k, n):
    """Degrees whose staircase has empty blocks: rows that see nothing, columns no row sees."""
    if kind == "random":
        return made_degrees(k, n, "cpu")
    in_degrees = torch.randperm(k) + 1
    if kind == "nothing-seen":  # every row and column block empty
        return in_degrees, torch.randint(-2, 1, (n,))
    if kind == "empty-row-blocks":  # the first 60% of the sorted rows see nothing, the rest all
        out_degrees = torch.where(torch.rand(n) < 0.6, 0, k)
        return in_degrees, out_degrees[torch.randperm(n)]
    assert kind == "unseen-column-blocks"  # the top 3/4 of the inputs are seen by no row
    return in_degrees, torch.randint(0, k // 4 + 1, (n,))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["random", "nothing-seen", "empty-row-blocks",
                                  "unseen-column-blocks"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("batch", [5, 300])
@pytest.mark.parametrize("sizes", BLOCK_SIZES, ids=str)
def test_cpu_staircase_blocks(sizes, batch, dtype, kind, threads):
    """The CPU degree form's block decomposition: block counts from 1 to the cap, a short
    last block, empty row and column blocks, x strided, one and two threads."""
    k, n = sizes
    torch.manual_seed(k * 1000 + n)
    x, weight, bias = make_inputs((batch, k, n), dtype, "cpu", strided=True)
    in_degrees, out_degrees = staircase_degrees(kind, k, n)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_forward_backward("cpu", "degrees", x, weight, bias, in_degrees, out_degrees)
    finally:
        torch.set_num_threads(previous)


def test_cpu_staircase_cache_follows_degree_values():
    """The CPU kernel reuses a staircase for equal degree values: degrees edited in place
    or a new tensor with other values must give the new mask's result."""
    x, weight, bias = make_inputs((4, 300, 200), torch.float64, "cpu")
    in_degrees, out_degrees = made_degrees(300, 200, "cpu")
    for _ in range(3):
        y = run("cpu", fastflow.ops.degree_masked_linear, x, weight, in_degrees, out_degrees, bias)
        expected = masked_linear_reference(x, weight, degree_mask(in_degrees, out_degrees).double(),
                                           bias)
        assert_matches_float64(y, expected, "y")
        out_degrees[torch.randint(0, 200, (20,))] = 150  # in place: same tensor, new values


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_transposed_input_and_strict_degrees(device, backend):
    """x with column stride != 1 (a transpose) is read correctly; strict=True is MADE's
    output rule (in_degree < out_degree)."""
    x = torch.randn(20, 6, device=device).t()
    weight, bias = torch.randn(20, 20, device=device), torch.randn(20, device=device)
    degrees = torch.arange(1, 21, device=device)
    y = run(backend, fastflow.ops.degree_masked_linear, x, weight, degrees, degrees, bias,
            strict=True)
    mask = (degrees[None, :] < degrees[:, None]).float()
    assert_matches_float64(y, x.double() @ (weight.double() * mask).t() + bias.double(), "y",
                           reference=x @ (weight * mask).t() + bias)


def test_degree_plan_is_the_staircase():
    in_degrees, out_degrees = made_degrees(40, 30, "cpu")
    in_order, out_order, row_prefix = degree_plan(in_degrees, out_degrees)
    mask = degree_mask(in_degrees, out_degrees)
    sorted_mask = mask[out_order][:, in_order]
    columns = torch.arange(40)
    assert torch.equal(sorted_mask, columns[None, :] < row_prefix[:, None])
    assert bool((row_prefix[1:] >= row_prefix[:-1]).all())


@pytest.mark.parametrize("shape", [(30, 40), (1, 1), (5, 0), (0, 4)], ids=str)
def test_degrees_from_mask_round_trip(shape):
    n, k = shape
    in_degrees = torch.randint(0, 7, (k,))
    out_degrees = torch.randint(-1, 8, (n,))
    mask = degree_mask(in_degrees, out_degrees).float()
    recovered = degrees_from_mask(mask)
    assert recovered is not None
    assert torch.equal(degree_mask(*recovered), mask.bool())


def test_degrees_from_mask_refuses_other_masks():
    assert degrees_from_mask(torch.eye(3)) is None  # supports {0}, {1}: not nested
    assert degrees_from_mask(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])) is None


@pytest.mark.parametrize("device,backend", [p for p in ALL_BACKENDS if p.values[1] != "torch"])
def test_opcheck(device, backend):
    suffix = "_triton" if backend == "triton" else ""
    x, weight, bias = make_inputs((5, 12, 10), torch.float32, device)
    x.requires_grad_()
    weight.requires_grad_()
    in_degrees, out_degrees = made_degrees(12, 10, device)
    mask = degree_mask(in_degrees, out_degrees).float()
    ops = torch.ops.fastflow
    torch.library.opcheck(getattr(ops, f"masked_linear{suffix}"), (x, weight, mask, bias))
    torch.library.opcheck(getattr(ops, f"masked_linear{suffix}"), (x, weight, mask, None))
    torch.library.opcheck(getattr(ops, f"degree_masked_linear{suffix}"),
                          (x, weight, in_degrees, out_degrees, bias))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_bad_arguments(device, backend):
    x, weight, bias = make_inputs((4, 6, 5), torch.float32, device)
    mask = torch.ones(5, 6, device=device)
    degrees_in, degrees_out = torch.arange(6, device=device), torch.arange(5, device=device)
    cases = [
        ("masked_linear", ValueError, "x of shape", (x[0], weight, mask, bias)),
        ("masked_linear", ValueError, "weight must have shape", (x, weight.t(), mask.t(), bias)),
        ("masked_linear", ValueError, "mask must have weight's shape", (x, weight, mask[:4], bias)),
        ("masked_linear", ValueError, "bias must have shape", (x, weight, mask, bias[:3])),
        ("masked_linear", ValueError, "weight must have x's dtype", (x, weight.double(), mask, bias)),
        ("masked_linear", ValueError, "bias must be on x's device", (x, weight, mask, bias.to("meta"))),
        ("masked_linear", TypeError, "mask must be a float", (x, weight, mask.bool(), bias)),
        ("masked_linear", TypeError, "x must be float", (x.int(), weight, mask, bias)),
        ("masked_linear", TypeError, "mask must be a torch.Tensor", (x, weight, [[1.0]], bias)),
        ("degree_masked_linear", ValueError, "in_degrees must have shape",
         (x, weight, degrees_out, degrees_out, bias)),
        ("degree_masked_linear", TypeError, "out_degrees must be int64",
         (x, weight, degrees_in, degrees_out.int(), bias)),
        ("degree_masked_linear", ValueError, "out_degrees must be on x's device",
         (x, weight, degrees_in, degrees_out.to("meta"), bias)),
    ]
    for op, error, message, args in cases:
        assert_raises_on_every_path(backend, op, error, message,
                                    lambda: getattr(fastflow.ops, op)(*args), args)


def test_reference_forms_agree():
    x, weight, bias = make_inputs((3, 8, 6), torch.float64, "cpu")
    in_degrees, out_degrees = made_degrees(8, 6, "cpu")
    assert_matches_float64(
        degree_masked_linear_reference(x, weight, in_degrees, out_degrees, bias),
        masked_linear_reference(x, weight, degree_mask(in_degrees, out_degrees).double(), bias),
        "degree form")


def test_auto_measures_cpu_calls_and_obeys_explicit_backends(monkeypatch):
    """'auto' on the CPU runs what fastflow.autotune measured faster for the shape class
    (the reference unless the C++ kernels beat it), records the decision, and with
    FASTFLOW_AUTOTUNE=0 runs the reference; an explicit backend is obeyed."""
    module = importlib.import_module("fastflow.ops.masked_linear")
    x, weight, bias = make_inputs((20, 64, 48), torch.float32, "cpu")
    in_degrees, out_degrees = made_degrees(64, 48, "cpu")
    fastflow.autotune.clear()
    with fastflow.backend("auto"):
        monkeypatch.setenv(fastflow.autotune.ENV_VAR, "0")
        assert module.degree_masked_linear_backend(x, weight, in_degrees, out_degrees, bias) == "torch"
        assert fastflow.autotune.decisions() == {}
        monkeypatch.setenv(fastflow.autotune.ENV_VAR, "1")
        picked = module.degree_masked_linear_backend(x, weight, in_degrees, out_degrees, bias)
        assert picked in (("torch", "cpu") if EXTENSION.loaded else ("torch",))
        if EXTENSION.loaded:
            [(key, decision)] = fastflow.autotune.decisions().items()
            assert key == ("degree_masked_linear", "cpu", torch.float32, torch.get_num_threads(),
                           False, 32, "64->48")
            assert decision.choice == picked and set(decision.seconds) == {"torch", "cpu"}
            assert "degree_masked_linear cpu float32 b<=32 64->48" in str(fastflow.info())
    if EXTENSION.loaded:
        with fastflow.backend("cpu"):
            assert module.degree_masked_linear_backend(x, weight, in_degrees, out_degrees, bias) == "cpu"
            assert module.masked_linear_backend(x, weight, weight, bias) == "cpu"
    fastflow.autotune.clear()


def test_reference_degree_mask_follows_degree_edits():
    """The degree form's reference keeps the mask of recent degree tensors: an edit of the
    degrees (in place, or through .data, which bumps no version counter) must be seen."""
    x, weight, bias = make_inputs((3, 12, 10), torch.float64, "cpu")
    in_degrees, out_degrees = made_degrees(12, 10, "cpu")
    for edit in (lambda: None, lambda: out_degrees.fill_(5), lambda: out_degrees.data.fill_(9),
                 lambda: in_degrees.data.copy_(torch.arange(12))):
        edit()
        y = run("torch", fastflow.ops.degree_masked_linear, x, weight, in_degrees, out_degrees, bias)
        expected = masked_linear_reference(x, weight, degree_mask(in_degrees, out_degrees).double(),
                                           bias)
        assert torch.equal(y, expected)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_degree_tile_whose_first_row_sees_least(device, backend):
    """A tile's first sorted row sees none of the inputs, the next ones more than a whole
    32-input step: the steps every row of the tile sees come from its first row (taken from
    the second, the first row would be given 32 inputs it must not see)."""
    x, weight, bias = make_inputs((5, 40, 3), torch.float64, device)
    in_degrees = torch.arange(1, 41, device=device)
    out_degrees = torch.tensor([0, 35, 40], device=device)
    y = run(backend, fastflow.ops.degree_masked_linear, x, weight, in_degrees, out_degrees, bias)
    expected = masked_linear_reference(x, weight, degree_mask(in_degrees, out_degrees).double(),
                                       bias)
    assert_matches_float64(y, expected, "y")
