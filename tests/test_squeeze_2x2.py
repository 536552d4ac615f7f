"""squeeze_2x2 on every backend against the multi-scale RealNVP's reference: bit for bit
(it is a permutation), forward and backward, every float dtype, odd sizes, batch 0, strided
inputs."""

import pytest
import torch

import fastflow
from fastflow import reference
from fastflow.ops.squeeze_2x2 import squeeze_2x2_output_shape

from backends import ALL_BACKENDS

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
MODES = [(False, False), (False, True), (True, False), (True, True)]
MODE_IDS = ["fwd", "fwd-alt", "rev", "rev-alt"]

# Input shapes for a forward squeeze (even H, W); a reverse squeeze takes the output shape.
FORWARD_SHAPES = [(1, 1, 2, 2), (2, 3, 4, 6), (3, 5, 10, 14), (1, 7, 2, 18), (0, 2, 4, 4)]


def input_shape(shape, reverse):
    b, c, h, w = shape
    return (b, 4 * c, h // 2, w // 2) if reverse else shape


def reference_squeeze(x, reverse, alt_order):
    """The reference squeeze, on the CPU: its alt_order is a convolution, which cuDNN may run
    in TF32 on a GPU (rounding float32 values); on the CPU it moves values exactly."""
    return reference.squeeze_2x2(x.detach().cpu(), reverse=reverse, alt_order=alt_order)


def run(backend, x, reverse, alt_order):
    with fastflow.backend(backend):
        return fastflow.squeeze_2x2(x, reverse=reverse, alt_order=alt_order)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("reverse,alt_order", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", FORWARD_SHAPES, ids=str)
def test_matches_reference_bit_for_bit(device, backend, reverse, alt_order, dtype, shape):
    x = torch.randn(input_shape(shape, reverse), dtype=dtype, device=device)
    out = run(backend, x, reverse, alt_order)
    expected = reference_squeeze(x, reverse, alt_order)
    assert out.shape == expected.shape and out.dtype == dtype and out.device == x.device
    assert torch.equal(out.cpu(), expected)


def strided_views(x):
    """Views of x with the same values and other strides."""
    b, c, h, w = x.shape
    padded = torch.zeros(b, c + 1, h + 3, 2 * w, dtype=x.dtype, device=x.device)
    padded[:, 1:, 3:, ::2] = x
    return {
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "transposed": x.transpose(2, 3).contiguous().transpose(2, 3),
        "sliced": padded[:, 1:, 3:, ::2],
        "batch_expanded": x[:1].expand(3, c, h, w),
    }


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("reverse,alt_order", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced", "batch_expanded"])
def test_non_contiguous_input(device, backend, reverse, alt_order, layout):
    x = torch.randn(input_shape((2, 3, 6, 4), reverse), device=device)
    view = strided_views(x)[layout]
    assert not view.is_contiguous()
    out = run(backend, view, reverse, alt_order)
    assert torch.equal(out.cpu(), reference_squeeze(view, reverse, alt_order))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("alt_order", [False, True], ids=["default", "alt"])
def test_forward_then_reverse_is_identity(device, backend, alt_order):
    x = torch.randn(2, 3, 8, 6, device=device)
    y = run(backend, x, False, alt_order)
    assert torch.equal(run(backend, y, True, alt_order), x)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("reverse,alt_order", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_backward_matches_reference(device, backend, reverse, alt_order, dtype):
    x = torch.randn(input_shape((2, 3, 4, 6), reverse), dtype=dtype, device=device,
                    requires_grad=True)
    grad = torch.randn(squeeze_2x2_output_shape(x, reverse, alt_order), dtype=dtype, device=device)
    run(backend, x, reverse, alt_order).backward(grad)

    x_ref = x.detach().cpu().requires_grad_()
    reference.squeeze_2x2(x_ref, reverse=reverse, alt_order=alt_order).backward(grad.cpu())
    assert torch.equal(x.grad.cpu(), x_ref.grad)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("reverse,alt_order", MODES, ids=MODE_IDS)
def test_gradcheck(device, backend, reverse, alt_order):
    x = torch.randn(input_shape((1, 2, 2, 4), reverse), dtype=torch.float64, device=device,
                    requires_grad=True)
    with fastflow.backend(backend):
        assert torch.autograd.gradcheck(
            lambda t: fastflow.squeeze_2x2(t, reverse=reverse, alt_order=alt_order), (x,))


KERNEL_BACKENDS = [p for p in ALL_BACKENDS if p.values[1] != "torch"]


def custom_op(backend):
    return {"cpu": torch.ops.fastflow.squeeze_2x2, "cuda": torch.ops.fastflow.squeeze_2x2,
            "triton": torch.ops.fastflow.squeeze_2x2_triton}[backend].default


@pytest.mark.parametrize("device,backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("reverse,alt_order", MODES, ids=MODE_IDS)
def test_opcheck(device, backend, reverse, alt_order):
    for shape, requires_grad in [((2, 3, 4, 6), True), ((0, 1, 2, 2), False)]:
        x = torch.randn(input_shape(shape, reverse), device=device, requires_grad=requires_grad)
        torch.library.opcheck(custom_op(backend), (x, reverse, alt_order))


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_compile_fullgraph(device, backend):
    def squeeze_round_trip(x):
        y = fastflow.squeeze_2x2(x, alt_order=True)
        z = fastflow.squeeze_2x2(y * 2.0)
        return fastflow.squeeze_2x2(z, reverse=True), y

    x = torch.randn(2, 3, 8, 4, device=device, requires_grad=True)
    with fastflow.backend(backend):
        torch._dynamo.reset()
        compiled = torch.compile(squeeze_round_trip, fullgraph=True, backend="aot_eager")
        out, y = compiled(x)
        out_eager, y_eager = squeeze_round_trip(x)
    assert torch.equal(out, out_eager) and torch.equal(y, y_eager)
    (grad,) = torch.autograd.grad(out.sum() + y.sum(), x)
    (grad_eager,) = torch.autograd.grad(out_eager.sum() + y_eager.sum(), x)
    assert torch.equal(grad, grad_eager)


@pytest.mark.parametrize("device,backend", [p for p in ALL_BACKENDS if p.values[1] != "triton"])
def test_compile_inductor(device, backend):
    x = torch.randn(2, 4, 6, 6, device=device)
    with fastflow.backend(backend):
        torch._dynamo.reset()
        compiled = torch.compile(lambda t: fastflow.squeeze_2x2(t.relu()), fullgraph=True)
        assert torch.equal(compiled(x), reference_squeeze(x.relu(), False, False).to(device))


BAD_INPUTS = [
    # (input shape, reverse, alt_order, error, message): the reference's errors, and not-4-D.
    ((1, 1, 3, 4), False, False, ValueError, "Expected even spatial dims HxW, got 3x4"),
    ((1, 1, 4, 5), False, False, ValueError, "Expected even spatial dims HxW, got 4x5"),
    ((1, 1, 3, 4), False, True, ValueError, "Height must be divisible by 2, got 3."),
    ((1, 1, 4, 5), False, True, ValueError, "Width must be divisible by 4, got 5."),
    ((1, 6, 2, 2), True, False, ValueError, "Number of channels 6 is not divisible by 4"),
    ((1, 6, 2, 2), True, True, ValueError, "Number of channels must be divisible by 4, got 6."),
    ((4, 2, 2), False, False, ValueError, "expected a 4-D NCHW tensor x"),
    ((1, 1, 4, 2, 2), True, False, ValueError, "expected a 4-D NCHW tensor x"),
]


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
@pytest.mark.parametrize("shape,reverse,alt_order,error,message", BAD_INPUTS)
def test_bad_input_raises_like_the_reference(device, backend, shape, reverse, alt_order, error,
                                             message):
    x = torch.randn(shape, device=device)
    with pytest.raises(error, match=message):
        run(backend, x, reverse, alt_order)
    if backend != "torch":  # the custom op itself checks too (C++ or Python side)
        with pytest.raises(error, match=message):
            custom_op(backend)(x, reverse, alt_order)
    if len(shape) == 4:  # the reference agrees
        with pytest.raises(error, match=message):
            reference.squeeze_2x2(x.cpu(), reverse=reverse, alt_order=alt_order)


@pytest.mark.parametrize("device,backend", ALL_BACKENDS)
def test_non_float_and_non_tensor_raise_type_error(device, backend):
    with pytest.raises(TypeError, match="x must be float32"):
        run(backend, torch.zeros(1, 1, 2, 2, dtype=torch.int32, device=device), False, False)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        run(backend, [[[[1.0, 2.0], [3.0, 4.0]]]], False, False)
