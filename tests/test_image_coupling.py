"""Image affine coupling (the multi-scale RealNVP's CouplingLayer math) on every backend
against the reference: checkerboard and channel-wise masks, both reverse_mask values,
forward and reverse, gradients to x, st and the rescale weight, odd sizes, batch 0 and 1."""

import pytest
import torch

import fastflow
from fastflow.ops.image_coupling import image_coupling_reference

from backends import ALL_BACKENDS
from utils import assert_matches_float64, assert_raises_on_every_path, reference_unless_torch

DTYPES = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64"),
    pytest.param(torch.bfloat16, id="bfloat16"),
    pytest.param(torch.float16, id="float16"),
]
MASKS = [(False, False), (False, True), (True, False), (True, True)]
MASK_IDS = ["checkerboard", "checkerboard-reversed", "channel", "channel-reversed"]
SHAPES = [(1, 2, 2, 2), (3, 4, 5, 7), (2, 6, 14, 14), (0, 2, 4, 4)]


def make_inputs(shape, dtype, device, channel_wise, requires_grad=False):
    b, c, h, w = shape
    cond = c // 2 if channel_wise else c
    x = torch.randn(shape, dtype=dtype, device=device)
    st = torch.randn(b, 2 * cond, h, w, dtype=dtype, device=device)
    rescale = torch.randn(cond, 1, 1, dtype=dtype, device=device)  # Rescale.weight's shape
    for v in (x, st, rescale):
        v.requires_grad_(requires_grad)
    return x, st, rescale


def run(backend, *args, **kwargs):
    with fastflow.backend(backend):
        return fastflow.ops.image_coupling(*args, **kwargs)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("channel_wise,reverse_mask", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_reference(device, backend, channel_wise, reverse_mask, reverse, dtype,
                                   shape):
    x, st, rescale = make_inputs(shape, dtype, device, channel_wise)
    y, logdet = run(backend, x, st, rescale, channel_wise=channel_wise,
                    reverse_mask=reverse_mask, reverse=reverse)
    y64, logdet64 = image_coupling_reference(x.double(), st.double(), rescale.double(),
                                             channel_wise, reverse_mask, reverse)
    assert y.dtype == dtype and y.shape == x.shape
    assert_matches_float64(y, y64, "y")
    # logdet (float32 for reduced-precision inputs) is a sum: the reference's rounding counts
    _, logdet_ref = image_coupling_reference(x, st, rescale, channel_wise, reverse_mask, reverse)
    assert_matches_float64(logdet, logdet64, "logdet", dtype=dtype,
                           reference=reference_unless_torch(backend, dtype, logdet_ref))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("channel_wise,reverse_mask", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", [DTYPES[0], DTYPES[2]])
def test_gradients_match_reference(device, backend, channel_wise, reverse_mask, reverse, dtype):
    inputs = make_inputs((3, 4, 6, 5), dtype, device, channel_wise, requires_grad=True)
    y, logdet = run(backend, *inputs, channel_wise=channel_wise, reverse_mask=reverse_mask,
                    reverse=reverse)
    grad_y, grad_logdet = torch.randn_like(y), torch.randn_like(logdet)
    grads = torch.autograd.grad((y * grad_y).sum() + (logdet * grad_logdet).sum(), inputs)

    def reference_grads(inputs, grad_y, grad_logdet):
        inputs = [v.detach().requires_grad_() for v in inputs]
        y, logdet = image_coupling_reference(*inputs, channel_wise, reverse_mask, reverse)
        return torch.autograd.grad((y * grad_y).sum() + (logdet * grad_logdet).sum(), inputs)

    grads64 = reference_grads([v.double() for v in inputs], grad_y.double(), grad_logdet.double())
    grads_ref = reference_grads(inputs, grad_y, grad_logdet)
    for name, got, truth, ref in zip(("x", "st", "rescale"), grads, grads64, grads_ref):
        assert_matches_float64(got, truth, f"gradient of {name}",
                               reference=reference_unless_torch(backend, dtype, ref))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("channel_wise,reverse_mask", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradcheck(device, backend, channel_wise, reverse_mask, reverse):
    inputs = make_inputs((2, 2, 2, 3), torch.float64, device, channel_wise, requires_grad=True)
    with fastflow.backend(backend):
        assert torch.autograd.gradcheck(
            lambda *a: fastflow.ops.image_coupling(*a, channel_wise=channel_wise,
                                                   reverse_mask=reverse_mask, reverse=reverse),
            inputs, fast_mode=True)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("channel_wise,reverse_mask", MASKS, ids=MASK_IDS)
def test_reverse_inverts_forward(device, backend, channel_wise, reverse_mask):
    x, st, rescale = make_inputs((2, 4, 6, 6), torch.float32, device, channel_wise)
    kw = dict(channel_wise=channel_wise, reverse_mask=reverse_mask)
    y, logdet = run(backend, x, st, rescale, **kw)
    x_back, logdet_back = run(backend, y, st, rescale, reverse=True, **kw)
    # the truth of a round trip is x itself; the reference's own round trip sets the allowance
    y_ref, logdet_ref = image_coupling_reference(x, st, rescale, **kw)
    x_back_ref, _ = image_coupling_reference(y_ref, st, rescale, reverse=True, **kw)
    assert_matches_float64(x_back, x.double(), "x_back",
                           reference=reference_unless_torch(backend, torch.float32, x_back_ref))
    _, logdet64 = image_coupling_reference(x.double(), st.double(), rescale.double(), **kw)
    assert_matches_float64(logdet_back, -logdet64, "logdet_back",
                           reference=reference_unless_torch(backend, torch.float32, -logdet_ref))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_strided_inputs(device, backend):
    x, st, rescale = make_inputs((2, 4, 6, 6), torch.float32, device, channel_wise=False)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    st_sliced = torch.stack([st, st], dim=2).flatten(1, 2)[:, ::2]  # channel stride doubled
    assert torch.equal(st_sliced, st) and not st_sliced.is_contiguous()
    y, logdet = run(backend, x_cl, st_sliced, rescale)
    y64, logdet64 = image_coupling_reference(x.double(), st.double(), rescale.double())
    _, logdet_ref = image_coupling_reference(x, st, rescale)
    assert_matches_float64(y, y64, "y")
    assert_matches_float64(logdet, logdet64, "logdet",
                           reference=reference_unless_torch(backend, torch.float32, logdet_ref))


KERNEL_BACKENDS = [p for p in ALL_BACKENDS if p.values[1] != "torch"]


@pytest.mark.parametrize("device,backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("channel_wise,reverse_mask", MASKS, ids=MASK_IDS)
def test_opcheck(device, backend, channel_wise, reverse_mask):
    op = getattr(torch.ops.fastflow, "image_coupling" + ("_triton" if backend == "triton" else ""))
    for shape in [(2, 4, 4, 6), (0, 2, 2, 2)]:
        x, st, rescale = make_inputs(shape, torch.float32, device, channel_wise, requires_grad=True)
        torch.library.opcheck(op.default, (x, st, rescale.reshape(-1), channel_wise, reverse_mask, False))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_compile_fullgraph(device, backend):
    x, st, rescale = make_inputs((2, 4, 4, 4), torch.float32, device, False, requires_grad=True)

    def two_layers(x, st, rescale):
        y, ld1 = fastflow.ops.image_coupling(x, st, rescale)
        z, ld2 = fastflow.ops.image_coupling(y, st, rescale, reverse_mask=True)
        return z, ld1 + ld2

    with fastflow.backend(backend):
        torch._dynamo.reset()
        out, ld = torch.compile(two_layers, fullgraph=True, backend="aot_eager")(x, st, rescale)
        out_eager, ld_eager = two_layers(x, st, rescale)
    torch.testing.assert_close(out, out_eager)
    torch.testing.assert_close(ld, ld_eager)
    grads = torch.autograd.grad(out.sum() + ld.sum(), (x, st, rescale))
    grads_eager = torch.autograd.grad(out_eager.sum() + ld_eager.sum(), (x, st, rescale))
    for got, expected in zip(grads, grads_eager):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_bad_input_names_the_argument(device, backend):
    x, st, rescale = make_inputs((2, 4, 4, 4), torch.float32, device, False)
    cases = [
        ((x[0], st, rescale), {}, ValueError, "expected x of shape \\[B, C, H, W\\]"),
        ((x, st[:, :4], rescale), {}, ValueError, "st must have shape \\[2, 8, 4, 4\\]"),
        ((x, st, rescale[:3]), {}, ValueError, "rescale must have 4 entries"),
        ((x[:, :3], st[:, :6], rescale[:3]), {"channel_wise": True}, ValueError,
         "channel-wise coupling needs an even channel count in x, got 3"),
        ((x, st.double(), rescale), {}, ValueError, "st must have x's dtype"),
        ((x.int(), st, rescale), {}, TypeError, "x must be float32"),
        ((x, st.tolist(), rescale), {}, TypeError, "st must be a torch.Tensor"),
        ((x, st.to("meta"), rescale), {}, ValueError, "st must be on x's device"),
    ]
    for args, kwargs, error, message in cases:
        assert_raises_on_every_path(
            backend, "image_coupling", error, message,
            lambda: fastflow.ops.image_coupling(*args, **kwargs),
            (*args, kwargs.get("channel_wise", False), False, False))
