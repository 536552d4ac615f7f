"""Vector affine coupling on every backend against the reference formula (the MLP RealNVP's
and the 2-D RealNVP's): forward, reverse, gradients, chunked conditioner outputs, odd
sizes, batch 0 and 1."""

import pytest
import torch

import fastflow
from fastflow.ops.affine_coupling import affine_coupling_reference

from backends import ALL_BACKENDS
from utils import assert_matches_float64, assert_raises_on_every_path, reference_unless_torch

DTYPES = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64"),
    pytest.param(torch.bfloat16, id="bfloat16"),
    pytest.param(torch.float16, id="float16"),
]
SHAPES = [(1, 2), (7, 13), (33, 130), (0, 5), (3, 1)]
FLAGS = [(False, False), (False, True), (True, False), (True, True)]
FLAG_IDS = ["identity", "identity-reverse", "tanh", "tanh-reverse"]


def make_inputs(shape, dtype, device, chunked=True, requires_grad=False):
    b, d = shape
    x = torch.randn(b, d, dtype=dtype, device=device)
    st = torch.randn(b, 2 * d, dtype=dtype, device=device)
    mask = (torch.arange(d, device=device) % 2).to(dtype)
    if requires_grad:
        x.requires_grad_()
        st.requires_grad_()
    s, t = st.chunk(2, dim=1) if chunked else (st[:, :d].contiguous(), st[:, d:].contiguous())
    return x, st, s, t, mask


def run(backend, *args, **kwargs):
    with fastflow.backend(backend):
        return fastflow.ops.affine_coupling(*args, **kwargs)


def reference64(x, s, t, mask, tanh_scale, reverse):
    return affine_coupling_reference(x.double(), s.double(), t.double(), mask.double(),
                                     tanh_scale, reverse)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("tanh_scale,reverse", FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_reference(device, backend, tanh_scale, reverse, dtype, shape):
    x, _, s, t, mask = make_inputs(shape, dtype, device)
    y, logdet = run(backend, x, s, t, mask, tanh_scale=tanh_scale, reverse=reverse)
    y64, logdet64 = reference64(x, s, t, mask, tanh_scale, reverse)
    assert y.dtype == dtype and y.shape == x.shape
    assert logdet.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_matches_float64(y, y64, "y")
    # logdet (float32 for reduced-precision inputs) is a sum: the reference's rounding counts
    _, logdet_ref = affine_coupling_reference(x, s, t, mask, tanh_scale, reverse)
    assert_matches_float64(logdet, logdet64, "logdet", dtype=dtype,
                           reference=reference_unless_torch(backend, dtype, logdet_ref))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("tanh_scale,reverse", FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("dtype", [DTYPES[0], DTYPES[2]])
@pytest.mark.parametrize("shape", [(1, 2), (7, 13), (33, 130)], ids=str)
def test_gradients_match_reference(device, backend, tanh_scale, reverse, dtype, shape):
    x, st, s, t, mask = make_inputs(shape, dtype, device, requires_grad=True)
    y, logdet = run(backend, x, s, t, mask, tanh_scale=tanh_scale, reverse=reverse)
    grad_y = torch.randn_like(y)
    grad_logdet = torch.randn_like(logdet)
    grads = torch.autograd.grad((y * grad_y).sum() + (logdet * grad_logdet).sum(), (x, st))

    def reference_grads(x, st, grad_y, grad_logdet):
        x, st = x.detach().requires_grad_(), st.detach().requires_grad_()
        s, t = st.chunk(2, dim=1)
        y, logdet = affine_coupling_reference(x, s, t, mask.to(x.dtype), tanh_scale, reverse)
        return torch.autograd.grad((y * grad_y).sum() + (logdet * grad_logdet).sum(), (x, st))

    grads64 = reference_grads(x.double(), st.double(), grad_y.double(), grad_logdet.double())
    grads_ref = reference_grads(x, st, grad_y, grad_logdet)
    for name, got, truth, ref in zip(("grad_x", "grad_st"), grads, grads64, grads_ref):
        assert_matches_float64(got, truth, name,
                               reference=reference_unless_torch(backend, dtype, ref))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("tanh_scale,reverse", FLAGS, ids=FLAG_IDS)
def test_gradcheck(device, backend, tanh_scale, reverse):
    x, st, s, t, mask = make_inputs((3, 5), torch.float64, device, requires_grad=True)
    with fastflow.backend(backend):
        def f(x, st):
            s, t = st.chunk(2, dim=1)
            return fastflow.ops.affine_coupling(x, s, t, mask, tanh_scale=tanh_scale, reverse=reverse)
        assert torch.autograd.gradcheck(f, (x, st), fast_mode=True)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("tanh_scale", [False, True], ids=["identity", "tanh"])
def test_reverse_inverts_forward(device, backend, tanh_scale):
    x, _, s, t, mask = make_inputs((9, 17), torch.float32, device)
    y, logdet = run(backend, x, s, t, mask, tanh_scale=tanh_scale)
    x_back, logdet_back = run(backend, y, s, t, mask, tanh_scale=tanh_scale, reverse=True)
    # the truth of a round trip is x itself; the reference's own round trip sets the allowance
    y_ref, logdet_ref = affine_coupling_reference(x, s, t, mask, tanh_scale)
    x_back_ref, _ = affine_coupling_reference(y_ref, s, t, mask, tanh_scale, reverse=True)
    assert_matches_float64(x_back, x.double(), "x_back",
                           reference=reference_unless_torch(backend, torch.float32, x_back_ref))
    _, logdet64 = reference64(x, s, t, mask, tanh_scale, False)
    assert_matches_float64(logdet_back, -logdet64, "logdet_back",
                           reference=reference_unless_torch(backend, torch.float32, -logdet_ref))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_strided_inputs(device, backend):
    x, _, s, t, mask = make_inputs((6, 10), torch.float32, device, chunked=False)
    sliced = torch.zeros(6, 30, device=device)[:, ::3]
    sliced.copy_(x)
    views = {"x transposed": x.t().contiguous().t(), "x sliced": sliced}
    for name, view in views.items():
        y, logdet = run(backend, view, s, t, mask, tanh_scale=True)
        y64, logdet64 = reference64(view, s, t, mask, True, False)
        _, logdet_ref = affine_coupling_reference(view, s, t, mask, True, False)
        assert_matches_float64(y, y64, f"{name}: y")
        assert_matches_float64(logdet, logdet64, f"{name}: logdet",
                               reference=reference_unless_torch(backend, torch.float32, logdet_ref))


KERNEL_BACKENDS = [p for p in ALL_BACKENDS if p.values[1] != "torch"]


def custom_op(backend):
    suffix = "_triton" if backend == "triton" else ""
    return getattr(torch.ops.fastflow, "affine_coupling" + suffix).default


@pytest.mark.parametrize("device,backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("tanh_scale,reverse", FLAGS, ids=FLAG_IDS)
def test_opcheck(device, backend, tanh_scale, reverse):
    for shape in [(4, 6), (0, 3)]:
        x, st, s, t, mask = make_inputs(shape, torch.float32, device, requires_grad=True)
        torch.library.opcheck(custom_op(backend), (x, s, t, mask, tanh_scale, reverse))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_compile_fullgraph(device, backend):
    x, st, s, t, mask = make_inputs((5, 8), torch.float32, device, requires_grad=True)

    def two_layers(x, st):
        s, t = st.chunk(2, dim=1)
        y, ld1 = fastflow.ops.affine_coupling(x, s, t, mask, tanh_scale=True)
        z, ld2 = fastflow.ops.affine_coupling(y, s, t, 1 - mask)
        return z, ld1 + ld2

    with fastflow.backend(backend):
        torch._dynamo.reset()
        out, ld = torch.compile(two_layers, fullgraph=True, backend="aot_eager")(x, st)
        out_eager, ld_eager = two_layers(x, st)
    torch.testing.assert_close(out, out_eager)
    torch.testing.assert_close(ld, ld_eager)
    grads = torch.autograd.grad(out.sum() + ld.sum(), (x, st))
    grads_eager = torch.autograd.grad(out_eager.sum() + ld_eager.sum(), (x, st))
    for got, expected in zip(grads, grads_eager):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_bad_input_names_the_argument(device, backend):
    x, _, s, t, mask = make_inputs((4, 6), torch.float32, device)
    cases = [
        ((x[0], s, t, mask), ValueError, "expected x of shape \\[B, D\\]"),
        ((x, s[:, :5], t, mask), ValueError, "s must have x's shape"),
        ((x, s, t[:3], mask), ValueError, "t must have x's shape"),
        ((x, s, t, mask[:5]), ValueError, "mask must have shape \\[6\\]"),
        ((x, s.double(), t, mask), ValueError, "s must have x's dtype"),
        ((x, s, t, mask.long()), TypeError, "mask must be a float tensor"),
        ((x.long(), s, t, mask), TypeError, "x must be float32"),
        ((x, s, t.tolist(), mask), TypeError, "t must be a torch.Tensor"),
    ]
    cases.append(((x, s, t, mask.to("meta")), ValueError, "mask must be on x's device"))
    for args, error, message in cases:
        assert_raises_on_every_path(backend, "affine_coupling", error, message,
                                    lambda: fastflow.ops.affine_coupling(*args), (*args, False, False))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("tanh_scale,reverse", FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("shape", [(1, 2), (7, 13), (0, 3)], ids=str)
def test_packed_matches_reference(device, backend, tanh_scale, reverse, shape):
    x, st, s, t, mask = make_inputs(shape, torch.float32, device, requires_grad=True)
    with fastflow.backend(backend):
        y, logdet = fastflow.ops.affine_coupling_packed(x, st, mask, tanh_scale=tanh_scale,
                                                        reverse=reverse)
    y_ref, logdet_ref = affine_coupling_reference(x, s, t, mask, tanh_scale, reverse)
    x64, st64 = x.detach().double().requires_grad_(), st.detach().double().requires_grad_()
    y64, logdet64 = affine_coupling_reference(x64, *st64.chunk(2, dim=1), mask.double(),
                                              tanh_scale, reverse)
    assert_matches_float64(y, y64.detach(), "y")
    assert_matches_float64(
        logdet, logdet64.detach(), "logdet",
        reference=reference_unless_torch(backend, torch.float32, logdet_ref.detach()))
    grad_y, grad_logdet = torch.randn_like(y), torch.randn_like(logdet)
    grads = torch.autograd.grad((y * grad_y).sum() + (logdet * grad_logdet).sum(), (x, st))
    grads_ref = torch.autograd.grad((y_ref * grad_y).sum() + (logdet_ref * grad_logdet).sum(), (x, st))
    grads64 = torch.autograd.grad((y64 * grad_y.double()).sum()
                                  + (logdet64 * grad_logdet.double()).sum(), (x64, st64))
    for name, got, truth, ref in zip(("grad_x", "grad_st"), grads, grads64, grads_ref):
        assert_matches_float64(got, truth, name,
                               reference=reference_unless_torch(backend, torch.float32, ref))


@pytest.mark.parametrize("device,backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("tanh_scale,reverse", FLAGS, ids=FLAG_IDS)
def test_packed_opcheck(device, backend, tanh_scale, reverse):
    op = getattr(torch.ops.fastflow, "affine_coupling_packed" + ("_triton" if backend == "triton" else ""))
    for shape in [(4, 6), (0, 3)]:
        x, st, _, _, mask = make_inputs(shape, torch.float32, device, requires_grad=True)
        torch.library.opcheck(op.default, (x, st, mask, tanh_scale, reverse))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_packed_bad_st_names_the_argument(device, backend):
    x, st, _, _, mask = make_inputs((4, 6), torch.float32, device)
    for bad_st, error, message in [(st[:, :11], ValueError, "st must have shape \\[4, 12\\]"),
                                   (None, TypeError, "st must be a torch.Tensor")]:
        assert_raises_on_every_path(
            backend, "affine_coupling_packed", error, message,
            lambda: fastflow.ops.affine_coupling_packed(x, bad_st, mask), (x, bad_st, mask, False, False))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [DTYPES[0], DTYPES[1]])
def test_tanh_of_small_s_keeps_relative_accuracy(device, backend, dtype):
    """logdet = tanh(s) for a batch of one with one changed column, judged on its own scale:
    near s = 0, tanh computed as 1 − 2/(e^2s + 1) cancels to relative errors of 1e-5 and
    more in float32 (a Triton kernel did)."""
    for value in (3e-7, -1e-4, 2e-3, -0.03, 0.09):
        s = torch.full((1, 1), value, dtype=dtype, device=device)
        x, mask = torch.zeros_like(s), torch.zeros(1, dtype=dtype, device=device)
        _, logdet = run(backend, x, s, torch.zeros_like(s), mask, tanh_scale=True)
        assert_matches_float64(logdet, torch.tanh(s.double()).reshape(1), f"logdet at s = {value}")
