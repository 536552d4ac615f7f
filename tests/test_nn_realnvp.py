"""fastflow.nn's RealNVP models against the reference models (seeds 000, 001, 004): a
reference state_dict loads strictly, and outputs, log-dets and parameter gradients agree
(float32: relative error <= 1e-5 on outputs and log-dets, <= 1e-4 on gradients) in train
and eval mode, on every backend; the NaN policy; torch.compile(fullgraph=True)."""

from types import SimpleNamespace

import pytest
import torch

import fastflow
from fastflow import reference

from backends import backend_params

BACKENDS = backend_params("cpu")  # the models' GPU runs are in the GPU check script


def assert_relative(got, expected, tol, what, floor=1e-12):
    """max |got − expected| / max(max |expected|, floor) <= tol."""
    scale = max(expected.abs().max().item(), floor)
    err = (got.double() - expected.double()).abs().max().item() / scale
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


def pair(ref_cls, fast_cls, *args, **kwargs):
    torch.manual_seed(0)
    ref = ref_cls(*args, **kwargs)
    fast = fast_cls(*args, **kwargs)
    fast.load_state_dict(ref.state_dict(), strict=True)
    assert list(fast.state_dict()) == list(ref.state_dict())
    return ref, fast


def compare(ref, fast, run, backend, mode):
    """run(model) -> tuple of outputs whose sum of means is the loss; compares outputs and
    parameter gradients. A gradient's scale has a floor of 1% of the model's largest
    gradient: some are exactly zero in exact arithmetic (a conv bias in front of a
    train-mode BatchNorm) and both sides hold rounding noise there."""
    for model in (ref, fast):
        getattr(model, mode)()
        model.zero_grad()
    expected = run(ref)
    with fastflow.backend(backend):
        got = run(fast)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert_relative(g, e, 1e-5, f"output {i}")
    sum(e.double().mean() for e in expected).backward()
    sum(g.double().mean() for g in got).backward()
    grads = [(name, p.grad) for name, p in ref.named_parameters() if p.grad is not None]
    floor = 1e-2 * max(g.abs().max().item() for _, g in grads)
    fast_grads = dict(fast.named_parameters())
    for name, grad in grads:
        assert_relative(fast_grads[name].grad, grad, 1e-4, f"gradient of {name}", floor)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_seed000_realnvp(device, backend, mode):
    ref, fast = pair(reference.mlp_realnvp.RealNVP, fastflow.nn.mlp_realnvp.RealNVP, 6, 16, 3)
    x = torch.randn(9, 6)

    def run(model):
        torch.manual_seed(1)  # log_prob dequantizes with torch.rand_like when dim > 2
        log_prob = model.log_prob(x)
        y, log_det = model.layers[0](x)
        return log_prob, y, log_det, model.layers[1](x, reverse=True)

    compare(ref, fast, run, backend, mode)
    torch.manual_seed(2)
    expected = ref.sample(5)
    torch.manual_seed(2)
    with fastflow.backend(backend):
        assert_relative(fast.sample(5), expected, 1e-5, "samples")


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_seed004_realnvp(device, backend, mode):
    ref, fast = pair(reference.realnvp2d.RealNVP, fastflow.nn.realnvp2d.RealNVP, 2, 32, 6)
    x = torch.randn(64, 2)
    compare(ref, fast, lambda m: (*m(x), *m.inverse(x)), backend, mode)


def multiscale_args(num_scales=2):
    return SimpleNamespace(num_scales=num_scales, mid_channels=8, num_blocks=1)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_seed001_realnvp(device, backend, mode):
    ref, fast = pair(reference.multiscale.RealNVP, fastflow.nn.multiscale.RealNVP, 8, 1,
                     multiscale_args())
    x = torch.rand(4, 1, 8, 8)
    noise = torch.rand_like(x)
    loss = reference.multiscale.RealNVPLoss()

    def run(model):
        y, sldj = model._pre_process(x, noise)
        z, sldj = model.flows(y, sldj, reverse=False)
        x_back, _ = model.flows(z.detach(), None, reverse=True)
        return z, sldj, loss(z, sldj), x_back

    compare(ref, fast, run, backend, mode)
    assert_relative(fast.flows.in_couplings[1].st_net.in_norm.running_mean,
                    ref.flows.in_couplings[1].st_net.in_norm.running_mean, 1e-5, "BatchNorm running mean")


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_seed001_forward_and_sample(device, backend):
    ref, fast = pair(reference.multiscale.RealNVP, fastflow.nn.multiscale.RealNVP, 8, 1,
                     multiscale_args())
    ref.eval(), fast.eval()
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(5)
    z_ref, sldj_ref = ref(x)  # draws the dequantization noise with torch.rand_like
    torch.manual_seed(5)
    with fastflow.backend(backend):
        z, sldj = fast(x)
        with pytest.raises(ValueError, match=r"Expected x in \[0, 1\]"):
            fast(x - 1)
        z0 = torch.randn(2, 1, 8, 8)
        assert_relative(fast.sample(2, z=z0), ref.sample(2, z=z0), 1e-5, "samples")
    assert_relative(z, z_ref, 1e-5, "z")
    assert_relative(sldj, sldj_ref, 1e-5, "sldj")


def test_seed001_nan_policy():
    torch.manual_seed(0)
    model = fastflow.nn.multiscale.RealNVP(8, 1, multiscale_args(num_scales=1)).eval()
    with torch.no_grad():
        model.flows.in_couplings[1].rescale.parametrizations.weight.original1.fill_(float("nan"))
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        z, sldj = model(x)  # default: no check, no host synchronisation; the NaN shows
        assert torch.isnan(sldj).all()
        model.set_nan_check(True)
        with pytest.raises(RuntimeError, match="Scale factor has NaN entries"):
            model(x)
        with pytest.raises(RuntimeError, match="Scale factor has NaN entries"):
            model(torch.randn(2, 1, 8, 8), reverse=True)
    checked = fastflow.nn.multiscale.RealNVP(8, 1, multiscale_args(num_scales=1), nan_check=True)
    assert all(layer.nan_check for layer in checked.modules()
               if isinstance(layer, fastflow.nn.multiscale.CouplingLayer))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_compile_fullgraph(device, backend):
    torch.manual_seed(0)
    models = {
        "000": (fastflow.nn.mlp_realnvp.RealNVP(6, 16, 2), lambda m, x: m.layers[0](x), torch.randn(4, 6)),
        "004": (fastflow.nn.realnvp2d.RealNVP(2, 16, 4), lambda m, x: m(x), torch.randn(8, 2)),
        "001": (fastflow.nn.multiscale.RealNVP(8, 1, multiscale_args()).eval(), lambda m, x: m(x),
                torch.rand(2, 1, 8, 8)),
    }
    with fastflow.backend(backend):
        for name, (model, call, x) in models.items():
            torch._dynamo.reset()
            compiled = torch.compile(lambda x: call(model, x), fullgraph=True, backend="aot_eager")
            torch.manual_seed(3)
            got = compiled(x)
            torch.manual_seed(3)
            expected = call(model, x)
            for g, e in zip(got, expected):
                torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5, msg=name)
