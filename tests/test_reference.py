"""fastflow.reference reproduces the original models: state_dict keys, the order of RNG
draws at construction, invertibility (float32 round trips judged against x by
tests/utils.py's rule), log-determinants against autograd Jacobians (float64, tiny sizes),
the autoregressive property of the MADEs (and the vector Glow module's defect),
squeeze_2x2's layout and errors, reproducible sampling, the losses. A float32 result
checked against a formula is judged against that formula run by a float64 copy of the model
on the same inputs, the formula in float32 setting the allowance."""

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from fastflow.reference import glow, made, maf, mlp_realnvp, multiscale, realnvp2d

from utils import assert_matches_float64

MaskType = multiscale.MaskType


def autograd_logdet(f, x):
    """log|det J| per sample of f, which maps one flattened sample to a flat output."""
    return torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(f, xi))[1]
                        for xi in x.flatten(1)])


def multiscale_args(num_scales=2, mid_channels=8, num_blocks=1):
    return SimpleNamespace(num_scales=num_scales, mid_channels=mid_channels, num_blocks=num_blocks)


# --- construction: the order of RNG draws ------------------------------------------------

def replay_construction(module):
    """Redraws from the torch RNG, in the originals' order, what building `module` drew
    (layer initialisations, the vector Glow module's rotations and mask degrees), checking
    each against it."""
    if isinstance(module, nn.Linear):
        fresh = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        assert torch.equal(module.weight, fresh.weight) and torch.equal(module.bias, fresh.bias)
    elif isinstance(module, nn.Conv2d):
        fresh = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                          padding=module.padding, bias=module.bias is not None)
        assert torch.equal(module.parametrizations.weight.original1, fresh.weight)
        assert module.bias is None or torch.equal(module.bias, fresh.bias)
    elif isinstance(module, glow.Invertible1x1Conv):
        rotation = torch.linalg.qr(torch.randn(module.channels, module.channels))[0]
        assert_matches_float64(module.P @ module.L @ module.U, rotation.double(), "P·L·U")
        assert torch.equal(module.log_s, module.U.diag().abs().log())
    else:
        for child in module.children():
            replay_construction(child)
        if isinstance(module, glow.MADE):  # degrees drawn after the layers
            d = module.input_dim
            degrees = [torch.arange(1, d + 1)]
            degrees += [torch.randint(1, d, (layer.out_features,)) for layer in module.layers[:-1]]
            degrees += [torch.arange(1, d + 1).repeat(2)]
            for mask, d0, d1 in zip(module.masks, degrees[:-1], degrees[1:]):
                assert torch.equal(mask, d0.unsqueeze(1) <= d1.unsqueeze(0))


@pytest.mark.parametrize("build", [
    lambda: made.MADE(5, [7, 6], 5),
    lambda: mlp_realnvp.RealNVP(4, 8, 2),
    lambda: realnvp2d.RealNVP(4, 8, 3),
    lambda: multiscale.RealNVP(8, 1, multiscale_args(mid_channels=4)),
    lambda: maf.MAF(4, 8, 1, 2),
    lambda: glow.RealNVP(4, n_layers=2, hidden_dim=8),
    lambda: glow.Glow(4, n_blocks=2, hidden_dim=8),
    lambda: glow.MAF(4, n_layers=2, hidden_dims=[8, 8]),
], ids=["made.MADE", "mlp_realnvp.RealNVP", "realnvp2d.RealNVP", "multiscale.RealNVP",
        "maf.MAF", "glow.RealNVP", "glow.Glow", "glow.MAF"])
def test_construction_draws_from_torch_rng_in_original_order(build):
    torch.manual_seed(0)
    model = build()
    next_draw = torch.rand(3)
    torch.manual_seed(0)
    replay_construction(model)
    assert torch.equal(torch.rand(3), next_draw)  # and nothing else was drawn


# --- the MADE (made) ----------------------------------------------------------------------

def test_made_state_dict_and_numpy_degrees():
    np.random.seed(3)
    model = made.MADE(5, [7, 6], 5)
    assert list(model.state_dict()) == [
        "net.layer_0.weight", "net.layer_0.bias", "net.layer_0.mask",
        "net.layer_1.weight", "net.layer_1.bias", "net.layer_1.mask",
        "net.layer_2.weight", "net.layer_2.bias", "net.layer_2.mask"]
    assert [name for name, _ in model.net.named_children()] == [
        "layer_0", "relu_0", "layer_1", "relu_1", "layer_2"]
    assert model.layers == [model.net.layer_0, model.net.layer_1, model.net.layer_2]
    np.random.seed(3)
    hidden0 = np.random.randint(1, 5, size=7)
    hidden1 = np.random.randint(1, 5, size=6)
    assert np.array_equal(model.m[-1], np.arange(1, 6)) and np.array_equal(model.m[2], np.arange(1, 6))
    assert np.array_equal(model.m[0], hidden0) and np.array_equal(model.m[1], hidden1)
    masks = [hidden0[:, None] >= np.arange(1, 6)[None, :], hidden1[:, None] >= hidden0[None, :],
             np.arange(1, 6)[:, None] > hidden1[None, :]]
    for layer, mask in zip(model.layers, masks):
        assert torch.equal(layer.mask, torch.from_numpy(mask.astype("float32")))


def test_made_is_autoregressive():
    np.random.seed(0)
    torch.manual_seed(0)
    model = made.MADE(6, [16, 16], 6).double()
    jac = torch.autograd.functional.jacobian(model, torch.randn(6, dtype=torch.float64))
    assert torch.all(jac.triu() == 0)  # d out_i / d x_j = 0 for j >= i
    assert torch.any(jac.tril(-1) != 0)


def test_made_generate_samples():
    np.random.seed(1)
    torch.manual_seed(1)
    model = made.MADE(8, [16], 8)
    u = torch.rand(5, 8)
    samples = made.generate_samples(model, 5, uniforms=u)
    assert not model.training
    hand = torch.zeros(5, 8)
    with torch.no_grad():
        for i in range(8):
            hand[:, i] = (u[:, i] < torch.sigmoid(model(hand)[:, i])).float()
    assert torch.equal(samples, hand)
    assert torch.equal(made.generate_samples(model, 5, uniforms=u), samples)
    with pytest.raises(ValueError, match="uniforms of shape"):
        made.generate_samples(model, 4, uniforms=u)

    # Without uniforms: the original's loop, torch.bernoulli per pixel.
    torch.manual_seed(2)
    drawn = made.generate_samples(model, 5)
    torch.manual_seed(2)
    hand = torch.zeros(5, 8)
    with torch.no_grad():
        for i in range(8):
            hand[:, i] = torch.bernoulli(torch.sigmoid(model(hand)[:, i]))
    assert torch.equal(drawn, hand)


def test_made_log_likelihood_is_the_bernoulli_log_likelihood():
    np.random.seed(0)
    torch.manual_seed(0)
    model = made.MADE(6, [8], 6)
    x = torch.randint(0, 2, (4, 6)).float()

    def bernoulli(model, x):
        return torch.distributions.Bernoulli(logits=model(x)).log_prob(x).sum(1)

    assert_matches_float64(made.log_likelihood(model, x),
                           bernoulli(copy.deepcopy(model).double(), x.double()),
                           "log_likelihood", reference=bernoulli(model, x))


# --- the MLP RealNVP (mlp_realnvp) --------------------------------------------------------

MLP_COUPLING_KEYS = [
    "mask", "s_net.0.weight", "s_net.0.bias", "s_net.2.weight", "s_net.2.bias",
    "s_net.4.weight", "s_net.4.bias", "t_net.0.weight", "t_net.0.bias",
    "t_net.2.weight", "t_net.2.bias", "t_net.4.weight", "t_net.4.bias"]


def test_mlp_realnvp_state_dict_and_masks():
    model = mlp_realnvp.RealNVP(dim=4, hidden_dim=8, n_layers=2)
    assert list(model.layers[0].state_dict()) == MLP_COUPLING_KEYS
    assert list(model.state_dict()) == [f"layers.{i}.{k}" for i in range(2) for k in MLP_COUPLING_KEYS]
    assert torch.equal(model.layers[0].mask, torch.tensor([0., 1., 0., 1.]))
    assert torch.equal(model.layers[1].mask, torch.tensor([1., 0., 1., 0.]))


def test_mlp_realnvp_round_trip_and_logdets():
    torch.manual_seed(0)
    model = mlp_realnvp.RealNVP(dim=4, hidden_dim=8, n_layers=3)
    x = torch.randn(5, 4)
    z = x
    for layer in model.layers:
        z, _ = layer(z)
    back = z
    for layer in reversed(model.layers):
        back = layer(back, reverse=True)
    assert_matches_float64(back, x.double(), "round trip")

    model.double()
    x = x.double()
    layer = model.layers[0]
    assert_matches_float64(layer(x)[1], autograd_logdet(lambda v: layer(v[None])[0][0], x),
                           "log_det")

    def flow(v):
        total = 0
        for lay in model.layers:
            v, log_det = lay(v)
            total = total + log_det
        return v, total

    assert_matches_float64(flow(x)[1], autograd_logdet(lambda v: flow(v[None])[0][0], x),
                           "log_det")


def test_mlp_realnvp_log_prob_and_sample():
    torch.manual_seed(0)
    prior = torch.distributions.Normal(0, 1)

    def expected_log_prob(model, x):
        total = 0
        for layer in model.layers:
            x, log_det = layer(x)
            total = total + log_det
        return prior.log_prob(x).sum(1) + total

    flat = mlp_realnvp.RealNVP(dim=2, hidden_dim=8, n_layers=3)  # dim <= 2: no dequantization
    x = torch.randn(4, 2)
    assert_matches_float64(flat.log_prob(x),
                           expected_log_prob(copy.deepcopy(flat).double(), x.double()),
                           "log_prob", reference=expected_log_prob(flat, x))

    model = mlp_realnvp.RealNVP(dim=4, hidden_dim=8, n_layers=3)  # dim > 2: x + U[0, 1)
    x = torch.randn(4, 4)
    torch.manual_seed(7)
    got = model.log_prob(x)
    torch.manual_seed(7)
    noise = torch.rand_like(x)
    assert_matches_float64(got, expected_log_prob(copy.deepcopy(model).double(),
                                                  x.double() + noise.double()),
                           "log_prob", reference=expected_log_prob(model, x + noise))

    torch.manual_seed(2)
    samples = model.sample(6)
    torch.manual_seed(2)
    z = torch.randn(6, 4)
    for layer in reversed(model.layers):
        z = layer(z, reverse=True)
    assert torch.equal(samples, z)


# --- the 2-D RealNVP (realnvp2d) ----------------------------------------------------------

def test_realnvp2d_state_dict_and_masks():
    model = realnvp2d.RealNVP(dim=4, hidden_dim=8, num_coupling_layers=2)
    assert list(model.state_dict()) == [
        f"coupling_layers.{i}.st_net.net.{j}.{p}"
        for i in range(2) for j in (0, 2, 4) for p in ("weight", "bias")]
    assert list(model.coupling_layers[0].state_dict())[:2] == ["st_net.net.0.weight", "st_net.net.0.bias"]
    # plain attributes (not buffers), int64 as the original builds them
    assert torch.equal(model.coupling_layers[0].mask, torch.tensor([1, 1, 0, 0]))
    assert torch.equal(model.coupling_layers[1].mask, torch.tensor([0, 0, 1, 1]))
    assert "mask" not in dict(model.coupling_layers[0].named_buffers())


def test_realnvp2d_round_trip_and_logdets():
    torch.manual_seed(0)
    model = realnvp2d.RealNVP(dim=4, hidden_dim=16, num_coupling_layers=4)
    x = torch.randn(5, 4)
    z, log_det = model(x)
    back, log_det_back = model.inverse(z)
    assert_matches_float64(back, x.double(), "round trip")
    _, log_det64 = copy.deepcopy(model).double()(x.double())
    assert_matches_float64(log_det_back, -log_det64, "inverse log_det", reference=-log_det)
    layer = model.coupling_layers[1]
    assert_matches_float64(layer.inverse(layer(x)[0])[0], x.double(), "layer round trip")

    model.double()
    x = x.double()
    assert_matches_float64(model(x)[1], autograd_logdet(lambda v: model(v[None])[0][0], x),
                           "log_det")
    assert_matches_float64(model.inverse(x)[1],
                           autograd_logdet(lambda v: model.inverse(v[None])[0][0], x),
                           "inverse log_det")


# --- the multi-scale RealNVP (multiscale): squeeze_2x2 and masks --------------------------

def test_squeeze_2x2_layout():
    x = torch.arange(16.).view(1, 1, 4, 4)
    # default order: channel k of output pixel (i, j) is x[0, 0, 2i + k // 2, 2j + k % 2]
    expected = torch.tensor([[[[0., 2.], [8., 10.]],
                              [[1., 3.], [9., 11.]],
                              [[4., 6.], [12., 14.]],
                              [[5., 7.], [13., 15.]]]])
    assert torch.equal(multiscale.squeeze_2x2(x), expected)
    # alt_order: the sub-pixels (0, 0), (1, 1), (0, 1), (1, 0)
    expected_alt = torch.tensor([[[[0., 2.], [8., 10.]],
                                  [[5., 7.], [13., 15.]],
                                  [[1., 3.], [9., 11.]],
                                  [[4., 6.], [12., 14.]]]])
    assert torch.equal(multiscale.squeeze_2x2(x, alt_order=True), expected_alt)


def test_squeeze_2x2_channel_order():
    x = torch.randn(2, 3, 4, 6)
    y = multiscale.squeeze_2x2(x)
    y_alt = multiscale.squeeze_2x2(x, alt_order=True)
    alt_subpixels = [(0, 0), (1, 1), (0, 1), (1, 0)]
    for c in range(3):
        for q, (di, dj) in enumerate(alt_subpixels):
            sub = x[:, c, di::2, dj::2]
            assert torch.equal(y[:, 4 * c + 2 * di + dj], sub)  # channel-major
            assert torch.equal(y_alt[:, 3 * q + c], sub)  # sub-pixel-major


@pytest.mark.parametrize("alt_order", [False, True])
def test_squeeze_2x2_round_trip(alt_order):
    x = torch.randn(2, 3, 6, 4)
    y = multiscale.squeeze_2x2(x, alt_order=alt_order)
    assert y.shape == (2, 12, 3, 2)
    assert torch.equal(multiscale.squeeze_2x2(y, reverse=True, alt_order=alt_order), x)
    z = torch.randn(2, 8, 3, 5)
    assert torch.equal(multiscale.squeeze_2x2(multiscale.squeeze_2x2(z, reverse=True, alt_order=alt_order),
                                              alt_order=alt_order), z)


@pytest.mark.parametrize("shape,reverse,alt_order,message", [
    ((1, 1, 3, 4), False, False, "Expected even spatial dims HxW, got 3x4"),
    ((1, 1, 4, 3), False, False, "Expected even spatial dims HxW, got 4x3"),
    ((1, 6, 2, 2), True, False, "Number of channels 6 is not divisible by 4"),
    ((1, 1, 3, 4), False, True, "Height must be divisible by 2, got 3."),
    ((1, 1, 4, 3), False, True, "Width must be divisible by 4, got 3."),
    ((1, 6, 2, 2), True, True, "Number of channels must be divisible by 4, got 6."),
    ((4, 4), False, False, "squeeze_2x2: expected a 4-D NCHW tensor x, got shape (4, 4)"),
    ((1, 4, 4, 4, 4), True, True, "squeeze_2x2: expected a 4-D NCHW tensor x, got shape (1, 4, 4, 4, 4)"),
])
def test_squeeze_2x2_errors(shape, reverse, alt_order, message):
    with pytest.raises(ValueError) as error:
        multiscale.squeeze_2x2(torch.zeros(shape), reverse=reverse, alt_order=alt_order)
    assert str(error.value) == message


def test_checkerboard_mask():
    expected = torch.tensor([[0., 1., 0., 1.], [1., 0., 1., 0.], [0., 1., 0., 1.]]).view(1, 1, 3, 4)
    assert torch.equal(multiscale.checkerboard_mask(3, 4), expected)
    assert torch.equal(multiscale.checkerboard_mask(3, 4, reverse=True), 1 - expected)
    assert multiscale.checkerboard_mask(2, 2, dtype=torch.float64).dtype == torch.float64


# --- the multi-scale RealNVP: coupling layers ---------------------------------------------

def multiscale_coupling_keys(num_blocks):
    """A CouplingLayer's state_dict keys, in the original's order."""
    def norm(name):
        return [f"{name}.{k}" for k in ("weight", "bias", "running_mean", "running_var",
                                        "num_batches_tracked")]

    def wn_conv(name, bias=True):
        return ([f"{name}.conv.bias"] if bias else []) + [
            f"{name}.conv.parametrizations.weight.original0",
            f"{name}.conv.parametrizations.weight.original1"]

    keys = norm("st_net.in_norm") + wn_conv("st_net.in_conv") + wn_conv("st_net.in_skip")
    for i in range(num_blocks):
        block = f"st_net.blocks.{i}"
        keys += (norm(f"{block}.in_norm") + wn_conv(f"{block}.in_conv", bias=False)
                 + norm(f"{block}.out_norm") + wn_conv(f"{block}.out_conv"))
    for i in range(num_blocks):
        keys += wn_conv(f"st_net.skips.{i}")
    keys += norm("st_net.out_norm") + wn_conv("st_net.out_conv")
    return keys + ["rescale.parametrizations.weight.original0",
                   "rescale.parametrizations.weight.original1"]


def test_multiscale_coupling_state_dict():
    layer = multiscale.CouplingLayer(1, 4, 1, MaskType.CHECKERBOARD, reverse_mask=False)
    assert list(layer.state_dict()) == [
        "st_net.in_norm.weight", "st_net.in_norm.bias", "st_net.in_norm.running_mean",
        "st_net.in_norm.running_var", "st_net.in_norm.num_batches_tracked",
        "st_net.in_conv.conv.bias", "st_net.in_conv.conv.parametrizations.weight.original0",
        "st_net.in_conv.conv.parametrizations.weight.original1",
        "st_net.in_skip.conv.bias", "st_net.in_skip.conv.parametrizations.weight.original0",
        "st_net.in_skip.conv.parametrizations.weight.original1",
        "st_net.blocks.0.in_norm.weight", "st_net.blocks.0.in_norm.bias",
        "st_net.blocks.0.in_norm.running_mean", "st_net.blocks.0.in_norm.running_var",
        "st_net.blocks.0.in_norm.num_batches_tracked",
        "st_net.blocks.0.in_conv.conv.parametrizations.weight.original0",
        "st_net.blocks.0.in_conv.conv.parametrizations.weight.original1",
        "st_net.blocks.0.out_norm.weight", "st_net.blocks.0.out_norm.bias",
        "st_net.blocks.0.out_norm.running_mean", "st_net.blocks.0.out_norm.running_var",
        "st_net.blocks.0.out_norm.num_batches_tracked",
        "st_net.blocks.0.out_conv.conv.bias",
        "st_net.blocks.0.out_conv.conv.parametrizations.weight.original0",
        "st_net.blocks.0.out_conv.conv.parametrizations.weight.original1",
        "st_net.skips.0.conv.bias", "st_net.skips.0.conv.parametrizations.weight.original0",
        "st_net.skips.0.conv.parametrizations.weight.original1",
        "st_net.out_norm.weight", "st_net.out_norm.bias", "st_net.out_norm.running_mean",
        "st_net.out_norm.running_var", "st_net.out_norm.num_batches_tracked",
        "st_net.out_conv.conv.bias", "st_net.out_conv.conv.parametrizations.weight.original0",
        "st_net.out_conv.conv.parametrizations.weight.original1",
        "rescale.parametrizations.weight.original0", "rescale.parametrizations.weight.original1"]
    assert list(layer.state_dict()) == multiscale_coupling_keys(1)
    # channel-wise: the s/t network sees half the channels and predicts s and t for the rest
    layer = multiscale.CouplingLayer(4, 6, 2, MaskType.CHANNEL_WISE, reverse_mask=True)
    state = layer.state_dict()
    assert list(state) == multiscale_coupling_keys(2)
    assert state["st_net.in_norm.weight"].shape == (2,)
    assert state["st_net.in_conv.conv.parametrizations.weight.original1"].shape == (6, 4, 3, 3)
    assert state["st_net.out_conv.conv.parametrizations.weight.original1"].shape == (4, 6, 1, 1)
    assert state["rescale.parametrizations.weight.original1"].shape == (2, 1, 1)


COUPLINGS = [(MaskType.CHECKERBOARD, 1, False), (MaskType.CHECKERBOARD, 1, True),
             (MaskType.CHANNEL_WISE, 4, False), (MaskType.CHANNEL_WISE, 4, True)]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("mask_type,channels,reverse_mask", COUPLINGS)
def test_multiscale_coupling_round_trip(mask_type, channels, reverse_mask, mode):
    torch.manual_seed(0)
    layer = multiscale.CouplingLayer(channels, 8, 1, mask_type, reverse_mask)
    getattr(layer, mode)()
    x = torch.randn(3, channels, 4, 4)
    sldj = torch.zeros(3)
    y, sldj_out = layer(x, sldj, reverse=False)
    assert sldj_out is sldj  # increased in place, as the original
    back, untouched = layer(y, None, reverse=True)
    assert untouched is None
    assert_matches_float64(back, x.double(), "round trip")
    # the kept half passes through unchanged
    if mask_type == MaskType.CHECKERBOARD:
        keep = multiscale.checkerboard_mask(4, 4, reverse_mask).bool().expand_as(x)
    else:
        keep = torch.zeros_like(x, dtype=torch.bool)
        keep[:, :channels // 2] = reverse_mask
        keep[:, channels // 2:] = not reverse_mask
    assert torch.equal(y[keep], x[keep])


@pytest.mark.parametrize("mask_type,channels,reverse_mask", COUPLINGS)
def test_multiscale_coupling_logdet(mask_type, channels, reverse_mask):
    torch.manual_seed(0)
    layer = multiscale.CouplingLayer(channels, 4, 1, mask_type, reverse_mask).double().eval()
    size = 2 if mask_type == MaskType.CHECKERBOARD else 1  # 4 dimensions per sample
    x = torch.randn(3, channels, size, size, dtype=torch.float64)
    _, sldj = layer(x, torch.zeros(3, dtype=torch.float64), reverse=False)

    def f(v):
        return layer(v.view(1, channels, size, size), torch.zeros(1, dtype=torch.float64),
                     reverse=False)[0].flatten()

    assert_matches_float64(sldj, autograd_logdet(f, x), "sldj")


def test_multiscale_coupling_nan_check():
    layer = multiscale.CouplingLayer(1, 4, 1, MaskType.CHECKERBOARD, reverse_mask=False).eval()
    x = torch.full((1, 1, 2, 2), float("nan"))
    for reverse in (False, True):
        with pytest.raises(RuntimeError, match="^Scale factor has NaN entries$"):
            layer(x, torch.zeros(1), reverse=reverse)


# --- the multi-scale RealNVP: the model ---------------------------------------------------

def test_multiscale_realnvp_state_dict():
    model = multiscale.RealNVP(8, 1, multiscale_args(num_scales=2, mid_channels=8, num_blocks=1))
    coupling = multiscale_coupling_keys(1)
    expected = ["data_constraint"]
    expected += [f"flows.in_couplings.{i}.{k}" for i in range(3) for k in coupling]
    expected += [f"flows.out_couplings.{i}.{k}" for i in range(3) for k in coupling]
    expected += [f"flows.next_block.in_couplings.{i}.{k}" for i in range(4) for k in coupling]
    state = model.state_dict()
    assert list(state) == expected
    assert torch.equal(state["data_constraint"], torch.tensor([0.9]))
    assert not hasattr(model, "device")
    # widths per scale: 8 mid channels at scale 0 (16 after squeezing), 16 at scale 1
    assert state["flows.in_couplings.0.st_net.in_conv.conv.bias"].shape == (8,)
    assert state["flows.out_couplings.0.st_net.in_conv.conv.bias"].shape == (16,)
    assert state["flows.next_block.in_couplings.0.st_net.in_conv.conv.parametrizations.weight.original1"].shape == (16, 4, 3, 3)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_multiscale_flows_round_trip(mode):
    torch.manual_seed(0)
    model = multiscale.RealNVP(8, 1, multiscale_args())
    getattr(model, mode)()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        z, sldj = model.flows(x, torch.zeros(2), reverse=False)
        back, _ = model.flows(z, None, reverse=True)
    assert z.shape == x.shape and sldj.shape == (2,)
    assert_matches_float64(back, x.double(), "round trip")


def test_multiscale_flows_logdet():
    torch.manual_seed(0)
    model = multiscale.RealNVP(4, 1, multiscale_args(mid_channels=4)).double().eval()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)

    def flows(v):
        return model.flows(v, torch.zeros(v.size(0), dtype=torch.float64), reverse=False)

    assert_matches_float64(flows(x)[1],
                           autograd_logdet(lambda v: flows(v.view(1, 1, 4, 4))[0].flatten(), x),
                           "sldj")


def test_multiscale_pre_process():
    model = multiscale.RealNVP(4, 1, multiscale_args(num_scales=1)).double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    noise = torch.rand_like(x)
    y, sldj = model._pre_process(x, noise)
    u = (x * 255 + noise) / 256
    c = torch.tensor(0.9, dtype=torch.float32).double()  # 0.9 as the float32 buffer holds it
    assert_matches_float64(y, torch.logit((1 + c * (2 * u - 1)) / 2), "y")
    # sldj: log-det of the map from the dequantized u to y (elementwise, so the diagonal)
    u = u.detach().requires_grad_()
    y_of_u = torch.logit((1 + model.data_constraint.double() * (2 * u - 1)) / 2)
    (grad,) = torch.autograd.grad(y_of_u.sum(), u)
    assert_matches_float64(sldj, grad.log().flatten(1).sum(1), "sldj")
    # without noise: torch.rand_like(x), drawn as forward draws it
    torch.manual_seed(4)
    drawn = model._pre_process(x)
    torch.manual_seed(4)
    for name, got, expected in zip(("y", "sldj"), drawn, model._pre_process(x, torch.rand_like(x))):
        assert_matches_float64(got, expected, f"{name} with noise drawn")


def test_multiscale_forward_and_sample():
    torch.manual_seed(0)
    model = multiscale.RealNVP(8, 1, multiscale_args()).eval()
    model64 = copy.deepcopy(model).double()
    x = torch.rand(2, 1, 8, 8)
    torch.manual_seed(3)
    z, sldj = model(x)
    torch.manual_seed(3)
    noise = torch.rand_like(x)
    y, sldj_pre = model._pre_process(x, noise)
    z_expected, sldj_expected = model.flows(y, sldj_pre, reverse=False)
    z64, sldj64 = model64.flows(*model64._pre_process(x.double(), noise.double()), reverse=False)
    assert_matches_float64(z, z64, "z", reference=z_expected)
    assert_matches_float64(sldj, sldj64, "sldj", reference=sldj_expected)
    back, none = model(z, reverse=True)
    assert none is None
    assert_matches_float64(back, y.double(), "round trip")
    with pytest.raises(ValueError, match=r"^Expected x in \[0, 1\], got x with min/max"):
        model(x + 1)

    model.train()
    z = torch.randn(3, 1, 8, 8)
    samples = model.sample(3, z=z)
    assert not model.training and not samples.requires_grad
    with torch.no_grad():
        expected = torch.sigmoid(model.flows(z, None, reverse=True)[0]).clamp(0, 1)
    assert torch.equal(samples, expected)
    torch.manual_seed(5)
    drawn = model.sample(3)
    torch.manual_seed(5)
    assert torch.equal(drawn, model.sample(3, z=torch.randn(3, 1, 8, 8)))


def test_multiscale_loss_and_bits_per_dim():
    z = torch.tensor([1., -1., 2., 0., 0., 0., 3., 0.]).view(2, 1, 2, 2)
    sldj = torch.tensor([0.5, -1.5])
    # per sample: nll = 0.5·Σz² + 2·log(2π) + 4·log(256) − sldj, with Σz² = 6 and 9
    nll = [3.0 + 2 * math.log(2 * math.pi) + 32 * math.log(2) - 0.5,
           4.5 + 2 * math.log(2 * math.pi) + 32 * math.log(2) + 1.5]
    model = multiscale.RealNVP(2, 1, multiscale_args(num_scales=1))

    def exactly(value):
        return torch.tensor(value, dtype=torch.float64)

    assert_matches_float64(model.nll_score(z, sldj), exactly(nll), "nll_score")
    loss = multiscale.RealNVPLoss()(z, sldj)
    assert_matches_float64(loss, exactly(sum(nll) / 2), "loss")
    # k = 2: log(2) per dimension instead of log(256)
    assert_matches_float64(multiscale.RealNVPLoss(k=2)(z, sldj),
                           exactly(sum(nll) / 2 - 4 * math.log(128)), "loss with k = 2")
    bpd = multiscale.bits_per_dim(z, loss)
    assert_matches_float64(bpd, exactly(sum(nll) / 2 / (4 * math.log(2))), "bits per dim")


# --- the Gaussian MADE and the MAF (maf) --------------------------------------------------

def test_maf_state_dict():
    model = maf.MAF(input_size=3, hidden_size=4, n_hidden=1, n_flows=2)
    assert list(model.state_dict()) == [
        f"nf.{block}.net.{layer}.{p}"
        for block in (0, 2) for layer in (0, 2, 4) for p in ("weight", "bias", "mask")]
    assert [type(m).__name__ for m in model.nf] == ["MADE", "PermuteLayer", "MADE", "PermuteLayer"]
    assert [type(m).__name__ for m in model.nf[0].net] == [
        "MaskedLinear", "ReLU", "MaskedLinear", "ReLU", "MaskedLinear"]
    assert isinstance(model.base_dist, torch.distributions.Normal)


def test_gaussian_made_masks():
    block = maf.MADE(input_size=4, hidden_size=5, n_hidden=1)
    degrees = [torch.arange(4), torch.tensor([0, 1, 2, 0, 1]), torch.tensor([0, 1, 2, 0, 1]),
               torch.tensor([-1, 0, 1, 2])]
    assert all(torch.equal(m, d) for m, d in zip(block.m, degrees))
    layers = [block.net[0], block.net[2], block.net[4]]
    assert torch.equal(layers[0].mask, torch.tensor([[1., 0., 0., 0.], [1., 1., 0., 0.],
                                                     [1., 1., 1., 0.], [1., 0., 0., 0.],
                                                     [1., 1., 0., 0.]]))
    assert torch.equal(layers[1].mask, torch.tensor([[1., 0., 0., 1., 0.], [1., 1., 0., 1., 1.],
                                                     [1., 1., 1., 1., 1.], [1., 0., 0., 1., 0.],
                                                     [1., 1., 0., 1., 1.]]))
    out_mask = torch.tensor([[0., 0., 0., 0., 0.], [1., 0., 0., 1., 0.],
                             [1., 1., 0., 1., 1.], [1., 1., 1., 1., 1.]])
    assert torch.equal(layers[2].mask, out_mask.repeat(2, 1))  # means' rows, then log-stds'
    # which inputs reach each output: exactly the earlier ones
    reach = out_mask @ layers[1].mask @ layers[0].mask
    assert torch.equal(reach > 0, torch.ones(4, 4).tril(-1).bool())


def test_gaussian_made_is_autoregressive():
    torch.manual_seed(0)
    block = maf.MADE(input_size=5, hidden_size=12, n_hidden=1).double()
    jac = torch.autograd.functional.jacobian(block.net, torch.randn(5, dtype=torch.float64))
    mean_jac, alpha_jac = jac[:5], jac[5:]
    for part in (mean_jac, alpha_jac):
        assert torch.all(part.triu() == 0)  # d out_i / d x_j = 0 for j >= i
        assert torch.any(part.tril(-1) != 0)


def test_gaussian_made_round_trip_and_logdet():
    torch.manual_seed(0)
    block = maf.MADE(input_size=4, hidden_size=16, n_hidden=1)
    x = torch.randn(5, 4)
    z, log_det = block.inverse(x)
    with torch.no_grad():
        back, log_det_forward = block(z)
    assert_matches_float64(back, x.double(), "round trip")
    _, log_det64 = copy.deepcopy(block).double().inverse(x.double())
    assert_matches_float64(log_det_forward, log_det64, "forward log_det",  # both: log|det dz/dx|
                           reference=log_det)

    block.double()
    x = x.double()
    assert_matches_float64(block.inverse(x)[1],
                           autograd_logdet(lambda v: block.inverse(v[None])[0][0], x), "log_det")


def test_maf_permute_layer():
    layer = maf.PermuteLayer(4)
    x = torch.randn(3, 4)
    y, log_det = layer(x)
    assert torch.equal(y, x.flip(1)) and torch.equal(log_det, torch.zeros(3, 1))
    assert torch.equal(layer.inverse(y)[0], x)


def test_maf_log_prob():
    torch.manual_seed(0)
    single = maf.MAF(input_size=4, hidden_size=16, n_hidden=1, n_flows=1).double()
    x = torch.randn(6, 4, dtype=torch.float64)

    def gaussian_log_likelihood(block, v):
        """log p(v) = Σ_i log N(v_i; μ_i, exp(α_i)²) of one Gaussian MADE."""
        mean, alpha = block.net(v).chunk(2, dim=1)
        return torch.distributions.Normal(mean, alpha.exp()).log_prob(v).sum(1)

    assert_matches_float64(single.log_prob(x), gaussian_log_likelihood(single.nf[0], x),
                           "log_prob")

    model = maf.MAF(input_size=4, hidden_size=16, n_hidden=1, n_flows=2).double()
    first, second = model.nf[0], model.nf[2]
    z1, log_det1 = first.inverse(x)
    expected = gaussian_log_likelihood(second, z1.flip(1)) + log_det1
    assert_matches_float64(model.log_prob(x), expected, "log_prob")
    assert_matches_float64(model.log_probs(x), expected.mean(), "log_probs")

    def to_latent(v):
        for flow in model.nf:
            v, _ = flow.inverse(v)
        return v

    prior = torch.distributions.Normal(0, 1).log_prob(to_latent(x)).sum(1)
    assert_matches_float64(model.log_prob(x),
                           prior + autograd_logdet(lambda v: to_latent(v[None])[0], x),
                           "log_prob against autograd")


def test_maf_sample():
    torch.manual_seed(0)
    model = maf.MAF(input_size=4, hidden_size=16, n_hidden=1, n_flows=2)
    z = torch.randn(5, 4)
    x = model.sample(5, z=z)
    assert x.shape == (5, 4) and not x.requires_grad
    latent = x
    for flow in model.nf:
        latent, _ = flow.inverse(latent)
    assert_matches_float64(latent, z.double(), "round trip")
    torch.manual_seed(6)
    drawn = model.sample(5)
    torch.manual_seed(6)
    assert torch.equal(drawn, model.sample(5, z=torch.randn(5, 4)))


# --- the vector Glow module (glow): Glow, its RealNVP, MADE and MAF -----------------------

GLOW_COUPLING_KEYS = [
    "mask", "scale_net.0.weight", "scale_net.0.bias", "scale_net.2.weight",
    "scale_net.2.bias", "scale_net.4.weight", "scale_net.4.bias",
    "translate_net.0.weight", "translate_net.0.bias", "translate_net.2.weight",
    "translate_net.2.bias", "translate_net.4.weight", "translate_net.4.bias"]


def test_glow_state_dicts():
    assert list(glow.AffineCoupling(4, 8).state_dict()) == GLOW_COUPLING_KEYS
    assert list(glow.RealNVP(4, n_layers=2, hidden_dim=8).state_dict()) == [
        f"layers.{i}.{k}" for i in range(2) for k in GLOW_COUPLING_KEYS]
    block = ["actnorm.log_scale", "actnorm.bias", "actnorm.initialized",
             "conv1x1.L", "conv1x1.U", "conv1x1.log_s", "conv1x1.P"]
    block += [f"coupling.{k}" for k in GLOW_COUPLING_KEYS]
    assert list(glow.GlowBlock(4, 8).state_dict()) == block
    assert list(glow.Glow(4, n_blocks=2, hidden_dim=8).state_dict()) == [
        f"blocks.{i}.{k}" for i in range(2) for k in block]
    assert list(glow.MADE(4, [8, 8]).state_dict()) == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
        "layers.2.weight", "layers.2.bias"]
    assert list(glow.MAF(4, n_layers=2, hidden_dims=[8]).state_dict()) == [
        f"made_layers.{i}.layers.{j}.{p}" for i in range(2) for j in range(2)
        for p in ("weight", "bias")]


def test_glow_coupling_masks_and_round_trips():
    checkerboard = glow.AffineCoupling(5, 8)
    assert checkerboard.mask.dtype == torch.int64  # the original's integer mask, as a buffer
    assert torch.equal(checkerboard.mask, torch.tensor([0, 1, 0, 1, 0]))
    assert checkerboard.scale_net[0].in_features == 2 and checkerboard.scale_net[4].out_features == 3
    channel = glow.AffineCoupling(5, 8, mask_type="channel")
    assert torch.equal(channel.mask, torch.tensor([1., 1., 0., 0., 0.]))

    torch.manual_seed(0)
    x = torch.randn(6, 5)
    for layer in (checkerboard, channel):
        y, log_det = layer(x)
        back, log_det_back = layer(y, reverse=True)
        assert_matches_float64(back, x.double(), "round trip")
        _, log_det64 = copy.deepcopy(layer).double()(x.double())
        assert_matches_float64(log_det_back, -log_det64, "reverse log_det", reference=-log_det)
        kept = layer.mask == 1
        assert torch.equal(y[:, kept], x[:, kept])
        layer.double()
        assert_matches_float64(layer(x.double())[1],
                               autograd_logdet(lambda v: layer(v[None])[0][0], x.double()),
                               "log_det")

    def log_prob(z, log_det):
        return torch.distributions.Normal(0, 1).log_prob(z).sum(1) + log_det

    nvp = glow.RealNVP(4, n_layers=3, hidden_dim=8)
    x = torch.randn(6, 4)
    z, log_det = nvp(x, reverse=True)
    back, log_det_back = nvp(z)
    assert_matches_float64(back, x.double(), "round trip")
    z64, log_det64 = copy.deepcopy(nvp).double()(x.double(), reverse=True)
    assert_matches_float64(log_det_back, -log_det64, "forward log_det", reference=-log_det)
    assert_matches_float64(nvp.log_prob(x), log_prob(z64, log_det64), "log_prob",
                           reference=log_prob(z, log_det))


def test_glow_invertible_1x1_conv():
    torch.manual_seed(0)
    conv = glow.Invertible1x1Conv(4).double()
    z = torch.randn(3, 4, dtype=torch.float64)
    x, log_det = conv(z)
    back, log_det_back = conv(x, reverse=True)
    assert_matches_float64(back, z, "round trip")
    # float32, whatever the model's dtype: the original multiplies by torch.ones(batch_size)
    assert log_det.dtype == torch.float32
    log_det64 = autograd_logdet(lambda v: conv(v[None])[0][0], z)
    assert_matches_float64(log_det, log_det64, "log_det")
    assert_matches_float64(log_det_back, -log_det64, "reverse log_det")


def test_glow_actnorm_initialisation():
    norm = glow.ActNorm(3)
    z = torch.randn(8, 3) * torch.tensor([1., 2., 3.]) + torch.tensor([0.5, -1., 2.])
    x, log_det = norm(z)
    assert norm.initialized.item() == 1
    (mean, std), (mean64, std64) = ((v.mean(0), v.std(0)) for v in (z, z.double()))
    assert_matches_float64(norm.bias, -mean64, "bias", reference=-mean)
    assert_matches_float64(norm.log_scale, -torch.log(std64 + 1e-6), "log_scale",
                           reference=-torch.log(std + 1e-6))
    assert_matches_float64(log_det, -torch.log(std64 + 1e-6).sum().expand(8), "log_det",
                           reference=-torch.log(std + 1e-6).sum().expand(8))
    # the original's initialisation: z / std − mean, not (z − mean) / std
    assert_matches_float64(x.mean(0), mean64 / (std64 + 1e-6) - mean64, "mean of x",
                           reference=mean / (std + 1e-6) - mean)
    # once initialized, a new batch does not re-initialize it
    norm(torch.randn(8, 3))
    assert_matches_float64(norm.bias, -mean64, "bias after another batch", reference=-mean)


def test_glow_glow_round_trip_and_logdet():
    torch.manual_seed(0)
    model = glow.Glow(input_dim=4, n_blocks=2, hidden_dim=8)
    x = torch.randn(6, 4)
    z, log_det = model(x, reverse=True)  # data -> latent, initializes every ActNorm on x
    back, log_det_back = model(z)
    assert_matches_float64(back, x.double(), "round trip")
    # (the float64 copy's log_det holds its 1x1 convolutions' float32 log-dets, see below)
    z64, log_det64 = copy.deepcopy(model).double()(x.double(), reverse=True)
    assert_matches_float64(log_det_back, -log_det64, "forward log_det", reference=-log_det)

    def log_prob(z, log_det):
        return -0.5 * (z ** 2).sum(1) - 2 * math.log(2 * math.pi) + log_det

    assert_matches_float64(model.log_prob(x), log_prob(z64, log_det64), "log_prob",
                           reference=log_prob(z, log_det))

    model.double()
    z = z.double()
    # float32's tolerance: the 1x1 convolutions' log-dets are float32 in a float64 model too
    assert_matches_float64(model(z)[1], autograd_logdet(lambda v: model(v[None])[0][0], z),
                           "log_det", dtype=torch.float32)


def test_glow_made_is_not_autoregressive():
    """The defect named in glow.MADE's docstring: its output mask uses <=, so output i
    also sees input i."""
    torch.manual_seed(0)
    model = glow.MADE(4, [32, 32]).double()
    for output in model(torch.randn(1, 4, dtype=torch.float64)):
        assert output.shape == (1, 4)
    jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0][0],
                                             torch.randn(4, dtype=torch.float64))
    assert torch.all(jac.triu(1) == 0)  # nothing later than i
    assert torch.any(jac.diag() != 0)  # but i itself
    assert all(mask.dtype == torch.bool for mask in model.masks)
    assert "masks" not in dict(model.named_buffers())


def test_glow_maf():
    torch.manual_seed(0)
    model = glow.MAF(4, n_layers=2, hidden_dims=[8, 8])
    x = torch.randn(5, 4)
    z, log_det = model(x, reverse=True)

    def by_hand(model, v):
        """The latent, its log-det and log-likelihood, one MADE after another."""
        log_det = 0
        for made_layer in model.made_layers:
            log_s, t = made_layer(v)
            v = (v - t) * torch.exp(-log_s)
            log_det = log_det - log_s.sum(1)
        return v, log_det, -0.5 * (v ** 2).sum(1) - 2 * math.log(2 * math.pi) + log_det

    expected = by_hand(model, x)
    truth = by_hand(copy.deepcopy(model).double(), x.double())
    for name, got, t, e in zip(("z", "log_det", "log_prob"), (z, log_det, model.log_prob(x)),
                               truth, expected):
        assert_matches_float64(got, t, name, reference=e)

    # the original's defect: sampling (forward) runs made_layers[0] only
    with torch.no_grad():
        sampled, _ = model(z)
        for p in model.made_layers[1].parameters():
            p.add_(1.0)
        assert torch.equal(model(z)[0], sampled)
        assert not torch.allclose(model(x, reverse=True)[0], z)
