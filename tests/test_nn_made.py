"""fastflow.nn's MADE models against the reference (the MADE and the Gaussian MADE): the
same masks under the same numpy seed, strict state_dict loading both ways, outputs and
gradients on every CPU-side backend, the autoregressive property of the fused path (by
Jacobian), masks that change after construction, refused masks, and
torch.compile(fullgraph=True)."""

import copy

import numpy as np
import pytest
import torch

import fastflow
from fastflow import reference

from backends import backend_params
from utils import assert_matches_float64

BACKENDS = backend_params("cpu")


def made_pair(input_dim, hidden_dims, seed=0):
    """A reference MADE and a fastflow one built under the same torch and numpy seeds."""
    models = []
    for cls in (reference.made.MADE, fastflow.nn.MADE):
        torch.manual_seed(seed)
        np.random.seed(seed)
        models.append(cls(input_dim, hidden_dims, input_dim))
    return models


@pytest.mark.parametrize("hidden_dims", [[64], [64, 64], [33, 17, 40]], ids=str)
def test_same_construction_as_reference(hidden_dims):
    ref, fast = made_pair(10, hidden_dims)
    assert list(fast.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(fast.state_dict()[key], value), key
    assert all(np.array_equal(fast.m[layer], ref.m[layer]) for layer in ref.m)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("shape", [(784, [512, 512], 16), (10, [64, 64], 7), (5, [8], 1),
                                   (6, [20], 0)], ids=str)
def test_outputs_and_gradients_match_reference(device, backend, shape):
    input_dim, hidden_dims, batch = shape
    ref, fast = made_pair(input_dim, hidden_dims, seed=1)
    torch.manual_seed(2)
    np.random.seed(2)
    fast.load_state_dict(reference.made.MADE(input_dim, hidden_dims, input_dim).state_dict())
    ref.load_state_dict(fast.state_dict())  # both now hold masks built under another seed
    ref64 = copy.deepcopy(ref).double()
    x = (torch.rand(batch, input_dim) < 0.5).float()
    logits = {}
    for model in (ref, fast, ref64):
        model.zero_grad()
        v = x.to(next(model.parameters()).dtype)
        with fastflow.backend(backend):
            logits[model] = model(v)
            loss = -reference.made.log_likelihood(model, v).sum() + logits[model].square().mean()
        loss.backward()
    if backend != "torch":
        assert all(layer._mask_degrees is not None for layer in fast.layers), "degree form expected"
    assert logits[fast].shape == (batch, input_dim)
    if batch == 0:
        return
    assert_matches_float64(logits[fast], logits[ref64].detach(), "logits",
                           reference=logits[ref].detach())
    for (name, p_ref), p_fast, p64 in zip(ref.named_parameters(), fast.parameters(),
                                          ref64.parameters()):
        assert_matches_float64(p_fast.grad, p64.grad, f"gradient of {name}", reference=p_ref.grad)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_fused_path_is_autoregressive(device, backend):
    """d logit_i / d x_j = 0 for every j >= i, on the degree-form kernels."""
    _, fast = made_pair(12, [40, 40])
    x = torch.rand(1, 12)
    with fastflow.backend(backend):
        jacobian = torch.autograd.functional.jacobian(lambda v: fast(v), x)[0, :, 0, :]
    upper = torch.triu(torch.ones(12, 12, dtype=torch.bool))
    assert bool((jacobian[upper] == 0).all())
    assert bool((jacobian[~upper] != 0).any())


def test_gaussian_made_and_maf_match_reference():
    torch.manual_seed(0)
    ref = reference.maf.MAF(8, 48, 2, 3)
    fast = fastflow.nn.maf.MAF(8, 48, 2, 3)
    fast.load_state_dict(ref.state_dict(), strict=True)
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert all(isinstance(layer, fastflow.nn.maf.MaskedLinear)
               for block in fast.nf[::2] for layer in block.net[::2])
    ref64 = copy.deepcopy(ref).double()
    x = torch.randn(9, 8)
    for model, v in ((ref, x), (fast, x), (ref64, x.double())):
        model.zero_grad()
        model.log_probs(v).backward()
    assert_matches_float64(fast.log_prob(x), ref64.log_prob(x.double()).detach(), "log_prob",
                           reference=ref.log_prob(x).detach())
    for (name, p_ref), p_fast, p64 in zip(ref.named_parameters(), fast.parameters(),
                                          ref64.parameters()):
        assert_matches_float64(p_fast.grad, p64.grad, f"gradient of {name}", reference=p_ref.grad)
    z = torch.randn(5, 8)
    assert_matches_float64(fast.sample(5, z)[0], ref64.sample(5, z.double()), "sample",
                           reference=ref.sample(5, z))  # fast.sample: (x, log_prob)
    made_ref, made_fast, made64 = ref.nf[0], fast.nf[0], ref64.nf[0]
    for name, got, truth, expected in zip(("z", "log_det"), made_fast.inverse(x),
                                          made64.inverse(x.double()), made_ref.inverse(x)):
        assert_matches_float64(got, truth.detach(), f"MADE.inverse: {name}",
                               reference=expected.detach())


def test_maf_permute_layer_is_the_references():
    """The MAF's PermuteLayer drop-in (index_select through a tensor sharing `perm`) returns
    the reference's columns and gradient bit for bit, and follows `perm` replaced, edited in
    place, negative (the reference's indexing wraps it) or out of range (its IndexError)."""
    fast_maf = fastflow.nn.maf.MAF(6, 16, 1, 2)
    assert [type(m) for m in fast_maf.nf[1::2]] == [fastflow.nn.maf.PermuteLayer] * 2
    ref, fast = reference.maf.PermuteLayer(6), fastflow.nn.maf.PermuteLayer(6)
    x = torch.randn(5, 13)[:, ::2].requires_grad_()  # 7 strided columns
    weight = torch.randn(5, 6)
    fast(x)
    assert fast._perm_index is not None  # the index_select path runs
    edits = (lambda m: None, lambda m: np.random.default_rng(0).shuffle(m.perm),
             lambda m: setattr(m, "perm", np.array([5, 0, 4, 1, 3, 2])),
             lambda m: m.perm.__setitem__(0, -1),
             lambda m: setattr(m, "perm", np.array([1, 2], dtype=np.int32)))
    for edit in edits:
        for module in (ref, fast):
            edit(module)
        assert np.array_equal(fast.perm, ref.perm)
        for direction in ("forward", "inverse"):
            outs = [getattr(m, direction)(x) for m in (ref, fast)]
            grads = [torch.autograd.grad((y * weight[:, :y.shape[1]]).sum(), x)[0]
                     for y, _ in outs]
            assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(grads[0], grads[1])
            assert torch.equal(outs[1][1], torch.zeros(5, 1))
    fast.perm = np.array([1, 2])
    fast(x)
    copied = copy.deepcopy(fast)  # its own perm array: edits of it are seen through its index
    copied.perm[0] = 0
    assert torch.equal(copied(x)[0], x[:, [0, 2]]) and torch.equal(fast(x)[0], x[:, [1, 2]])
    assert copied._perm_index is not None
    fast.perm = np.array([0, 7])
    with pytest.raises(IndexError):
        fast(x)


def test_gaussian_made_inverse_is_the_references_bit_for_bit():
    """MADE.inverse's own arithmetic (μ, α from the net; (x − μ)·exp(−α) and −Σα) gives the
    reference's numbers exactly, gradients included, on the same net output (backend
    'torch': the reference's layer math)."""
    torch.manual_seed(0)
    ref = reference.maf.MADE(7, 20, 2)
    fast = fastflow.nn.maf.MADE(7, 20, 2)
    fast.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(11, 7, requires_grad=True)
    grads = []
    for model in (ref, fast):
        with fastflow.backend("torch"):
            z, log_det = model.inverse(x)
        weights = (torch.randn(z.shape, generator=torch.Generator().manual_seed(1)),
                   torch.randn(log_det.shape, generator=torch.Generator().manual_seed(2)))
        grads.append(((z, log_det), torch.autograd.grad(
            (z * weights[0]).sum() + (log_det * weights[1]).sum(), [x, *model.parameters()])))
    (ref_out, ref_grads), (fast_out, fast_grads) = grads
    for got, expected in zip((*fast_out, *fast_grads), (*ref_out, *ref_grads)):
        assert torch.equal(got, expected)


def test_mask_changes_are_followed():
    """set_mask, load_state_dict and in-place edits of the buffer all reach the kernels;
    a mask without degrees runs the matrix form."""
    layer = fastflow.nn.MaskedLinear(6, 5)
    x = torch.randn(3, 6)

    def assert_masked_linear(got, mask, what):
        """got against the reference formula with this mask and layer's weight and bias."""
        weight, bias = layer.weight.detach(), layer.bias.detach()
        truth = x.double() @ (weight.double() * mask.double()).t() + bias.double()
        assert_matches_float64(got.detach(), truth, what, reference=x @ (weight * mask).t() + bias)

    mask = np.tril(np.ones((5, 6)))
    layer.set_mask(mask)
    assert_masked_linear(layer(x), torch.from_numpy(mask).float(), "set_mask")
    layer.mask[0, 0] = 0.0  # in place: still a staircase
    assert_masked_linear(layer(x), layer.mask, "mask edited in place")
    diagonal = np.eye(5, 6)  # no degrees: the matrix form
    layer.set_mask(diagonal)
    assert layer._mask_degrees is None
    assert_masked_linear(layer(x), layer.mask, "mask without degrees")
    other = fastflow.nn.MaskedLinear(6, 5)
    other.load_state_dict({**layer.state_dict(), "mask": torch.from_numpy(mask).float()})
    assert other._mask_degrees is not None
    assert_masked_linear(other(x), other.mask, "load_state_dict")


def test_bad_masks_are_refused():
    layer = fastflow.nn.MaskedLinear(4, 3)
    with pytest.raises(ValueError, match="shape"):
        layer.set_mask(np.ones((4, 3)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        layer.set_mask(np.full((3, 4), 0.5))
    with pytest.raises(TypeError, match="numpy array"):
        layer.set_mask([[1, 0]])
    layer.mask.fill_(2.0)
    with pytest.raises(ValueError, match="only 0 and 1"):
        layer(torch.randn(2, 4))
    with pytest.raises(ValueError, match="only 0 and 1"):
        fastflow.nn.maf.MaskedLinear(4, 3, torch.full((3, 4), 0.5))
    with pytest.raises(ValueError, match="shape"):
        fastflow.nn.maf.MaskedLinear(4, 3, torch.ones(4, 3))


@pytest.mark.parametrize("device,backend", [("cpu", "auto"), *BACKENDS])
def test_compile_fullgraph(device, backend):
    """torch.compile(fullgraph=True) of the drop-in: under 'auto' (the reference: nothing is
    measured while tracing) and on each backend."""
    ref, fast = made_pair(20, [64, 64])
    x = (torch.rand(6, 20) < 0.5).float()
    with fastflow.backend(backend):
        compiled = torch.compile(fast, fullgraph=True)
        assert_matches_float64(compiled(x), copy.deepcopy(ref).double()(x.double()), "logits",
                               reference=ref(x))
        compiled(x).sum().backward()
    assert fast.layers[0].weight.grad is not None
    torch._dynamo.reset()


def test_auto_reference_path_is_the_reference(monkeypatch):
    """Where 'auto' keeps a layer on the reference (always, with measuring off), the drop-in
    computes exactly what the reference model computes: the same outputs and gradients,
    bit for bit, with and without gradients."""
    monkeypatch.setenv(fastflow.autotune.ENV_VAR, "0")
    ref, fast = made_pair(30, [40, 40])
    x = (torch.rand(7, 30) < 0.5).float()
    with fastflow.backend("auto"):
        for model in (ref, fast):
            model(x).square().sum().backward()
        assert torch.equal(fast(x), ref(x))
        for p_ref, p_fast in zip(ref.parameters(), fast.parameters()):
            assert torch.equal(p_fast.grad, p_ref.grad)
        with torch.no_grad():
            assert torch.equal(fast(x), ref(x))
    assert not fast.net._path_fused  # the net's reference math, inline


def test_auto_reference_path_follows_weight_and_mask_changes(monkeypatch):
    """The reference path reads the weight and the mask on every call: every change (in
    place, a new tensor, writes through .data, which bump no version counter, set_mask) is
    seen."""
    monkeypatch.setenv(fastflow.autotune.ENV_VAR, "0")
    layer = fastflow.nn.MaskedLinear(6, 5)
    layer.set_mask(np.tril(np.ones((5, 6))))
    x = torch.randn(3, 6)

    def check(what):
        with torch.no_grad():
            got = layer(x)
        expected = torch.nn.functional.linear(x, layer.mask * layer.weight, layer.bias)
        assert torch.equal(got, expected.detach()), what

    with fastflow.backend("auto"):
        check("first call")
        with torch.no_grad():
            layer.weight.mul_(2.0)
        check("weight edited in place")
        layer.weight = torch.nn.Parameter(torch.randn(5, 6))
        check("a new weight parameter")
        layer.weight.data = torch.randn(5, 6)
        check("new data in the same parameter")
        layer.weight.data.mul_(3.0)
        check("weight edited through .data")
        layer.set_mask(np.triu(np.ones((5, 6))))
        check("set_mask")
        layer.mask[2, 3] = 1.0
        check("mask edited in place")


def test_auto_measures_each_shape_once():
    """With measuring on, the first call of the net records one decision (the whole net,
    made_mlp against the reference's layers), and a layer called alone one of its own; the
    outputs match the reference whichever path is taken."""
    fastflow.autotune.clear()
    ref, fast = made_pair(30, [300, 300])
    x = (torch.rand(9, 30) < 0.5).float()
    with fastflow.backend("auto"):
        got = fast(x)
        keys = set(fastflow.autotune.decisions())
        fast(x)
        assert set(fastflow.autotune.decisions()) == keys
        fast.layers[0](x)
        layer_keys = set(fastflow.autotune.decisions()) - keys
    if fastflow.info().extension.loaded:
        assert {key[0] for key in keys} == {"made_mlp"} and len(keys) == 1
        assert {key[0] for key in layer_keys} == {"degree_masked_linear"} and len(layer_keys) == 1
    assert_matches_float64(got, copy.deepcopy(ref).double()(x.double()), "logits",
                           reference=ref(x))
    fastflow.autotune.clear()
