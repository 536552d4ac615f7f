"""fastflow.nn's MADE models against the reference (seeds 000 and 003): the same masks under
the same numpy seed, strict state_dict loading both ways, outputs and gradients on every
CPU-side backend, the autoregressive property of the fused path (by Jacobian), masks that
change after construction, refused masks, and torch.compile(fullgraph=True)."""

import numpy as np
import pytest
import torch

import fastflow
from fastflow import reference

from backends import backend_params

BACKENDS = backend_params("cpu")


def assert_relative(got, expected, tol, what):
    scale = max(expected.abs().max().item(), 1e-12)
    err = (got.double() - expected.double()).abs().max().item() / scale
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


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
    x = (torch.rand(batch, input_dim) < 0.5).float()
    losses = []
    for model in (ref, fast):
        model.zero_grad()
        with fastflow.backend(backend):
            logits = model(x)
            loss = -reference.made.log_likelihood(model, x).sum() + logits.square().mean()
        loss.backward()
        losses.append((logits, loss))
    if backend != "torch":
        assert all(layer._mask_degrees is not None for layer in fast.layers), "degree form expected"
    assert losses[1][0].shape == (batch, input_dim)
    if batch == 0:
        return
    assert_relative(losses[1][0], losses[0][0].detach(), 1e-5, "logits")
    for (name, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters()):
        assert_relative(p_fast.grad, p_ref.grad, 1e-4, name)


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
    x = torch.randn(9, 8)
    for model in (ref, fast):
        model.zero_grad()
        model.log_probs(x).backward()
    assert_relative(fast.log_prob(x), ref.log_prob(x).detach(), 1e-5, "log_prob")
    for (name, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters()):
        assert_relative(p_fast.grad, p_ref.grad, 1e-4, name)
    z = torch.randn(5, 8)
    assert_relative(fast.sample(5, z)[0], ref.sample(5, z), 1e-5, "sample")  # (x, log_prob)
    made_ref, made_fast = ref.nf[0], fast.nf[0]
    for got, expected in zip(made_fast.inverse(x), made_ref.inverse(x)):
        assert_relative(got, expected.detach(), 1e-5, "MADE.inverse")


def test_mask_changes_are_followed():
    """set_mask, load_state_dict and in-place edits of the buffer all reach the kernels;
    a mask without degrees runs the matrix form."""
    layer = fastflow.nn.MaskedLinear(6, 5)
    x = torch.randn(3, 6)
    mask = np.tril(np.ones((5, 6)))
    layer.set_mask(mask)
    expected = x @ (layer.weight * torch.from_numpy(mask).float()).t() + layer.bias
    torch.testing.assert_close(layer(x), expected)
    layer.mask[0, 0] = 0.0  # in place: still a staircase
    torch.testing.assert_close(layer(x), x @ (layer.weight * layer.mask).t() + layer.bias)
    diagonal = np.eye(5, 6)  # no degrees: the matrix form
    layer.set_mask(diagonal)
    assert layer._mask_degrees is None
    torch.testing.assert_close(layer(x), x @ (layer.weight * layer.mask).t() + layer.bias)
    other = fastflow.nn.MaskedLinear(6, 5)
    other.load_state_dict({**layer.state_dict(), "mask": torch.from_numpy(mask).float()})
    assert other._mask_degrees is not None
    torch.testing.assert_close(other(x), x @ (layer.weight * other.mask).t() + layer.bias)


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


def test_compile_fullgraph():
    ref, fast = made_pair(20, [64, 64])
    compiled = torch.compile(fast, fullgraph=True)
    x = (torch.rand(6, 20) < 0.5).float()
    torch.testing.assert_close(compiled(x), ref(x), rtol=1e-5, atol=1e-5)
    compiled(x).sum().backward()
    assert fast.layers[0].weight.grad is not None
