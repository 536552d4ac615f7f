"""Fused coupling kernels against the reference formulas (eager and torch.compile), forward
and forward+backward: the vector coupling of seeds 000/004, seed 001's image coupling
(checkerboard and channel-wise) and its dequantize-and-logit pre-process, at the seeds'
sizes and one large size for bandwidth."""

import pytest
import torch

import fastflow
from fastflow.ops.affine_coupling import affine_coupling_reference
from fastflow.ops.dequantize_logit import dequantize_logit_reference
from fastflow.ops.image_coupling import image_coupling_reference

from providers import DEVICE, fastflow_providers, provider_fn, synchronized, timed_step

LARGE = DEVICE == "cuda"
PROVIDERS = ["reference", "reference-compile"] + fastflow_providers()
MODES = ["fwd", "fwd+bwd"]

VECTOR_SHAPES = {  # (B, D)
    "004-2d-b1024": (1024, 2),
    "000-mnist-b128": (128, 784),
    "000-mnist-b4096": (4096, 784),
    "large": (16384, 1024) if LARGE else (4096, 1024),
}
IMAGE_SHAPES = {  # (B, C, H, W, channel_wise)
    "mnist14-checkerboard": (64, 1, 14, 14, False),
    "mnist14-channel": (64, 4, 7, 7, True),
    "cifar32-checkerboard": (64, 3, 32, 32, False),
    "cifar32-channel": (64, 12, 16, 16, True),
    "large": (64, 16, 128, 128, False) if LARGE else (16, 16, 128, 128, False),
}


def check_and_time(benchmark, provider, mode, fn, reference, inputs, nbytes, group, atol=1e-5):
    """Checks fn's outputs (y, then a per-sample log-det) and, for fwd+bwd, its gradients
    against the reference on the same inputs, then times it. A log-det sums up to 10^5
    float32 terms, whose order changes its last digits: it gets rtol 1e-4."""
    leaves = [v for v in inputs if isinstance(v, torch.Tensor) and v.requires_grad]
    expected = reference(*inputs)
    got = fn(*inputs)
    for i, (g, e) in enumerate(zip(got, expected)):
        torch.testing.assert_close(g, e, rtol=1e-5 if i == 0 else 1e-4, atol=atol,
                                   msg=f"{provider} disagrees with the reference")
    grads = [torch.randn_like(e) for e in expected]
    if mode == "fwd+bwd":
        expected_grads = torch.autograd.grad(expected, leaves, grads)
        got_grads = torch.autograd.grad(fn(*inputs), leaves, grads)
        for g, e in zip(got_grads, expected_grads):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4, msg=f"{provider} gradients disagree")
    benchmark.group = group
    benchmark.extra_info["bytes"] = nbytes
    benchmark(synchronized(timed_step(fn, inputs, mode, grads)))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", VECTOR_SHAPES)
def test_vector_coupling(benchmark, provider, mode, shape):
    b, d = VECTOR_SHAPES[shape]
    requires_grad = mode == "fwd+bwd"
    x = torch.randn(b, d, device=DEVICE, requires_grad=requires_grad)
    st = torch.randn(b, 2 * d, device=DEVICE, requires_grad=requires_grad)
    mask = (torch.arange(d, device=DEVICE) % 2).float()

    def fused(x, st):  # seed 004's form: one conditioner output st = [s | t]
        return fastflow.ops.affine_coupling_packed(x, st, mask, tanh_scale=True)

    def reference(x, st):
        s, t = st.chunk(2, dim=1)
        return affine_coupling_reference(x, s, t, mask, tanh_scale=True)

    check_and_time(benchmark, provider, mode, provider_fn(provider, fused, reference), reference,
                   (x, st), 16 * b * d, f"vector coupling {mode} {shape} {DEVICE}")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_image_coupling(benchmark, provider, mode, shape):
    b, c, h, w, channel_wise = IMAGE_SHAPES[shape]
    cond = c // 2 if channel_wise else c
    requires_grad = mode == "fwd+bwd"
    x = torch.randn(b, c, h, w, device=DEVICE, requires_grad=requires_grad)
    st = torch.randn(b, 2 * cond, h, w, device=DEVICE, requires_grad=requires_grad)
    rescale = torch.randn(cond, 1, 1, device=DEVICE, requires_grad=requires_grad)

    def fused(x, st, rescale):
        return fastflow.ops.image_coupling(x, st, rescale, channel_wise=channel_wise)

    def reference(x, st, rescale):
        return image_coupling_reference(x, st, rescale, channel_wise)

    check_and_time(benchmark, provider, mode, provider_fn(provider, fused, reference), reference,
                   (x, st, rescale), 4 * (x.numel() * 2 + st.numel()),
                   f"image coupling {mode} {shape} {DEVICE}", atol=1e-3)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", [(128, 1, 14, 14), (64, 3, 32, 32)], ids=["mnist14-b128", "cifar32-b64"])
def test_dequantize_logit(benchmark, provider, shape):
    x = torch.rand(shape, device=DEVICE)
    noise = torch.rand(shape, device=DEVICE)
    constraint = torch.tensor([0.9], device=DEVICE)
    fn = provider_fn(provider, fastflow.ops.dequantize_logit, dequantize_logit_reference)
    check_and_time(benchmark, provider, "fwd", fn, dequantize_logit_reference, (x, noise, constraint),
                   12 * x.numel(), f"dequantize_logit fwd {shape} {DEVICE}", atol=1e-3)
