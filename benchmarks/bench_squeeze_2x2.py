"""squeeze_2x2: the seed 001 reference (eager and torch.compile) against fastflow's backends,
forward (default and alt_order) and reverse, at the seeds' image sizes and one large size
for bandwidth. Throughput is reported as bytes moved (one read and one write per element)."""

import pytest
import torch

import fastflow
from fastflow import reference

from providers import DEVICE, fastflow_providers, on_backend, synchronized

SHAPES = {
    "mnist14-b128": (128, 1, 14, 14),     # seed 001 on 14x14 MNIST, batch 128
    "cifar32-b64": (64, 3, 32, 32),       # 3x32x32 images
    "scale1-b64": (64, 12, 16, 16),       # after the first squeeze of 3x32x32 at 64 channels' scale
    "large": (64, 16, 256, 256) if DEVICE == "cuda" else (16, 16, 128, 128),
}
MODES = {"fwd": (False, False), "fwd-alt": (False, True), "rev": (True, False), "rev-alt": (True, True)}
PROVIDERS = ["reference", "reference-compile"] + fastflow_providers()


def provider_fn(name):
    if name == "reference":
        return reference.squeeze_2x2
    if name == "reference-compile":
        return torch.compile(reference.squeeze_2x2)
    return on_backend(name, fastflow.squeeze_2x2)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_squeeze_2x2(benchmark, provider, mode, shape):
    reverse, alt_order = MODES[mode]
    b, c, h, w = SHAPES[shape]
    x = torch.randn((b, 4 * c, h // 2, w // 2) if reverse else (b, c, h, w), device=DEVICE)
    fn = provider_fn(provider)
    expected = reference.squeeze_2x2(x.cpu(), reverse=reverse, alt_order=alt_order)
    out = fn(x, reverse, alt_order)
    assert torch.equal(out.cpu(), expected), f"{provider} disagrees with the reference"

    benchmark.group = f"squeeze_2x2 {mode} {shape} {DEVICE}"
    benchmark.extra_info["bytes"] = 2 * x.numel() * x.element_size()
    benchmark(synchronized(fn), x, reverse, alt_order)
