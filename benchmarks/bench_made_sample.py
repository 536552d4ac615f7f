"""MADE and MAF sampling: seed 000's loop (generate_samples: one full forward pass per
pixel) and seed 003's MAF.sample (one pass per dimension per block) against fastflow's
one-pass samplers on each backend with compiled kernels. Seconds per sample are in
extra_info; the speedup is the ratio of the medians within one run.

Models: seed 000's MADE 784-[512, 512]-784 at batch 1, 16, 256 (and 1024 on a GPU); seed
003's MAF of 5 blocks on D = 784 (hidden 512, one hidden layer besides the input layer).
Before timing, each fastflow provider's samples are checked against the reference's on
the same uniforms (or normals). The reference loops take seconds: they run few rounds."""

import numpy as np
import pytest
import torch

import fastflow
from fastflow import reference

from providers import DEVICE, fastflow_providers, synchronized

GPU = DEVICE == "cuda"
BATCHES = [1, 16, 256, 1024] if GPU else [1, 16, 256]
PROVIDERS = ["reference"] + fastflow_providers()


def made000():
    np.random.seed(0)
    torch.manual_seed(0)
    return reference.made.MADE(784, [512, 512], 784).to(DEVICE)


def run(benchmark, fn, provider, batch, group):
    benchmark.group = group
    rounds = 1 if provider == "reference" else 10
    benchmark.pedantic(synchronized(fn), rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info["seconds_per_sample"] = benchmark.stats.stats.median / batch


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("batch", BATCHES)
def test_made_sample(benchmark, provider, batch):
    made = made000()
    uniforms = torch.rand(batch, 784, device=DEVICE)
    if provider == "reference":
        def fn():
            return reference.made.generate_samples(made, batch, uniforms=uniforms)
    else:
        def fn():
            with fastflow.backend(provider):
                return fastflow.made_sample(made, batch, uniforms=uniforms)[0]
        expected = reference.made.generate_samples(made, batch, uniforms=uniforms)
        differ = fn() != expected
        with torch.no_grad():
            near = (uniforms - torch.sigmoid(made(expected))).abs() < 1e-6
        assert not (differ & ~near).any(), f"{provider} samples differ from the reference loop"
    run(benchmark, fn, provider, batch, f"made_sample 000-784-512-512 b{batch} {DEVICE}")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("batch", [16])
def test_maf_sample(benchmark, provider, batch):
    torch.manual_seed(0)
    ref = reference.maf.MAF(784, 512, 1, 5).to(DEVICE)
    z = torch.randn(batch, 784, device=DEVICE)
    if provider == "reference":
        def fn():
            return ref.sample(batch, z)
    else:
        fast = fastflow.nn.maf.MAF(784, 512, 1, 5).to(DEVICE)
        fast.load_state_dict(ref.state_dict())

        def fn():
            with fastflow.backend(provider):
                return fast.sample(batch, z)[0]
        torch.testing.assert_close(fn(), ref.sample(batch, z), rtol=1e-4, atol=1e-4,
                                   msg=f"{provider} MAF samples disagree with the reference")
    run(benchmark, fn, provider, batch, f"maf_sample 003-5x784-512 b{batch} {DEVICE}")
