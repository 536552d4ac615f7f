"""Masked linear and MADE, forward and forward+backward: the reference eager
(F.linear(x, mask * weight, b)) and under torch.compile, a dense F.linear of the same shape
(the CPU BLAS here, cuBLAS on a GPU: what the mask would cost if it were free), and each
fastflow backend with the mask as a matrix (`<backend>`) and as MADE degrees, which skips
the staircase's zero tiles (`<backend>-degrees`). Models: seed 000's MADE 784-[512, 512]-784
and seed 003's Gaussian MADE(10, 64, 1) (10 -> 64 -> 64 -> 20) computing log-densities
(MADE.inverse)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastflow
from fastflow import reference
from fastflow.ops.masked_linear import degree_mask, masked_linear_reference

from providers import DEVICE, fastflow_providers, provider_fn, synchronized, timed_step

GPU = DEVICE == "cuda"
BATCHES = [16, 256, 4096] if GPU else [16, 256]
MODES = ["fwd", "fwd+bwd"]
LAYER_PROVIDERS = (["reference", "reference-compile", "dense"]
                   + [f"{name}{form}" for name in fastflow_providers() for form in ("", "-degrees")])
LAYERS = {  # seed 000's MADE layers: (in, out, strict output rule)
    "784x512": (784, 512, False),
    "512x512": (512, 512, False),
    "512x784": (512, 784, True),
}


def layer_degrees(in_features, out_features):
    """Degrees as seed 000 draws them: 1..D for the input and output layers, random in
    1..D-1 for hidden units (D = 784)."""
    def draw(n):
        return torch.arange(1, 785) if n == 784 else torch.from_numpy(np.random.randint(1, 784, n))
    return draw(in_features).to(DEVICE), draw(out_features).to(DEVICE)


@pytest.mark.parametrize("provider", LAYER_PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("layer", LAYERS)
def test_masked_linear(benchmark, provider, mode, batch, layer):
    in_features, out_features, strict = LAYERS[layer]
    np.random.seed(0)
    torch.manual_seed(0)
    in_degrees, out_degrees = layer_degrees(in_features, out_features)
    out_degrees = out_degrees - 1 if strict else out_degrees
    mask = degree_mask(in_degrees, out_degrees).float()
    requires_grad = mode == "fwd+bwd"
    x = torch.randn(batch, in_features, device=DEVICE)
    weight = torch.randn(out_features, in_features, device=DEVICE, requires_grad=requires_grad)
    bias = torch.randn(out_features, device=DEVICE, requires_grad=requires_grad)
    x.requires_grad_(requires_grad)

    def reference_fn(x, weight, bias):
        return masked_linear_reference(x, weight, mask, bias)

    if provider == "dense":  # not the same function: timed without a check
        fn = F.linear
    elif provider.endswith("-degrees"):
        fn = provider_fn(provider.removesuffix("-degrees"), lambda x, weight, bias:
                         fastflow.ops.degree_masked_linear(x, weight, in_degrees, out_degrees, bias),
                         reference_fn)
    else:
        fn = provider_fn(provider, lambda x, weight, bias:
                         fastflow.ops.masked_linear(x, weight, mask, bias), reference_fn)
    inputs = (x, weight, bias)
    expected = reference_fn(*inputs)
    grad_y = torch.randn_like(expected)
    if provider != "dense":
        torch.testing.assert_close(fn(*inputs), expected, rtol=1e-4, atol=1e-4,
                                   msg=f"{provider} disagrees with the reference")
        if requires_grad:
            for g, e in zip(torch.autograd.grad(fn(*inputs), inputs, grad_y),
                            torch.autograd.grad(expected, inputs, grad_y)):
                torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-3,
                                           msg=f"{provider} gradients disagree")
    benchmark.group = f"masked_linear {layer} b{batch} {mode} {DEVICE}"
    benchmark.extra_info["flops"] = 2 * batch * in_features * out_features * (3 if requires_grad else 1)
    benchmark(synchronized(timed_step(fn, inputs, mode, grad_y)))


def made000():
    np.random.seed(0)
    torch.manual_seed(0)
    ref = reference.made.MADE(784, [512, 512], 784)
    fast = fastflow.nn.MADE(784, [512, 512], 784)
    fast.load_state_dict(ref.state_dict(), strict=True)
    return ref.to(DEVICE), fast.to(DEVICE), 784


def made003():
    torch.manual_seed(0)
    ref = reference.maf.MADE(10, 64, 1)
    fast = fastflow.nn.maf.MADE(10, 64, 1)
    fast.load_state_dict(ref.state_dict(), strict=True)
    return ref.to(DEVICE), fast.to(DEVICE), 10


MODELS = {
    "000-made-784-512-512": (made000, lambda model, x: model(x)),
    "003-made-10-64-64-20": (made003, lambda model, x: model.inverse(x)[0]),
}
MODEL_PROVIDERS = ["reference", "reference-compile"] + fastflow_providers()


@pytest.mark.parametrize("provider", MODEL_PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("model", MODELS)
def test_made(benchmark, provider, mode, batch, model):
    build, forward = MODELS[model]
    ref, fast, dim = build()
    x = (torch.rand(batch, dim, device=DEVICE) < 0.5).float()
    expected = forward(ref, x)
    if provider == "reference-compile":
        chosen, fn = ref, torch.compile(forward)
    else:
        chosen, fn = (ref, forward) if provider == "reference" else (fast, provider_fn(provider, forward, None))
    torch.testing.assert_close(fn(chosen, x), expected, rtol=1e-4, atol=1e-4,
                               msg=f"{provider} disagrees with the reference")
    benchmark.group = f"made {model} b{batch} {mode} {DEVICE}"
    benchmark(synchronized(timed_step(lambda x: fn(chosen, x), (x,), mode,
                                      torch.ones_like(expected))))
