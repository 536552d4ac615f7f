"""fastflow.zuko against zuko's own inverse: for the same base noise z, the samples and their
log-densities of zuko MAFs and NSFs (any order, with and without context, several
activations, coupling-like passes) match zuko's flow(c).transform.inv(z) and
flow(c).log_prob, judged against a float64 run of zuko. Unsupported parts are refused by
name, and patch() routes flow(c).sample through fastflow."""

import functools
import math

import pytest
import torch

zuko = pytest.importorskip("zuko")

import fastflow  # noqa: E402
import fastflow.zuko as fastflow_zuko  # noqa: E402

from utils import assert_matches_float64  # noqa: E402

SAMPLE_BACKENDS = ["cpu", "torch"]


def trained_like(flow, seed):
    """Weights of a trained flow's scale (zuko's initialisation leaves the inverse close to
    the identity, which would hide errors): gain 0.7 per layer, biases ~ 0.3. A larger gain
    makes the inverse of a random MAF explode over 64 dimensions, in zuko's float64 too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in flow.modules():
            if isinstance(module, zuko.nn.MaskedLinear):
                fan_in = module.mask.sum(dim=1).clamp(min=1).to(module.weight.dtype)
                module.weight.copy_(0.7 * torch.randn(module.weight.shape, generator=generator) /
                                    fan_in.sqrt()[:, None])
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
    return flow


def make_flow(kind, dims, context, seed, **kwargs):
    torch.manual_seed(seed)
    constructor = {"MAF": zuko.flows.MAF, "NSF": zuko.flows.NSF}[kind]
    kwargs.setdefault("hidden_features", [24, 24])
    return trained_like(constructor(dims, context, **kwargs), seed)


def assert_matches_zuko(flow, batch, context_features, seed, backend="cpu", scale=2.0):
    """fastflow's samples and log-densities of `flow` in float32, and of a float64 copy,
    against zuko's float64 inverse and its rsample_and_log_prob's log-density (base log
    density of z minus the inverse's log |det|); zuko's float32 run sets float32's
    allowance."""

    def zuko_inverse(flow, c, z):
        distribution = flow(c)
        x, ladj = distribution.transform.inv.call_and_ladj(z)
        return x, distribution.base.log_prob(z) - ladj

    generator = torch.Generator().manual_seed(seed)
    dims = flow.transform.transforms[0].hyper[-1].weight.shape[0] // \
        flow.transform.transforms[0].total
    z = scale * torch.randn(batch, dims, generator=generator)
    c = torch.randn(batch, context_features, generator=generator) if context_features else None
    flow64 = flow.to(torch.float64)
    with torch.no_grad():
        truth, truth_lp = zuko_inverse(flow64, None if c is None else c.double(), z.double())
        with fastflow.backend(backend):
            x64, lp64 = fastflow_zuko.sample_and_log_prob(
                flow64, context=None if c is None else c.double(), z=z.double())
        flow32 = flow64.to(torch.float32)
        ref32, ref32_lp = zuko_inverse(flow32, c, z)
        with fastflow.backend(backend):
            x32, lp32 = fastflow_zuko.sample_and_log_prob(flow32, context=c, z=z)
    assert x64.dtype == torch.float64 and x32.dtype == torch.float32
    torch.testing.assert_close(x64, truth, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(lp64, truth_lp, rtol=1e-9, atol=1e-9)
    assert_matches_float64(x32, truth, "samples", reference=ref32, dtype=torch.float32)
    assert_matches_float64(lp32, truth_lp, "log-densities", reference=ref32_lp,
                           dtype=torch.float32)


@pytest.mark.parametrize("kind", ["MAF", "NSF"])
@pytest.mark.parametrize("dims,batch,context,randperm", [
    (2, 1, 0, False), (10, 7, 3, True), (10, 64, 0, False), (64, 7, 5, True), (64, 64, 0, True),
    (784, 7, 2, True), (784, 1, 0, False),
])
def test_matches_zuko_inverse(kind, dims, batch, context, randperm):
    hidden = [16, 16] if dims == 784 else [24, 24]
    flow = make_flow(kind, dims, context, seed=dims + batch, transforms=2 if dims == 784 else 3,
                     randperm=randperm, hidden_features=hidden)
    assert_matches_zuko(flow, batch, context, seed=batch)


@pytest.mark.parametrize("backend", SAMPLE_BACKENDS)
@pytest.mark.parametrize("activation", [torch.nn.ELU, torch.nn.SiLU, torch.nn.Tanh,
                                        torch.nn.LeakyReLU, torch.nn.Sigmoid])
def test_activations(backend, activation):
    flow = make_flow("MAF", 9, 2, seed=3, randperm=True, activation=activation)
    assert_matches_zuko(flow, 6, 2, seed=4, backend=backend)


@pytest.mark.parametrize("backend", SAMPLE_BACKENDS)
def test_spline_settings_and_out_of_bound_values(backend):
    """NSF with its own bins, bound and slope (through functools.partial, as NSF builds its
    univariate); noise of scale 4 puts many values outside [−bound, bound] (the identity)."""
    flow = make_flow("NSF", 8, 0, seed=5, bins=5, slope=1e-2, transforms=2)
    for t in flow.transform.transforms:
        t.univariate = functools.partial(zuko.transforms.MonotonicRQSTransform, bound=3.0,
                                         slope=1e-2)
    assert_matches_zuko(flow, 33, 0, seed=6, backend=backend, scale=4.0)


def test_affine_slope_and_coupling_passes():
    """Affine with its own slope; fewer passes than features (coupling-like: the masks
    make 2 groups, sampled in 2 steps) and an explicit adjacency."""
    slope = 0.05
    flow = make_flow("MAF", 12, 3, seed=7, passes=2,
                     univariate=functools.partial(zuko.transforms.MonotonicAffineTransform,
                                                  slope=slope))
    assert_matches_zuko(flow, 5, 3, seed=8)
    adjacency = torch.eye(6, dtype=torch.bool) | (torch.rand(6, 6) < 0.4).tril()
    transform = zuko.flows.MaskedAutoregressiveTransform(6, adjacency=adjacency,
                                                         hidden_features=[20])
    flow = zuko.flows.Flow([transform], zuko.flows.autoregressive.MAF(6).base)
    assert_matches_zuko(trained_like(flow, 9), 4, 0, seed=10)


def test_sample_shapes_and_default_noise():
    flow = make_flow("MAF", 4, 3, seed=11)
    c = torch.randn(5, 3)
    torch.manual_seed(0)
    x = fastflow_zuko.sample(flow, (2,), context=c)
    torch.manual_seed(0)
    expected = flow(c).sample((2,))
    assert x.shape == expected.shape == (2, 5, 4)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-5)
    unconditional = make_flow("NSF", 4, 0, seed=12)
    assert fastflow_zuko.sample(unconditional).shape == (4,)
    assert fastflow_zuko.sample(unconditional, (0,)).shape == (0, 4)
    single = torch.randn(3)  # one context for every sample
    assert fastflow_zuko.sample(flow, (6,), context=single).shape == (6, 4)


def test_patch_routes_sampling_through_fastflow(monkeypatch):
    flow = make_flow("NSF", 5, 2, seed=13)
    c = torch.randn(2)
    calls = []
    original = fastflow_zuko._sample
    monkeypatch.setattr(fastflow_zuko, "_sample",
                        lambda *a, **k: calls.append("fast") or original(*a, **k))
    handle = fastflow_zuko.patch(flow)
    assert fastflow_zuko.patch(flow) is handle
    torch.manual_seed(1)
    x = flow(c).sample((3,))
    torch.manual_seed(1)
    with torch.no_grad():
        x_lp, lp = flow(c).rsample_and_log_prob((3,))
    assert len(calls) == 2 and x.shape == (3, 5)
    torch.testing.assert_close(x, x_lp)
    torch.testing.assert_close(lp, flow(c).log_prob(x), rtol=1e-4, atol=1e-4)
    # A gradient is wanted: zuko's own rsample, which has one.
    y = flow(c).rsample((2,))
    assert y.requires_grad and len(calls) == 2
    handle.remove()
    with torch.no_grad():
        flow(c).rsample_and_log_prob((3,))
    assert len(calls) == 2


@pytest.mark.parametrize("backend", SAMPLE_BACKENDS)
@pytest.mark.parametrize("kind", ["MAF", "NSF"])
def test_residual_blocks(backend, kind):
    """MaskedMLP(residual=True): Residual blocks between the layers, and a plain layer
    between blocks of different widths."""
    flow = make_flow(kind, 7, 3, seed=16, randperm=True, residual=True,
                     hidden_features=[16, 16, 24])
    assert_matches_zuko(flow, 6, 3, seed=17, backend=backend)


def test_plan_follows_mask_edits():
    """The plan is cached per transform, its masks matched by memory and version counter: an
    in-place edit (dropping connections keeps the flow autoregressive) or a new mask tensor
    makes a new plan; a write through .data needs clear_sample_plans()."""
    flow = make_flow("MAF", 6, 0, seed=18, hidden_features=[16])
    z = torch.randn(5, 6)
    fastflow_zuko.sample(flow, z=z)
    hyper = flow.transform.transforms[0].hyper
    with torch.no_grad():
        hyper[0].mask[:, 0] = False  # in place: the version counter moves
        assert_matches_zuko(flow, 5, 0, seed=19)
        hyper[-1].mask = hyper[-1].mask & (torch.rand(hyper[-1].mask.shape) < 0.5)
        assert_matches_zuko(flow, 5, 0, seed=20)
        hyper[0].mask.data[:, 1] = False  # no version change: seen after clearing
        fastflow.ops.clear_sample_plans()
        assert_matches_zuko(flow, 5, 0, seed=21)


def test_refused_by_name():
    with pytest.raises(TypeError, match="activation.*GELU"):
        fastflow_zuko.patch(make_flow("MAF", 4, 0, seed=14, activation=torch.nn.GELU))
    with pytest.raises(TypeError, match="activation.*ELU\\(alpha=0.5\\)"):
        fastflow_zuko.sample(make_flow("MAF", 4, 0, seed=14,
                                       activation=functools.partial(torch.nn.ELU, alpha=0.5)))
    with pytest.raises(TypeError, match="univariate 'ShiftedSOSPTransform'"):
        fastflow_zuko.sample(zuko.flows.SOSPF(4, transforms=1))
    with pytest.raises(TypeError, match="only MaskedAutoregressiveTransform"):
        fastflow_zuko.sample(zuko.flows.NICE(4, transforms=1))
    with pytest.raises(TypeError, match="expected a zuko.flows.Flow"):
        fastflow_zuko.sample(torch.nn.Linear(2, 2))
    conditional = make_flow("MAF", 4, 3, seed=15)
    with pytest.raises(ValueError, match="context of 3 features; none was given"):
        fastflow_zuko.sample(conditional, (2,), z=torch.randn(2, 4))
    with pytest.raises(ValueError, match="expected a context of 3 features, got 2"):
        fastflow_zuko.sample(conditional, (2,), context=torch.randn(2), z=torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"z must be \[\.\.\., 4\]"):
        fastflow_zuko.sample(conditional, context=torch.randn(3), z=torch.randn(2, 5))
    with pytest.raises(ValueError, match="context of shape \\(4, 3\\) does not broadcast"):
        fastflow_zuko.sample(conditional, context=torch.randn(4, 3), z=torch.randn(2, 4))
    assert math.isfinite(float(fastflow_zuko.sample(conditional, context=torch.randn(3)).sum()))
