"""fastflow.nflows against nflows' own inverse: for the same noise, the samples and
log-densities of nflows MAFs (permutations between transforms, random masks, context,
several activations) match flow._transform.inverse and flow.sample_and_log_prob, judged
against a float64 run of nflows. Unsupported parts are refused by name."""

import pytest
import torch
import torch.nn.functional as F

nflows = pytest.importorskip("nflows")

from nflows.distributions.normal import StandardNormal  # noqa: E402
from nflows.flows.base import Flow  # noqa: E402
from nflows.transforms import (CompositeTransform, MaskedAffineAutoregressiveTransform,  # noqa: E402
                               MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
                               RandomPermutation, ReversePermutation)
from nflows.transforms.made import MaskedLinear  # noqa: E402

import fastflow  # noqa: E402
import fastflow.nflows as fastflow_nflows  # noqa: E402

from utils import assert_matches_float64  # noqa: E402


def trained_like(flow, seed):
    """Weights of a trained flow's scale (nflows' initialisation leaves the inverse close to
    the identity, which would hide errors): gain 0.7 per layer, biases ~ 0.3."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in flow.modules():
            if isinstance(module, (MaskedLinear, torch.nn.Linear)):
                fan_in = module.weight.shape[1]
                module.weight.copy_(0.7 * torch.randn(module.weight.shape, generator=generator) /
                                    fan_in ** 0.5)
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
    return flow.eval()


def make_maf(dims, context=None, transforms=3, hidden=24, seed=0, random_permutation=False,
             **kwargs):
    torch.manual_seed(seed)
    parts = []
    for index in range(transforms):
        if index:
            parts.append(RandomPermutation(dims) if random_permutation else
                         ReversePermutation(dims))
        parts.append(MaskedAffineAutoregressiveTransform(dims, hidden, context_features=context,
                                                         **kwargs))
    return trained_like(Flow(CompositeTransform(parts), StandardNormal([dims])), seed)


def assert_matches_nflows(flow, num_samples, context_features, seed, backend="cpu"):
    """fastflow's samples and log-densities of `flow` in float32 and in float64 against
    nflows' float64 run on the same noise; nflows' float32 run sets float32's allowance."""
    generator = torch.Generator().manual_seed(seed)
    dims = flow._distribution._shape[0]
    rows = 3 if context_features else 1
    c = torch.randn(rows, context_features, generator=generator) if context_features else None
    shape = (rows, num_samples, dims) if context_features else (num_samples, dims)
    noise = torch.randn(shape, generator=generator)
    flat_c = None if c is None else c.repeat_interleave(num_samples, dim=0)

    def nflows_run(flow, dtype):
        cc = None if flat_c is None else flat_c.to(dtype)
        z = noise.reshape(-1, dims).to(dtype)
        x, logabsdet = flow._transform.inverse(z, cc)
        log_prob = flow._distribution.log_prob(z, cc) - logabsdet
        return x.reshape(shape), log_prob.reshape(shape[:-1])

    flow64 = flow.to(torch.float64)
    with torch.no_grad():
        truth, truth_lp = nflows_run(flow64, torch.float64)
        with fastflow.backend(backend):
            x64, lp64 = fastflow_nflows.sample_and_log_prob(
                flow64, num_samples, None if c is None else c.double(), noise.double())
        flow32 = flow64.to(torch.float32)
        ref32, ref32_lp = nflows_run(flow32, torch.float32)
        with fastflow.backend(backend):
            x32, lp32 = fastflow_nflows.sample_and_log_prob(flow32, num_samples, c, noise)
    torch.testing.assert_close(x64, truth, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(lp64, truth_lp, rtol=1e-9, atol=1e-9)
    assert_matches_float64(x32, truth, "samples", reference=ref32, dtype=torch.float32)
    assert_matches_float64(lp32, truth_lp, "log-densities", reference=ref32_lp,
                           dtype=torch.float32)


@pytest.mark.parametrize("residual", [True, False], ids=["residual", "feedforward"])
@pytest.mark.parametrize("dims,num_samples,context,random_permutation", [
    (2, 1, None, False), (10, 7, 3, True), (10, 64, None, True), (64, 7, 4, True),
    (64, 64, None, False), (784, 3, 2, True),
])
def test_matches_nflows_inverse(dims, num_samples, context, random_permutation, residual):
    """residual: nflows' default MADE (residual blocks, a context layer in each)."""
    flow = make_maf(dims, context, transforms=2 if dims == 784 else 3,
                    hidden=32 if dims == 784 else 24, seed=dims + num_samples,
                    random_permutation=random_permutation, use_residual_blocks=residual)
    assert_matches_nflows(flow, num_samples, context, seed=num_samples)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("activation", [F.relu, F.elu, torch.tanh, F.leaky_relu, F.silu,
                                        torch.sigmoid])
def test_activations_random_masks_and_blocks(backend, activation):
    flow = make_maf(9, 2, seed=3, random_permutation=True, activation=activation,
                    random_mask=True, num_blocks=3, use_residual_blocks=False)
    assert_matches_nflows(flow, 5, 2, seed=4, backend=backend)
    residual = make_maf(9, 2, seed=5, activation=activation, num_blocks=3)
    assert_matches_nflows(residual, 5, 2, seed=6, backend=backend)
    no_blocks = make_maf(9, None, seed=7, activation=activation, num_blocks=0)
    assert_matches_nflows(no_blocks, 5, None, seed=8, backend=backend)


def test_sample_draws_as_nflows():
    flow = make_maf(6, 2, seed=5)
    c = torch.randn(4, 2)
    torch.manual_seed(0)
    expected, expected_lp = flow.sample_and_log_prob(5, context=c)
    torch.manual_seed(0)
    got, got_lp = fastflow_nflows.sample_and_log_prob(flow, 5, context=c)
    assert got.shape == expected.shape == (4, 5, 6)
    torch.testing.assert_close(got, expected.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_lp, expected_lp.detach(), rtol=1e-4, atol=1e-4)
    unconditional = make_maf(6, seed=6)
    assert fastflow_nflows.sample(unconditional, 0).shape == (0, 6)
    torch.manual_seed(1)
    expected = unconditional.sample(3)
    torch.manual_seed(1)
    torch.testing.assert_close(fastflow_nflows.sample(unconditional, 3), expected.detach(),
                               rtol=1e-4, atol=1e-5)


def test_refused_by_name():
    with pytest.raises(TypeError, match="batch norm"):
        fastflow_nflows.sample(make_maf(4, use_batch_norm=True), 2)
    with pytest.raises(TypeError, match="batch norm"):
        fastflow_nflows.sample(make_maf(4, use_batch_norm=True, use_residual_blocks=False), 2)
    dropout = make_maf(4, dropout_probability=0.1).train()
    with pytest.raises(TypeError, match="dropout in training mode"):
        fastflow_nflows.sample(dropout, 2)
    assert fastflow_nflows.sample(dropout.eval(), 2).shape == (2, 4)
    with pytest.raises(TypeError, match="activation 'gelu'"):
        fastflow_nflows.sample(make_maf(4, activation=F.gelu), 2)
    spline = Flow(MaskedPiecewiseRationalQuadraticAutoregressiveTransform(4, 8),
                  StandardNormal([4]))
    with pytest.raises(TypeError, match="MaskedPiecewiseRationalQuadraticAutoregressiveTransform"):
        fastflow_nflows.sample(spline, 2)
    with pytest.raises(TypeError, match="expected an nflows Flow"):
        fastflow_nflows.sample(torch.nn.Linear(2, 2), 2)
    conditional = make_maf(4, 3, seed=7)
    with pytest.raises(ValueError, match="context of 3 features; none was given"):
        fastflow_nflows.sample(conditional, 2)
    with pytest.raises(ValueError, match=r"noise must be \[2, 5, D\]"):
        fastflow_nflows.sample(conditional, 5, context=torch.randn(2, 3),
                               noise=torch.randn(5, 4))
    with pytest.raises(ValueError, match="num_samples must be a non-negative int"):
        fastflow_nflows.sample(conditional, -1, context=torch.randn(2, 3))
