"""fastflow.nn's RealNVP models against the reference models (the MLP, multi-scale and 2-D
RealNVPs): a reference state_dict loads strictly, and outputs, log-dets and parameter
gradients agree with a float64 copy of the reference model on the same inputs and noise
(tests/utils.py's rule, the float32 reference model setting the allowance) in train and
eval mode, on every backend; the NaN policy; torch.compile(fullgraph=True)."""

import contextlib
import copy
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from torch._prims_common import suggest_memory_format

import fastflow
from fastflow import reference
from fastflow.accuracy import least_accurate, perturbed

from backends import backend_params
from utils import assert_matches_float64

BACKENDS = backend_params("cpu")  # the models' GPU runs are in the GPU check script


def pair(ref_cls, fast_cls, *args, **kwargs):
    torch.manual_seed(0)
    ref = ref_cls(*args, **kwargs)
    fast = fast_cls(*args, **kwargs)
    fast.load_state_dict(ref.state_dict(), strict=True)
    assert list(fast.state_dict()) == list(ref.state_dict())
    return ref, fast


@contextlib.contextmanager
def float32_noise():
    """torch.rand_like draws what it draws for a float32 tensor, cast to the tensor's dtype:
    a float64 twin dequantizes with the float32 models' noise."""
    rand_like = torch.rand_like
    with mock.patch.object(torch, "rand_like",
                           lambda t: rand_like(t, dtype=torch.float32).to(t.dtype)):
        yield


def perturbed_copy(model, generator):
    """A copy of model with its parameters moved by about one rounding
    (fastflow.accuracy.perturbed)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(perturbed((p,), generator)[0])
    return model


def compare(ref, fast, run, backend, mode):
    """run(model, dtype) -> tuple of outputs whose sum of means is the loss; compares the
    outputs and parameter gradients of `fast` with those of a float64 copy of `ref` on the
    same inputs. Returns the float64 copy.

    The allowance is set by `ref`'s own float32 error: its largest over its run and three
    runs of copies with parameters moved by about one rounding, as the benchmark's check
    judges models (fastflow.bench.runner). A train-mode BatchNorm's gradients sum terms that
    cancel, so one run's error there is a lottery ticket: the multi-scale RealNVP's
    first-layer BatchNorm bias gradient came out 2.1e-6 from float64 in the reference's run
    and 1.2-1.9e-5 in the drop-in's, whose convolutions sum in other orders or get inputs
    rounded differently (the fused exp and tanh)."""
    ref64 = copy.deepcopy(ref).double()
    generator = torch.Generator().manual_seed(0)
    references = [ref] + [perturbed_copy(ref, generator) for _ in range(3)]
    for model in (*references, fast, ref64):
        getattr(model, mode)()
        model.zero_grad()
    expected = [run(model, torch.float32) for model in references]
    with float32_noise():
        truth = run(ref64, torch.float64)
    with fastflow.backend(backend):
        got = run(fast, torch.float32)
    for i, (g, t) in enumerate(zip(got, truth)):
        t = t.detach()
        assert_matches_float64(g, t, f"output {i}",
                               reference=least_accurate([e[i].detach() for e in expected], t))
    # The loss weighs every output element by a fixed random factor (gradcheck's random
    # cotangents). A plain sum of means cancels: the multi-scale RealNVP's z.mean() and its
    # NLL's prior term leave a first-layer BatchNorm bias gradient 10x smaller than the
    # terms it sums.
    generator = torch.Generator().manual_seed(0)
    cotangents = [torch.randn(t.shape, generator=generator, dtype=torch.float64) / max(t.numel(), 1)
                  for t in truth]
    for outputs in (*expected, truth, got):
        sum((o.double() * c).sum() for o, c in zip(outputs, cotangents)).backward()
    # Some gradients are zero in exact arithmetic (a conv bias in front of a train-mode
    # BatchNorm): float64 holds rounding noise there, judged against the model's largest.
    grads = {name: p.grad for name, p in ref64.named_parameters() if p.grad is not None}
    largest = max(g.abs().max().item() for g in grads.values())
    reference_grads = [dict(model.named_parameters()) for model in references]
    fast_params = dict(fast.named_parameters())
    for name, grad in grads.items():
        reference = least_accurate([params[name].grad for params in reference_grads], grad, largest)
        assert_matches_float64(fast_params[name].grad, grad, f"gradient of {name}",
                               reference=reference, scale=largest)
    return ref64


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_mlp_realnvp(device, backend, mode):
    ref, fast = pair(reference.mlp_realnvp.RealNVP, fastflow.nn.mlp_realnvp.RealNVP, 6, 16, 3)
    x = torch.randn(9, 6)

    def run(model, dtype):
        torch.manual_seed(1)  # log_prob dequantizes with torch.rand_like when dim > 2
        log_prob = model.log_prob(x.to(dtype))
        y, log_det = model.layers[0](x.to(dtype))
        return log_prob, y, log_det, model.layers[1](x.to(dtype), reverse=True)

    ref64 = compare(ref, fast, run, backend, mode)
    torch.manual_seed(2)
    expected = ref.sample(5)
    torch.manual_seed(2)
    truth = torch.randn(5, 6).double()  # what sample draws, then the layers in reverse
    with torch.no_grad():
        for layer in reversed(ref64.layers):
            truth = layer(truth, reverse=True)
    torch.manual_seed(2)
    with fastflow.backend(backend):
        assert_matches_float64(fast.sample(5), truth, "samples", reference=expected)


def coupling_pair(dim, hidden, mask):
    torch.manual_seed(0)
    ref = reference.mlp_realnvp.AffineCoupling(dim, hidden, mask)
    fast = fastflow.nn.mlp_realnvp.AffineCoupling(dim, hidden, mask)
    fast.load_state_dict(ref.state_dict(), strict=True)
    return ref, fast


def coupling_results(layer, x, reverse):
    """The layer's outputs, then the gradients of x and of its parameters (weights drawn by
    a fixed generator: gradcheck's random cotangents)."""
    layer.zero_grad()
    x = x.detach().requires_grad_()
    out = layer(x, reverse=reverse)
    outs = (out,) if reverse else out
    generator = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o.dtype)).sum()
               for o in outs)
    loss.backward()
    return [o.detach() for o in outs], [x.grad] + [p.grad for p in layer.parameters()]


MASKS = {
    "alternating": lambda dim: torch.arange(dim).float() % 2,
    "random": lambda dim: (torch.rand(dim, generator=torch.Generator().manual_seed(3)) < 0.3).float(),
    "one kept": lambda dim: (torch.arange(dim) == dim - 1).float(),
}


@pytest.mark.parametrize("backend", ["cpu", "auto"])
@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("batch", [0, 1, 9])
@pytest.mark.parametrize("reverse", [False, True])
def test_mlp_coupling_skips_the_masks_zeros(backend, mask_name, batch, reverse):
    """The MLP RealNVP's coupling with its nets on the mask's halves only (kept inputs,
    transformed outputs): outputs and the gradients of x and of every parameter (zero in the
    first layers' columns of the masked-out inputs and the last layers' rows of the kept
    outputs) as the float64 reference's, on odd sizes and non-contiguous x. Under 'cpu' the
    skipping path must run; under 'auto' it runs where measured faster."""
    dim, hidden = 11, 7
    ref, fast = coupling_pair(dim, hidden, MASKS[mask_name](dim))
    ref64 = copy.deepcopy(ref).double()
    x = torch.randn(batch, 2 * dim)[:, ::2]  # column stride 2
    expected, expected_grads = coupling_results(ref, x, reverse)
    truth, truth_grads = coupling_results(ref64, x.double(), reverse)
    skipping = fastflow.nn.mlp_realnvp.skipping_coupling
    with fastflow.backend(backend), mock.patch.object(fastflow.nn.mlp_realnvp, "skipping_coupling",
                                                      wraps=skipping) as spy:
        got, got_grads = coupling_results(fast, x, reverse)
    if backend == "cpu":
        assert spy.called, "the skipping path did not run"
    for i, (g, t, e) in enumerate(zip(got, truth, expected)):
        assert_matches_float64(g, t, f"output {i}", reference=e)
    names = ["x"] + [name for name, _ in fast.named_parameters()]
    largest = max(g.abs().max().item() for g in truth_grads if g.numel())
    for name, g, t, e in zip(names, got_grads, truth_grads, expected_grads):
        assert_matches_float64(g, t, f"gradient of {name}", reference=e, scale=largest)


@pytest.mark.parametrize("case", ["all kept", "not 0/1", "hook"])
def test_mlp_coupling_falls_back_to_the_modules(case):
    """Where skipping does not apply (nothing transformed, a mask that is not 0/1, a hook on
    a net's layer) the coupling runs its nets as modules, with the reference's numbers."""
    dim = 6
    mask = {"all kept": torch.ones(dim), "not 0/1": torch.full((dim,), 0.5),
            "hook": torch.arange(dim).float() % 2}[case]
    ref, fast = coupling_pair(dim, 5, mask)
    calls = []
    if case == "hook":
        fast.s_net[2].register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(4, dim)
    skipping = fastflow.nn.mlp_realnvp.skipping_coupling
    with fastflow.backend("cpu"), mock.patch.object(fastflow.nn.mlp_realnvp, "skipping_coupling",
                                                    wraps=skipping) as spy:
        y, log_det = fast(x)
    assert not spy.called
    assert calls == ([1] if case == "hook" else [])
    expected_y, expected_log_det = ref(x)
    torch.testing.assert_close(y, expected_y)
    torch.testing.assert_close(log_det, expected_log_det)


def test_mlp_coupling_follows_mask_edits():
    """An in-place edit of the mask buffer is seen (its version counter): the next call
    skips by the new halves."""
    dim = 8
    ref, fast = coupling_pair(dim, 5, torch.arange(dim).float() % 2)
    x = torch.randn(3, dim)
    with fastflow.backend("cpu"):
        fast(x)
        for layer in (ref, fast):
            layer.mask.copy_((torch.arange(dim) < 3).float())
        y, log_det = fast(x)
    expected_y, expected_log_det = ref(x)
    torch.testing.assert_close(y, expected_y)
    torch.testing.assert_close(log_det, expected_log_det)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_realnvp2d(device, backend, mode):
    ref, fast = pair(reference.realnvp2d.RealNVP, fastflow.nn.realnvp2d.RealNVP, 2, 32, 6)
    x = torch.randn(64, 2)
    compare(ref, fast, lambda m, dtype: (*m(x.to(dtype)), *m.inverse(x.to(dtype))), backend,
            mode)


def multiscale_args(num_scales=2):
    return SimpleNamespace(num_scales=num_scales, mid_channels=8, num_blocks=1)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_multiscale_realnvp(device, backend, mode):
    ref, fast = pair(reference.multiscale.RealNVP, fastflow.nn.multiscale.RealNVP, 8, 1,
                     multiscale_args())
    x = torch.rand(4, 1, 8, 8)
    noise = torch.rand_like(x)
    loss = reference.multiscale.RealNVPLoss()

    def run(model, dtype):
        y, sldj = model._pre_process(x.to(dtype), noise.to(dtype))
        z, sldj = model.flows(y, sldj, reverse=False)
        x_back, _ = model.flows(z.detach(), None, reverse=True)
        return z, sldj, loss(z, sldj), x_back

    ref64 = compare(ref, fast, run, backend, mode)
    norms = [m.flows.in_couplings[1].st_net.in_norm for m in (fast, ref64, ref)]
    assert_matches_float64(norms[0].running_mean, norms[1].running_mean,
                           "BatchNorm running mean", reference=norms[2].running_mean)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_multiscale_forward_and_sample(device, backend):
    ref, fast = pair(reference.multiscale.RealNVP, fastflow.nn.multiscale.RealNVP, 8, 1,
                     multiscale_args())
    ref.eval(), fast.eval()
    ref64 = copy.deepcopy(ref).double()
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(5)
    z_ref, sldj_ref = ref(x)  # draws the dequantization noise with torch.rand_like
    torch.manual_seed(5)
    with float32_noise():
        z64, sldj64 = ref64(x.double())
    torch.manual_seed(5)
    with fastflow.backend(backend):
        z, sldj = fast(x)
        with pytest.raises(ValueError, match=r"Expected x in \[0, 1\]"):
            fast(x - 1)
        z0 = torch.randn(2, 1, 8, 8)
        assert_matches_float64(fast.sample(2, z=z0), ref64.sample(2, z=z0.double()), "samples",
                               reference=ref.sample(2, z=z0))
    assert_matches_float64(z, z64.detach(), "z", reference=z_ref.detach())
    assert_matches_float64(sldj, sldj64.detach(), "sldj", reference=sldj_ref.detach())


def _layouts_seen(model, run, kinds=(torch.nn.Conv2d, torch.nn.BatchNorm2d)):
    """The memory format (channels-last or not, by PyTorch's rule) of the input of every
    convolution and BatchNorm (or module of `kinds`) of model, in call order, during run()."""
    seen = []
    hooks = [m.register_forward_pre_hook(
        lambda _, args: seen.append(suggest_memory_format(args[0]) == torch.channels_last))
        for m in model.modules() if isinstance(m, kinds)]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("num_scales", [1, 2, 3])
def test_multiscale_keeps_the_references_layouts(device, backend, num_scales):
    """With autograd, the drop-in's convolutions and BatchNorms see their inputs in the
    reference's memory formats (channels-last from the first squeeze on), going forward and
    in reverse, so PyTorch runs them on the same paths."""
    ref, fast = pair(reference.multiscale.RealNVP, fastflow.nn.multiscale.RealNVP, 16, 1,
                     multiscale_args(num_scales))
    x, z = torch.rand(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    layouts = {}
    for name, model in (("reference", ref), ("fastflow", fast)):
        with fastflow.backend(backend):
            layouts[name] = (_layouts_seen(model, lambda: model(x)),
                             _layouts_seen(model, lambda: model(z, reverse=True)))
    assert layouts["fastflow"] == layouts["reference"]
    assert any(layouts["reference"][0]) == (num_scales > 1)  # channels-last after a squeeze


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_multiscale_runs_channels_last_without_autograd(device, backend):
    """Without autograd the drop-in's s/t networks run channels-last from their first
    convolution on, in the first scale too (the reference runs NCHW there), going forward
    and in reverse; its results still match the float64 reference. With autograd they keep
    the reference's layouts (the test above)."""
    ref, fast = pair(reference.multiscale.RealNVP, fastflow.nn.multiscale.RealNVP, 16, 1,
                     multiscale_args())
    ref64 = copy.deepcopy(ref).double()
    x, noise, z = torch.rand(3, 1, 16, 16), torch.rand(3, 1, 16, 16), torch.randn(3, 1, 16, 16)
    results, layouts = {}, {}
    for name, model, dtype in (("reference", ref, torch.float32), ("float64", ref64, torch.float64),
                               ("fastflow", fast, torch.float32)):
        inverse = []
        with torch.no_grad(), fastflow.backend(backend):
            forward = model.flows(*model._pre_process(x.to(dtype), noise.to(dtype)), reverse=False)
            layouts[name] = _layouts_seen(
                model, lambda: inverse.append(model(z.to(dtype), reverse=True)[0]),
                kinds=torch.nn.Conv2d)
        results[name] = (*forward, *inverse)
    assert not all(layouts["reference"])  # its first scale: NCHW
    assert all(layouts["fastflow"])  # every convolution's input, the first scale's too
    for what, got, truth, own in zip(("z", "sldj", "x from z"), results["fastflow"],
                                     results["float64"], results["reference"]):
        assert_matches_float64(got, truth, what, reference=own)


def test_multiscale_channel_wise_weights_are_channels_last():
    """The channel-wise couplings' convolutions, whose inputs are channels-last going forward
    and in reverse, keep their weights channels-last (weight norm included, so that no
    convolution copies its weight); the others keep the reference's. Either way the weights
    and the state_dict are the reference's, and assigning a weight goes through the same
    weight norm."""
    ref, fast = pair(reference.multiscale.RealNVP, fastflow.nn.multiscale.RealNVP, 16, 1,
                     multiscale_args(3))
    convs = [(name, conv) for name, conv in fast.named_modules() if isinstance(conv, torch.nn.Conv2d)]
    ref_convs = [conv for conv in ref.modules() if isinstance(conv, torch.nn.Conv2d)]
    channels_last = []
    for (name, conv), ref_conv in zip(convs, ref_convs, strict=True):
        if conv.kernel_size == (1, 1):
            continue  # a 1x1 weight is both formats
        channels_last.append(".out_couplings." in name)
        layout = torch.channels_last if channels_last[-1] else torch.contiguous_format
        for weight in (conv.parametrizations.weight.original1, conv.weight):
            assert weight.is_contiguous(memory_format=layout) and weight.is_contiguous() != channels_last[-1], name
        torch.testing.assert_close(conv.weight, ref_conv.weight, rtol=1e-6, atol=0)
    assert any(channels_last) and not all(channels_last)
    state = fast.state_dict()
    assert all(torch.equal(state[key], value) for key, value in ref.state_dict().items())

    (_, conv), ref_conv = next((c, r) for c, r in zip(convs, ref_convs) if ".out_couplings." in c[0]
                               and c[1].kernel_size == (3, 3))
    weight = torch.randn_like(ref_conv.weight)
    with torch.no_grad():
        conv.weight, ref_conv.weight = weight, weight
    torch.testing.assert_close(conv.weight, ref_conv.weight, rtol=1e-6, atol=0)
    torch.testing.assert_close(conv.parametrizations.weight.original0,
                               ref_conv.parametrizations.weight.original0)


def test_multiscale_nan_policy():
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
@pytest.mark.parametrize("autograd", [True, False])  # the multi-scale drop-in's layouts differ
def test_compile_fullgraph(device, backend, autograd):
    torch.manual_seed(0)
    models = {
        "mlp_realnvp": (fastflow.nn.mlp_realnvp.RealNVP(6, 16, 2), lambda m, x: m.layers[0](x),
                        torch.randn(4, 6)),
        "realnvp2d": (fastflow.nn.realnvp2d.RealNVP(2, 16, 4), lambda m, x: m(x),
                      torch.randn(8, 2)),
        "multiscale": (fastflow.nn.multiscale.RealNVP(8, 1, multiscale_args()).eval(),
                       lambda m, x: m(x), torch.rand(2, 1, 8, 8)),
    }
    with fastflow.backend(backend), torch.set_grad_enabled(autograd):
        for name, (model, call, x) in models.items():
            torch._dynamo.reset()
            compiled = torch.compile(lambda x: call(model, x), fullgraph=True, backend="aot_eager")
            torch.manual_seed(3)
            got = compiled(x)
            torch.manual_seed(3)
            expected = call(model, x)
            for g, e in zip(got, expected):
                torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5, msg=name)
