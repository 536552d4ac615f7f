"""The reference models behave as the seeds do: state_dict keys, mask construction order,
invertibility, log-determinants against autograd Jacobians, the autoregressive property,
squeeze_2x2's layout, sampling with given uniforms, the losses."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fastflow.reference import glow, made, maf, mlp_realnvp, multiscale, realnvp2d


def jacobian_logdet(f, x):
    """log|det df/dx| per sample, from autograd (f acts on one sample at a time)."""
    return torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(f, xi))[1]
                        for xi in x])


def test_made_state_dict_and_masks_follow_numpy_rng():
    np.random.seed(3)
    model = made.MADE(5, [7, 6], 5)
    assert list(model.state_dict()) == [
        "net.layer_0.weight", "net.layer_0.bias", "net.layer_0.mask",
        "net.layer_1.weight", "net.layer_1.bias", "net.layer_1.mask",
        "net.layer_2.weight", "net.layer_2.bias", "net.layer_2.mask"]
    np.random.seed(3)
    hidden0 = np.random.randint(1, 5, size=7)
    hidden1 = np.random.randint(1, 5, size=6)
    assert np.array_equal(model.m[0], hidden0) and np.array_equal(model.m[1], hidden1)
    expected = (np.arange(1, 6)[None, :] <= hidden0[:, None]).astype("float32")
    assert torch.equal(model.layers[0].mask, torch.from_numpy(expected))


@pytest.mark.parametrize("build", [
    lambda: made.MADE(6, [16, 16], 6),
    lambda: (lambda m: (lambda x: m(x)))(maf.MADE(6, 16, 1).net),
], ids=["seed000", "seed003"])
def test_made_is_autoregressive(build):
    np.random.seed(0)
    torch.manual_seed(0)
    f = build()
    jac = torch.autograd.functional.jacobian(f, torch.randn(6))
    d = 6
    for i in range(d):  # output i (and, for seed 003, output d + i) sees only inputs < i
        for row in range(i, jac.shape[0], d):
            assert torch.all(jac[row, i:] == 0), (row, i)


def test_seed002_made_is_not_autoregressive():
    """The defect named in glow.MADE's docstring: output i sees input i."""
    torch.manual_seed(0)
    model = glow.MADE(4, [32, 32])
    jac = torch.autograd.functional.jacobian(lambda x: model(x.unsqueeze(0))[0][0], torch.randn(4))
    assert any(jac[i, i] != 0 for i in range(4))


def test_generate_samples_with_uniforms_matches_a_hand_loop():
    np.random.seed(1)
    torch.manual_seed(1)
    model = made.MADE(8, [16], 8)
    u = torch.rand(5, 8)
    samples = made.generate_samples(model, 5, uniforms=u)
    x = torch.zeros(5, 8)
    with torch.no_grad():
        for i in range(8):
            x[:, i] = (u[:, i] < torch.sigmoid(model(x)[:, i])).float()
    assert torch.equal(samples, x)
    assert torch.equal(made.generate_samples(model, 5, uniforms=u), samples)
    ll = made.log_likelihood(model, samples)
    assert ll.shape == (5,) and torch.all(ll <= 0)


def test_seed000_realnvp():
    torch.manual_seed(0)
    model = mlp_realnvp.RealNVP(dim=4, hidden_dim=8, n_layers=2)
    keys = list(model.state_dict())
    assert keys[:2] == ["layers.0.mask", "layers.0.s_net.0.weight"]
    assert "layers.1.t_net.4.bias" in keys and len(keys) == 2 * (1 + 6 + 6)
    x = torch.randn(3, 4, dtype=torch.float64)
    model.double()
    layer = model.layers[0]
    y, log_det = layer(x)
    torch.testing.assert_close(layer(y, reverse=True), x)
    torch.testing.assert_close(log_det, jacobian_logdet(lambda v: layer(v[None])[0][0], x))
    # log_prob (the seed's TODO) = prior + log-dets, dim <= 2 skips dequantization
    small = mlp_realnvp.RealNVP(dim=2, hidden_dim=8, n_layers=3).double()
    x2 = torch.randn(4, 2, dtype=torch.float64)
    z, total = x2, 0
    for lay in small.layers:
        z, ld = lay(z)
        total = total + ld
    expected = torch.distributions.Normal(0, 1).log_prob(z).sum(1) + total
    torch.testing.assert_close(small.log_prob(x2), expected)
    assert small.sample(7).shape == (7, 2)


def test_seed004_realnvp():
    torch.manual_seed(0)
    model = realnvp2d.RealNVP(dim=2, hidden_dim=16, num_coupling_layers=4).double()
    keys = list(model.state_dict())
    assert keys[0] == "coupling_layers.0.st_net.net.0.weight"
    assert not any("mask" in k for k in keys) and len(keys) == 4 * 6
    x = torch.randn(5, 2, dtype=torch.float64)
    z, log_det = model(x)
    x_back, log_det_back = model.inverse(z)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(log_det_back, -log_det)
    torch.testing.assert_close(log_det, jacobian_logdet(lambda v: model(v[None])[0][0], x))


def test_squeeze_2x2_layout():
    x = torch.arange(16.).view(1, 1, 4, 4)
    y = multiscale.squeeze_2x2(x)
    # channel 2*di + dj of output pixel (i, j) is input pixel (2i + di, 2j + dj)
    expected = torch.tensor([[[0., 2.], [8., 10.]], [[1., 3.], [9., 11.]],
                             [[4., 6.], [12., 14.]], [[5., 7.], [13., 15.]]]).unsqueeze(0)
    assert torch.equal(y, expected)
    # alt_order: sub-pixels in the order (0,0), (1,1), (0,1), (1,0)
    assert torch.equal(multiscale.squeeze_2x2(x, alt_order=True), expected[:, [0, 3, 1, 2]])
    for alt in (False, True):
        z = torch.randn(2, 3, 6, 4)
        assert torch.equal(multiscale.squeeze_2x2(multiscale.squeeze_2x2(z, alt_order=alt),
                                                  reverse=True, alt_order=alt), z)
    with pytest.raises(ValueError, match="4-D"):
        multiscale.squeeze_2x2(torch.zeros(4, 4))


def small_multiscale(num_scales=2):
    args = SimpleNamespace(num_scales=num_scales, mid_channels=4, num_blocks=1)
    return multiscale.RealNVP(img_size=8, in_channels=1, args=args)


def test_seed001_couplings_invert_and_logdets():
    torch.manual_seed(0)
    for mask_type, channels in ((multiscale.MaskType.CHECKERBOARD, 1), (multiscale.MaskType.CHANNEL_WISE, 4)):
        for reverse_mask in (False, True):
            layer = multiscale.CouplingLayer(channels, 4, 1, mask_type, reverse_mask).double().eval()
            x = torch.randn(2, channels, 2, 2, dtype=torch.float64)
            y, sldj = layer(x, torch.zeros(2, dtype=torch.float64), reverse=False)
            x_back, _ = layer(y, None, reverse=True)
            torch.testing.assert_close(x_back, x)
            f = lambda v: layer(v.view(1, channels, 2, 2), torch.zeros(1, dtype=torch.float64), reverse=False)[0].flatten()
            torch.testing.assert_close(sldj, jacobian_logdet(f, x.flatten(1)))


def test_seed001_realnvp_state_dict_round_trip_and_loss():
    torch.manual_seed(0)
    model = small_multiscale().eval()
    keys = list(model.state_dict())
    assert keys[0] == "data_constraint"
    assert "flows.in_couplings.0.rescale.parametrizations.weight.original0" in keys
    assert "flows.next_block.in_couplings.3.st_net.out_conv.conv.parametrizations.weight.original1" in keys
    x = torch.rand(2, 1, 8, 8)
    z, sldj = model(x)
    assert z.shape == x.shape and sldj.shape == (2,)
    with pytest.raises(ValueError, match=r"Expected x in \[0, 1\]"):
        model(x + 1)
    samples = model.sample(3)
    assert samples.shape == (3, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1

    z = torch.zeros(2, 1, 2, 2)
    sldj = torch.tensor([1.0, 2.0])
    nll = multiscale.RealNVPLoss()(z, sldj)
    expected = -(4 * (-0.5 * math.log(2 * math.pi)) - math.log(256) * 4 + 1.5)
    assert math.isclose(nll.item(), expected, rel_tol=1e-6)
    assert math.isclose(multiscale.bits_per_dim(z, nll).item(), expected / (math.log(2) * 4), rel_tol=1e-6)


def test_seed001_flows_invert():
    torch.manual_seed(0)
    model = small_multiscale().double().eval()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        z, sldj = model.flows(x, torch.zeros(2, dtype=torch.float64), reverse=False)
        x_back, _ = model.flows(z, None, reverse=True)
    torch.testing.assert_close(x_back, x)


def test_seed003_maf():
    torch.manual_seed(0)
    model = maf.MAF(input_size=4, hidden_size=16, n_hidden=1, n_flows=2).double()
    assert list(model.state_dict())[:3] == ["nf.0.net.0.weight", "nf.0.net.0.bias", "nf.0.net.0.mask"]
    x = torch.randn(5, 4, dtype=torch.float64)
    made_block = model.nf[0]
    z, log_det = made_block.inverse(x)
    x_back, _ = made_block.forward(z)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(log_det, jacobian_logdet(lambda v: made_block.inverse(v[None])[0][0], x))
    # log_prob = sum of per-layer Gaussian log-likelihoods
    v, total = x, 0
    for flow in model.nf:
        v, ld = flow.inverse(v)
        total = total + ld.reshape(-1)
    expected = torch.distributions.Normal(0, 1).log_prob(v).sum(1) + total
    torch.testing.assert_close(model.log_prob(x), expected)
    torch.testing.assert_close(model.log_probs(x), expected.mean())
    zs = torch.randn(3, 4, dtype=torch.float64)
    samples = model.sample(3, z=zs)
    v = samples
    for flow in model.nf:
        v, _ = flow.inverse(v)
    torch.testing.assert_close(v, zs)


def test_seed002_glow_and_realnvp():
    torch.manual_seed(0)
    model = glow.Glow(input_dim=4, n_blocks=2, hidden_dim=8).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    z, log_det = model(x, reverse=True)  # data -> latent: initializes ActNorm on x
    x_back, log_det_back = model(z)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(log_det_back, -log_det)
    assert "blocks.0.actnorm.initialized" in model.state_dict()
    nvp = glow.RealNVP(dim=4, n_layers=2, hidden_dim=8).double()
    z, ld = nvp(x)
    torch.testing.assert_close(nvp(z, reverse=True)[0], x)
    assert glow.MAF(4, n_layers=2, hidden_dims=[8]).double().log_prob(x).shape == (6,)
