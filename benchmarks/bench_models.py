"""The seeds' RealNVP models, reference against fastflow.nn (same weights), forward and
forward+backward (a training step's work without the optimizer). On the CPU the multi-scale
models are smaller than the seed's (2 residual blocks; batch 16 at 1×14×14, 4 at 3×32×32)
to keep the suite short."""

from types import SimpleNamespace

import pytest
import torch

import fastflow
from fastflow import reference

from providers import DEVICE, fastflow_providers, on_backend, synchronized

PROVIDERS = ["reference"] + fastflow_providers()
GPU = DEVICE == "cuda"


def model_pair(ref_cls, fast_cls, *args):
    torch.manual_seed(0)
    ref = ref_cls(*args).to(DEVICE)
    fast = fast_cls(*args).to(DEVICE)
    fast.load_state_dict(ref.state_dict(), strict=True)
    return ref, fast


def seed000(model, x):
    torch.manual_seed(0)  # log_prob's dequantization noise
    return model.log_prob(x)


def seed004(model, x):
    z, log_det = model(x)
    return -0.5 * (z ** 2).sum(1) + log_det


def seed001(model, x):
    z, sldj = model.flows(*model._pre_process(x, noise=torch.full_like(x, 0.5)), reverse=False)
    return reference.multiscale.RealNVPLoss()(z, sldj).reshape(1)


CASES = {
    "000-realnvp-784-b128": (reference.mlp_realnvp.RealNVP, fastflow.nn.mlp_realnvp.RealNVP,
                             (784, 256, 8), seed000, lambda: torch.randn(128, 784)),
    "004-realnvp-2d-b1024": (reference.realnvp2d.RealNVP, fastflow.nn.realnvp2d.RealNVP,
                             (2, 128, 6), seed004, lambda: torch.randn(1024, 2)),
    "001-realnvp-14x14": (reference.multiscale.RealNVP, fastflow.nn.multiscale.RealNVP,
                          (14, 1, SimpleNamespace(num_scales=2, mid_channels=64,
                                                  num_blocks=8 if GPU else 2)),
                          seed001, lambda: torch.rand(64 if GPU else 16, 1, 14, 14)),
    "001-realnvp-3x32x32": (reference.multiscale.RealNVP, fastflow.nn.multiscale.RealNVP,
                            (32, 3, SimpleNamespace(num_scales=2, mid_channels=64,
                                                    num_blocks=8 if GPU else 2)),
                            seed001, lambda: torch.rand(64 if GPU else 4, 3, 32, 32)),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("case", CASES)
def test_model(benchmark, provider, mode, case):
    ref_cls, fast_cls, args, run, make_input = CASES[case]
    ref, fast = model_pair(ref_cls, fast_cls, *args)
    x = make_input().to(DEVICE)
    expected = run(ref, x)
    model, fn = (ref, run) if provider == "reference" else (fast, on_backend(provider, run))
    torch.testing.assert_close(fn(model, x), expected, rtol=1e-4, atol=1e-3,
                               msg=f"{provider} disagrees with the reference")

    def step():
        if mode == "fwd":
            with torch.no_grad():
                return fn(model, x)
        model.zero_grad(set_to_none=True)
        out = fn(model, x)
        out.sum().backward()
        return out

    benchmark.group = f"model {case} {mode} {DEVICE}"
    benchmark(synchronized(step))
