"""One-pass MADE / MAF sampling against the reference loops (the MADE and the Gaussian
MADE): samples identical given the same uniforms (a mismatch only where |u − p| < 1e-6),
logits of the finished samples equal to one full pass, log-likelihoods equal to the
reference's, MAF samples mapping back to their z, schedules from any autoregressive mask
stack (random degrees, cyclic degrees, any input order), refused non-autoregressive masks,
the plan cache following mask changes, plans checked when made, bad plans given to the ops,
no host sync after the first call, opcheck and bad arguments; zuko's and nflows' rules,
activations besides ReLU and the context's term against the reference on the ops'
arguments. The Triton kernel runs the same tests at small sizes (its interpreter is too slow
for D = 784)."""

import contextlib
import copy
import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastflow
from fastflow import nn as ffnn
from fastflow import reference
from fastflow import triton as fastflow_triton
from fastflow._extension import EXTENSION
from fastflow.backend import unavailable_reason
from fastflow.ops import made_plan
from fastflow.ops.made_model import masked_stack
from fastflow.ops.made_sample import MADE_RULES, RULES, sample_reference

from backends import HAS_GPU
from utils import assert_matches_float64


# These tests run on CPU tensors: Triton takes them only under its interpreter.
_TRITON_REASON = unavailable_reason("triton") or (
    None if fastflow_triton.INTERPRETED else "Triton runs CPU tensors only under its interpreter")
_TRITON_SKIP = [pytest.mark.skip(reason=f"backend triton: {_TRITON_REASON}")] if _TRITON_REASON else []
SAMPLE_BACKENDS = [pytest.param("cpu", id="cpu"), pytest.param("torch", id="torch"),
                   pytest.param("triton", id="triton", marks=_TRITON_SKIP)]
# The ops (same arguments) for opcheck and the argument checks.
SAMPLE_OPS = [pytest.param("made_sample", id="cpu-op"),
              pytest.param("made_sample_triton", id="triton-op", marks=_TRITON_SKIP)]


def skip_slow(backend, dims):
    """Triton's interpreter runs every push as Python: minutes at D = 784."""
    if backend == "triton" and fastflow_triton.INTERPRETED and dims > 12:
        pytest.skip("D > 12 is too slow under Triton's interpreter")


def bernoulli_made(dims, hidden, seed=0, order=None, dtype=torch.float32):
    """The reference MADE; with `order` (a permutation of 0..D-1), the input degrees follow
    it (dimension order[i] gets degree i + 1) and the masks are rebuilt through
    set_mask."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    made = reference.made.MADE(dims, hidden, dims).to(dtype)
    if order is not None:
        degrees = np.empty(dims, dtype=np.int64)
        degrees[np.asarray(order)] = np.arange(1, dims + 1)
        made.m[-1] = degrees
        L = len(made.layers)
        made.m[L - 1] = degrees
        for l in range(L):
            rule = np.less_equal if l < L - 1 else np.less
            made.layers[l].set_mask(rule(made.m[l - 1][None, :], made.m[l][:, None]))
    return made


def loop_reference(made, uniforms, order):
    """The reference loop in the given order: one full pass per dimension."""
    x = torch.zeros_like(uniforms)
    with torch.no_grad():
        for d in order:
            x[:, d] = (uniforms[:, d] < torch.sigmoid(made(x)[:, d])).to(x.dtype)
    return x


def assert_made_matches_float64(made, samples, log_likelihood=None, logits=None):
    """The logits and log-likelihoods made_sample returned for `samples` against a float64
    copy of `made` on those samples; `made` itself, in its dtype, sets the allowance."""
    made64 = copy.deepcopy(made).double()
    with torch.no_grad():
        if logits is not None:
            assert_matches_float64(logits, made64(samples.double()), "logits",
                                   reference=made(samples))
        if log_likelihood is not None:  # float32 for a reduced-precision MADE
            assert_matches_float64(
                log_likelihood, reference.made.log_likelihood(made64, samples.double()),
                "log-likelihood", dtype=samples.dtype,
                reference=reference.made.log_likelihood(made, samples))


def assert_same_samples(got, expected, uniforms, logits):
    """Equal, except where the uniform lies within 1e-6 of the probability."""
    differ = got != expected
    near = (uniforms.double() - torch.sigmoid(logits.double())).abs() < 1e-6
    assert not (differ & ~near).any(), f"{int((differ & ~near).sum())} samples differ"


@pytest.mark.parametrize("backend", SAMPLE_BACKENDS)
@pytest.mark.parametrize("dims,hidden,batch", [
    (2, [8], 1), (10, [64, 64], 7), (10, [16, 24, 16], 64), (10, [32], 1), (9, [80, 72], 20),
    (784, [512, 512], 7), (784, [64], 1), (784, [96, 64, 96], 3), (784, [64], 64),
])
def test_bernoulli_matches_reference_loop(backend, dims, hidden, batch):
    skip_slow(backend, dims)
    made = bernoulli_made(dims, hidden, seed=dims + batch)
    uniforms = torch.rand(batch, dims)
    expected = reference.made.generate_samples(made, batch, uniforms=uniforms)
    with fastflow.backend(backend):
        samples, log_likelihood, logits = fastflow.made_sample(made, batch, uniforms=uniforms,
                                                               return_logits=True)
    full = made(expected).detach()
    assert_same_samples(samples, expected, uniforms, full)
    assert_made_matches_float64(made, samples, log_likelihood, logits)
    assert set(samples.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("backend", SAMPLE_BACKENDS)
def test_any_input_order(backend):
    dims = 12
    order = torch.randperm(dims, generator=torch.Generator().manual_seed(3)).tolist()
    made = bernoulli_made(dims, [40, 40], seed=5, order=order)
    uniforms = torch.rand(9, dims)
    with fastflow.backend(backend):
        samples, _ = fastflow.made_sample(made, 9, uniforms=uniforms)
    assert_same_samples(samples, loop_reference(made, uniforms, order), uniforms,
                        made(samples).detach())
    assert model_plan(made).unit_orders[0].tolist()[0] == order[0]


def test_fastflow_made_matches_reference_made():
    ref = bernoulli_made(10, [48, 48], seed=2)
    np.random.seed(2)
    torch.manual_seed(2)
    fast = ffnn.made.MADE(10, [48, 48], 10)
    fast.load_state_dict(ref.state_dict())
    uniforms = torch.rand(5, 10)
    got, got_ll = fastflow.made_sample(fast, 5, uniforms=uniforms)
    expected, expected_ll = fastflow.made_sample(ref, 5, uniforms=uniforms)
    assert torch.equal(got, expected)
    assert_made_matches_float64(ref, got, got_ll)
    assert_made_matches_float64(ref, expected, expected_ll)


@pytest.mark.parametrize("backend", [*SAMPLE_BACKENDS[::2],
                                     pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)])
def test_float64(backend):
    device = "cuda" if backend == "cuda" else "cpu"
    made = bernoulli_made(10, [32, 32], seed=4, dtype=torch.float64).to(device)
    uniforms = torch.rand(16, 10, dtype=torch.float64, device=device)
    with fastflow.backend(backend):
        samples, ll, logits = fastflow.made_sample(made, 16, uniforms=uniforms,
                                                   return_logits=True)
    assert samples.dtype == torch.float64 and ll.dtype == torch.float64
    assert torch.equal(samples, reference.made.generate_samples(made, 16, uniforms=uniforms))
    assert_made_matches_float64(made, samples, ll, logits)
    torch.manual_seed(2)
    maf = reference.maf.MADE(8, 16, 1).double().to(device)
    z = torch.randn(5, 8, dtype=torch.float64, device=device)
    with torch.no_grad():
        expected, expected_log_det = maf(z)
    with fastflow.backend(backend):
        x, log_det = fastflow.gaussian_made_sample(maf, z)
    assert x.dtype == torch.float64 and log_det.dtype == torch.float64
    assert_matches_float64(x, expected, "x")
    assert_matches_float64(log_det, expected_log_det, "log_det")


@pytest.mark.parametrize("backend", SAMPLE_BACKENDS[::2])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision(backend, dtype):
    made = bernoulli_made(10, [32], seed=4, dtype=dtype)
    uniforms = torch.rand(16, 10)
    with fastflow.backend(backend):
        samples, ll, logits = fastflow.made_sample(made, 16, uniforms=uniforms,
                                                   return_logits=True)
    assert samples.dtype == dtype and ll.dtype == torch.float32 and logits.dtype == dtype
    assert_made_matches_float64(made, samples, ll, logits)


def test_float64_and_reduced_precision():
    made = bernoulli_made(10, [32, 32], seed=4, dtype=torch.float64)
    uniforms = torch.rand(16, 10, dtype=torch.float64)
    samples, ll, logits = fastflow.made_sample(made, 16, uniforms=uniforms, return_logits=True)
    assert samples.dtype == torch.float64 and ll.dtype == torch.float64
    assert torch.equal(samples, reference.made.generate_samples(made, 16, uniforms=uniforms))
    assert_made_matches_float64(made, samples, ll, logits)
    bf16 = bernoulli_made(10, [32], seed=4, dtype=torch.bfloat16)
    samples, ll, logits = fastflow.made_sample(bf16, 16, uniforms=uniforms.float(),
                                               return_logits=True)
    assert samples.dtype == torch.bfloat16 and ll.dtype == torch.float32
    assert_made_matches_float64(bf16, samples, ll, logits)


@pytest.mark.parametrize("backend", SAMPLE_BACKENDS)
def test_batch_zero_and_one(backend):
    made = bernoulli_made(10, [16], seed=1)
    with fastflow.backend(backend):
        samples, ll = fastflow.made_sample(made, 0)
        uniforms = torch.rand(1, 10)
        one, one_ll = fastflow.made_sample(made, 1, uniforms=uniforms)
        x, log_det = fastflow.gaussian_made_sample(reference.maf.MADE(10, 16, 1),
                                                   torch.randn(0, 10))
    assert samples.shape == (0, 10) and ll.shape == (0,)
    assert x.shape == (0, 10) and log_det.shape == (0,)
    assert torch.equal(one, reference.made.generate_samples(made, 1, uniforms=uniforms))
    assert_made_matches_float64(made, one, one_ll)


def test_batch_zero_generator_and_strided_uniforms():
    made = bernoulli_made(10, [16], seed=1)
    samples, ll = fastflow.made_sample(made, 0)
    assert samples.shape == (0, 10) and ll.shape == (0,)
    a, _ = fastflow.made_sample(made, 6, generator=torch.Generator().manual_seed(7))
    b, _ = fastflow.made_sample(made, 6, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    wide = torch.rand(10, 6).t()  # [6, 10], not contiguous
    got, _ = fastflow.made_sample(made, 6, uniforms=wide)
    assert torch.equal(got, fastflow.made_sample(made, 6, uniforms=wide.contiguous())[0])


def model_plan(made, per_dim=1):
    return made_plan.cached_plan(made, masked_stack(made, "test"), per_dim, "test").plan


def test_plan_cached_and_rebuilt_when_a_mask_changes():
    made = bernoulli_made(8, [24, 24], seed=6)
    plan = model_plan(made)
    assert model_plan(made) is plan
    order = [7, 6, 5, 4, 3, 2, 1, 0]
    reordered = bernoulli_made(8, [24, 24], seed=6, order=order)
    for layer, new in zip(made.layers, reordered.layers):
        layer.set_mask(new.mask.numpy())  # a copy through .data: no version counter change
    uniforms = torch.rand(5, 8)
    samples, _ = fastflow.made_sample(made, 5, uniforms=uniforms)
    assert model_plan(made) is not plan
    assert_same_samples(samples, loop_reference(made, uniforms, order), uniforms,
                        made(samples).detach())


@pytest.fixture
def masks_compared_by_version(monkeypatch):
    """The plan cache as on a GPU, on CPU tensors: masks matched by memory and version
    counter, never read."""
    monkeypatch.setattr(made_plan, "MASKS_COMPARED_BY_VALUE_ON", frozenset())


def test_plan_cache_off_the_cpu_follows_versions(masks_compared_by_version):
    made = bernoulli_made(8, [24, 24], seed=6)
    plan = model_plan(made)
    assert model_plan(made) is plan
    with torch.no_grad():
        made.layers[2].mask.mul_(1.0)  # an in-place edit: a new version
    edited = model_plan(made)
    assert edited is not plan
    reordered = bernoulli_made(8, [24, 24], seed=6, order=[7, 6, 5, 4, 3, 2, 1, 0])
    for layer, new in zip(made.layers, reordered.layers):
        layer.set_mask(new.mask.numpy())  # through .data: not seen off the CPU ...
    assert model_plan(made) is edited
    fastflow.ops.clear_sample_plans()  # ... until the plans are dropped
    assert model_plan(made).unit_orders[0].tolist() == [7, 6, 5, 4, 3, 2, 1, 0]
    cached = made_plan.cached_plan(made, masked_stack(made, "test"), 1, "test")
    assert cached.masks_as(torch.float64) is cached.masks_as(torch.float64)  # converted once


def test_packed_weights_follow_weight_changes():
    """The CPU kernel keeps its packed weights between calls: an in-place edit, a new
    parameter, load_state_dict, a new dtype and a mask change must each give the new
    model's samples; weights created under inference_mode (no version counter) too."""
    made = bernoulli_made(12, [40, 40], seed=3)
    uniforms = torch.rand(9, 12)
    order = list(range(12))

    def check(what):
        with fastflow.backend("cpu"):
            samples, log_likelihood, logits = fastflow.made_sample(made, 9, uniforms=uniforms,
                                                                   return_logits=True)
        assert_same_samples(samples, loop_reference(made, uniforms, order), uniforms, logits)
        assert_made_matches_float64(made, samples, log_likelihood, logits)

    check("first call")
    check("packed weights reused")
    with torch.no_grad():
        made.layers[1].weight.mul_(-3.0)
        made.layers[2].bias.add_(2.0)
    check("in-place edits")
    made.layers[0].weight = torch.nn.Parameter(torch.randn_like(made.layers[0].weight))
    check("a new parameter")
    made.load_state_dict(bernoulli_made(12, [40, 40], seed=4).state_dict())
    check("load_state_dict")
    made = made.double()
    uniforms = uniforms.double()
    check("float64")
    uniforms = uniforms.float()
    with torch.inference_mode():
        made = bernoulli_made(12, [40, 40], seed=5)
        check("inference tensors")
        with torch.no_grad():
            made.layers[0].weight.mul_(0.5)
        check("inference tensors edited in place")


def test_not_autoregressive_refused():
    made = bernoulli_made(6, [16], seed=0)
    mask = made.layers[-1].mask.clone()
    mask[3, :] = 1  # output 3 now sees hidden units that see input 3 (and later ones)
    made.layers[-1].set_mask(mask.numpy())
    with pytest.raises(ValueError, match="not autoregressive"):
        fastflow.made_sample(made, 2)
    # The defect of the vector Glow module's MADE: <= on the output layer, so output i sees
    # input i.
    made = bernoulli_made(6, [16], seed=0)
    made.layers[-1].set_mask(made.m[0][None, :] <= made.m[1][:, None])
    with pytest.raises(ValueError, match="output of dimension .* depends on input"):
        fastflow.made_sample(made, 2)


def test_bad_arguments():
    made = bernoulli_made(6, [16], seed=0)
    with pytest.raises(ValueError, match="uniforms"):
        fastflow.made_sample(made, 3, uniforms=torch.rand(2, 6))
    with pytest.raises(ValueError, match="noise"):
        fastflow.made_sample(made, 3, uniforms=torch.rand(3, 5))
    with pytest.raises(TypeError, match="noise"):
        fastflow.made_sample(made, 3, uniforms=torch.zeros(3, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="num_samples"):
        fastflow.made_sample(made, -1)
    with pytest.raises(TypeError, match="MADE"):
        fastflow.made_sample(torch.nn.Linear(3, 3), 2)
    with pytest.raises(TypeError, match="ReLU"):
        fastflow.made_sample(torch.nn.Sequential(made.layers[0], torch.nn.Tanh(), made.layers[1]), 2)
    with pytest.raises(ValueError, match="outputs"):
        fastflow.gaussian_made_sample(made, torch.randn(2, 6))


def _op_args(made, noise, rule):
    layers = masked_stack(made, "test")
    plan = model_plan(made, RULES[rule][0])
    return (noise, [l.weight for l in layers], [l.bias for l in layers],
            [l.mask for l in layers], *plan.to(noise.device), rule, [], "relu",
            [True] * (len(layers) - 1), [-1] * len(layers), [None] * len(layers))


# The plan's place in _op_args's arguments.
PLAN_ARGS = {"unit_orders": 4, "push_ranges": 5, "finalize_offsets": 6, "step_offsets": 7}


def out_of_range_plans(args):
    """(what, op arguments) with one plan field's values replaced by -2³⁰ and 2³⁰ in turn
    (every range [-2³⁰, 2³⁰)), then all of them at once (`what` matches each field's name)."""
    def far(t):
        flat = torch.full((t.numel(),), 2 ** 30, dtype=t.dtype)
        flat[::2] = -2 ** 30
        return flat.view(t.shape)

    every = list(args)
    for name, i in PLAN_ARGS.items():
        bad = list(args)
        bad[i] = far(args[i]) if isinstance(args[i], torch.Tensor) else [far(t) for t in args[i]]
        every[i] = bad[i]
        yield name, tuple(bad)
    yield "|".join(PLAN_ARGS), tuple(every)


@pytest.mark.parametrize("op_name", SAMPLE_OPS)
def test_op_checks_its_plan(op_name):
    """A plan given to an op directly. The CPU kernel reads the plan on the host and refuses
    bad values. The GPU kernels (Triton here, CUDA in test_cuda_emulated.py) do not read it
    on the host, which would make the host wait at every call, but clamp every index they
    read from it: a bad plan gives wrong samples, never an access out of bounds (an index of
    2³⁰ would crash the process)."""
    op = getattr(torch.ops.fastflow, op_name)
    made = bernoulli_made(6, [16], seed=0)
    args = _op_args(made, torch.rand(3, 6), "bernoulli")
    with pytest.raises(ValueError, match="rule must be one of"):
        op(*args[:8], "poisson", *args[9:])
    with pytest.raises(ValueError, match="activation must be one of"):
        op(*args[:10], "gelu", *args[11:])
    with pytest.raises(ValueError, match="takes 0 rule_params, got 1"):
        op(*args[:9], [1.0], *args[10:])
    with pytest.raises(ValueError, match=r"context_biases\[0\] must be"):
        op(*args[:13], [torch.zeros(3, 15), None])
    with pytest.raises(ValueError, match="expected 1 activated flags, 2 skips and 2 context"):
        op(*args[:11], [], *args[12:])
    with pytest.raises(ValueError, match=r"skips\[1\] must be -1 or a layer k <= l - 2"):
        op(*args[:12], [-1, 0], *args[13:])
    gaussian = _op_args(reference.maf.MADE(6, 16, 1), torch.randn(3, 6), "gaussian")
    with pytest.raises(ValueError, match="log slope"):
        op(*gaussian[:8], "zuko_affine_inverse", [0.5], *gaussian[10:])
    with pytest.raises(ValueError, match="epsilon"):
        op(*gaussian[:8], "nflows_affine_inverse", [0.0], *gaussian[10:])
    with pytest.raises(ValueError, match="3·bins − 1 outputs per dimension"):
        op(*args[:8], "zuko_rqs_inverse", [5.0, -7.0], *args[10:])
    with pytest.raises(ValueError, match="finalize_offsets"):
        op(*args[:6], [], *args[7:])
    if op_name == "made_sample_triton":
        for what, bad in out_of_range_plans(args):
            values, log_terms, outputs = op(*bad)
            assert values.shape == outputs.shape == (3, 6) and log_terms.shape == (3,), what
        return
    bad = [r.clone() for r in args[5]]
    bad[0][0, 1] = 99  # a push range past the layer's width
    with pytest.raises(ValueError, match="push_ranges"):
        op(*args[:5], bad, *args[6:])
    orders = [o.clone() for o in args[4]]
    orders[1][0] = orders[1][1]  # a repeated unit: some output would never be written
    with pytest.raises(ValueError, match="permutation"):
        op(*args[:4], orders, *args[5:])
    for what, bad in out_of_range_plans(args):
        with pytest.raises(ValueError, match=what):
            op(*bad)


def test_plan_checked_when_made():
    plan = model_plan(bernoulli_made(6, [16, 16], seed=0))
    fields = dict(unit_orders=plan.unit_orders, push_ranges=plan.push_ranges,
                  finalize_offsets=plan.finalize_offsets, step_offsets=plan.step_offsets)

    def remade(**changes):
        return made_plan.SamplePlan(**{**fields, **changes})

    assert torch.equal(remade().step_of, plan.step_of)
    ranges = [r.clone() for r in plan.push_ranges]
    ranges[1][0, 1] = 17  # past the layer's width
    with pytest.raises(ValueError, match=r"push_ranges\[1\] must hold ranges within \[0, 16\]"):
        remade(push_ranges=ranges)
    orders = [o.clone() for o in plan.unit_orders]
    orders[2][0] = orders[2][1]
    with pytest.raises(ValueError, match=r"unit_orders\[2\] must be a permutation"):
        remade(unit_orders=orders)
    with pytest.raises(ValueError, match="step_offsets must run non-decreasing from 0 to D = 6"):
        remade(step_offsets=plan.step_offsets.flip(0))
    with pytest.raises(ValueError, match=r"finalize_offsets\[0\] must run"):
        remade(finalize_offsets=[o + 1 for o in plan.finalize_offsets])
    with pytest.raises(ValueError, match=r"finalize_offsets\[1\] must have shape"):
        remade(finalize_offsets=[plan.finalize_offsets[0], plan.finalize_offsets[1][1:]])
    with pytest.raises(ValueError, match="L - 1 finalize_offsets"):
        remade(finalize_offsets=[])
    with pytest.raises(TypeError, match="step_offsets must be an int64 tensor on the CPU"):
        remade(step_offsets=plan.step_offsets.int())


@pytest.mark.parametrize("op_name", SAMPLE_OPS)
@pytest.mark.parametrize("rule", MADE_RULES)
def test_opcheck(op_name, rule):
    if rule != "bernoulli":
        made = reference.maf.MADE(5, 12, 1)
        noise = torch.randn(4, 5)
    else:
        made = bernoulli_made(5, [12], seed=0)
        noise = torch.rand(4, 5)
    torch.library.opcheck(getattr(torch.ops.fastflow, op_name).default,
                          _op_args(made, noise, rule),
                          test_utils=("test_schema", "test_faketensor"))


def interleaved_stack(dims, hidden, per_dim, dtype, seed, same_degrees=()):
    """(weights, biases, masks) of a random autoregressive stack of len(hidden) hidden layers
    with random degrees, whose last layer lays its outputs out interleaved (rows
    per_dim·d .. per_dim·d + per_dim − 1 of dimension d), as zuko's and nflows' MADEs.
    same_degrees: pairs (k, l) of hidden layers whose units get the same degrees (a residual
    skip from k to l keeps the stack autoregressive)."""
    generator = torch.Generator().manual_seed(seed)
    degrees = [torch.randperm(dims, generator=generator) + 1]
    degrees += [torch.randint(1, dims, (width,), generator=generator) for width in hidden]
    for k, l in same_degrees:
        degrees[l + 1] = degrees[k + 1]
    degrees.append(degrees[0].repeat_interleave(per_dim))
    weights, biases, masks = [], [], []
    for l, (inputs, outputs) in enumerate(zip(degrees[:-1], degrees[1:])):
        last = l == len(hidden)
        # Hidden units see inputs of degree <= theirs; outputs only strictly lower degrees.
        mask = outputs[:, None] > inputs[None, :] if last else outputs[:, None] >= inputs[None, :]
        weights.append(torch.randn(mask.shape, generator=generator, dtype=dtype) /
                       math.sqrt(mask.shape[1]))
        biases.append(torch.randn(mask.shape[0], generator=generator, dtype=dtype) / 2)
        masks.append(mask.to(dtype))
    return weights, biases, masks


# The rules that read an interleaved layout: (rule_params, outputs per dimension, noise scale).
# The spline's noise reaches past its bound of 5, where it is the identity.
INTERLEAVED_RULES = {
    "zuko_affine_inverse": ([math.log(1e-3)], 2, 1.0),
    "zuko_rqs_inverse": ([5.0, math.log(1e-3)], 8, 3.0),  # 3 bins
    "nflows_affine_inverse": ([1e-3], 2, 1.0),
}


# Wirings of a 3-hidden-layer stack: (activated, skips, the layers with a context term).
# "residual": nflows' residual MADE, y2 += y0 and the last layer reading y2 itself.
WIRINGS = {
    "plain": ([True, True, True], [-1, -1, -1, -1], (0,)),
    "residual": ([True, True, False], [-1, -1, 0, -1], (0, 1)),
}


@pytest.mark.parametrize("op_name", SAMPLE_OPS)
@pytest.mark.parametrize("rule", list(INTERLEAVED_RULES))
@pytest.mark.parametrize("activation", ["relu", "tanh", "elu"])
@pytest.mark.parametrize("wiring", list(WIRINGS))
@pytest.mark.parametrize("with_context", [False, True], ids=["no-context", "context"])
def test_new_rules_match_across_backends(op_name, rule, activation, wiring, with_context):
    """zuko's and nflows' inverses, activations besides ReLU, residual skips and context
    terms, on a small random stack, against the reference loop on the same arguments."""
    op = getattr(torch.ops.fastflow, op_name)
    rule_params, per_dim, noise_scale = INTERLEAVED_RULES[rule]
    activated, skips, context_layers = WIRINGS[wiring]
    dims = 5
    for dtype, tolerance in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        weights, biases, masks = interleaved_stack(dims, [12, 10, 12], per_dim, dtype,
                                                   seed=dims, same_degrees=((0, 2),))
        plan = made_plan.build_plan(masks, per_dim, "test", interleaved=True, skips=skips)
        generator = torch.Generator().manual_seed(1)
        for batch in (1, 7, 0):
            noise = noise_scale * torch.randn(batch, dims, generator=generator, dtype=dtype)
            contexts = [torch.randn(batch, w.shape[0], generator=generator, dtype=dtype)
                        if with_context and l in context_layers else None
                        for l, w in enumerate(weights)]
            args = (noise, weights, biases, masks, *plan.to("cpu"), rule, rule_params,
                    activation, activated, skips, contexts)
            if rule == "zuko_rqs_inverse" and batch == 7:
                assert (noise.abs() > rule_params[0]).any()  # past the bound: the identity
            got = op(*args)
            expected = sample_reference(*args)
            for name, g, e in zip(("values", "log terms", "outputs"), got, expected):
                torch.testing.assert_close(g, e, rtol=tolerance, atol=tolerance,
                                           msg=lambda m: f"{dtype}, batch {batch}, {name}: {m}")


@pytest.mark.parametrize("op_name", SAMPLE_OPS)
def test_opcheck_wired(op_name):
    """The op's schema and fake on a residual stack with context terms and a spline rule."""
    activated, skips, context_layers = WIRINGS["residual"]
    weights, biases, masks = interleaved_stack(4, [6, 5, 6], 8, torch.float32, seed=2,
                                               same_degrees=((0, 2),))
    plan = made_plan.build_plan(masks, 8, "test", interleaved=True, skips=skips)
    contexts = [torch.randn(3, w.shape[0]) if l in context_layers else None
                for l, w in enumerate(weights)]
    args = (3 * torch.randn(3, 4), weights, biases, masks, *plan.to("cpu"), "zuko_rqs_inverse",
            [5.0, math.log(1e-3)], "silu", activated, skips, contexts)
    torch.library.opcheck(getattr(torch.ops.fastflow, op_name).default, args,
                          test_utils=("test_schema", "test_faketensor"))


@contextlib.contextmanager
def recorded_host_syncs():
    """A list of what, meanwhile, would make the host wait for a GPU: values read on the host
    (item, bool, torch.equal, tolist, numpy, cpu) and tensors made from host data (copied to
    the device). The dispatcher shows the ops that Python code runs, but not those inside a
    custom op's Python implementation (the Triton launcher), nor tolist, numpy or cpu: those
    functions are patched."""
    syncs = []
    recorded_ops = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.equal.default,
                    torch.ops.aten.lift_fresh.default}

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in recorded_ops:
                syncs.append(str(func))
            return func(*args, **(kwargs or {}))

    def recording(owner, name):
        function = getattr(owner, name)

        def recorded(*args, **kwargs):
            syncs.append(f"{owner.__name__}.{name}")
            return function(*args, **kwargs)
        return recorded

    with pytest.MonkeyPatch.context() as patch:
        for owner, name in ((torch.Tensor, "tolist"), (torch.Tensor, "numpy"),
                            (torch.Tensor, "cpu"), (torch.Tensor, "item"),
                            (torch.Tensor, "__bool__"), (torch, "equal"), (torch, "tensor")):
            patch.setattr(owner, name, recording(owner, name))
        with Recorder():
            yield syncs


@pytest.mark.parametrize("backend", SAMPLE_BACKENDS)
@pytest.mark.parametrize("rule", MADE_RULES)
def test_no_host_sync_after_the_first_call(masks_compared_by_version, backend, rule):
    """On a GPU a call after the model's first reads nothing on the host: run here on CPU
    tensors with the plan cache as on a GPU (the C++ kernels are not seen, only what Python
    runs around them)."""
    if rule == "bernoulli":
        made, noise = bernoulli_made(6, [16, 16], seed=0), torch.rand(3, 6)
    else:
        made, noise = reference.maf.MADE(6, 16, 1), torch.randn(3, 6)
    sample = {"bernoulli": lambda: fastflow.made_sample(made, 3, uniforms=noise),
              "gaussian": lambda: fastflow.gaussian_made_sample(made, noise),
              "gaussian_inverse": lambda: fastflow.iaf_inverse(made, noise)}[rule]
    with fastflow.backend(backend):
        first = sample()
        with recorded_host_syncs() as syncs:
            second = sample()
    assert syncs == []
    for a, b in zip(first, second):
        assert torch.equal(a, b)


# The Gaussian MADE and the MAF.

def assert_gaussian_made_matches_float64(made, z, x, log_det):
    """x, log_det = gaussian_made_sample(made, z) against made's sampling loop run by a
    float64 copy on z, the loop itself (in made's dtype) setting the allowance; and x maps
    back to z under made.inverse as closely as the loop's own sample does."""
    made64 = copy.deepcopy(made).double()
    with torch.no_grad():
        expected, expected_log_det = made(z.clone())
        truth, truth_log_det = made64(z.double())
    assert_matches_float64(x, truth, "x", reference=expected)
    assert_matches_float64(log_det, truth_log_det, "log_det", reference=expected_log_det)
    with torch.no_grad():
        assert_matches_float64(made.inverse(x)[0], z.double(), "made.inverse(x)",
                               reference=made.inverse(expected)[0])


def maf_latent(maf, x):
    """MAF.log_prob's inverse pass: the latent of x."""
    with torch.no_grad():
        for flow in maf.nf:
            x, _ = flow.inverse(x)
    return x


@pytest.mark.parametrize("backend", SAMPLE_BACKENDS)
@pytest.mark.parametrize("dims,hidden,n_hidden,batch", [(2, 8, 0, 1), (10, 32, 1, 7),
                                                        (10, 24, 2, 64), (784, 128, 1, 3)])
def test_gaussian_made_matches_reference_forward(backend, dims, hidden, n_hidden, batch):
    skip_slow(backend, dims)
    torch.manual_seed(dims + batch)
    made = reference.maf.MADE(dims, hidden, n_hidden)
    z = torch.randn(batch, dims)
    with fastflow.backend(backend):
        x, log_det = fastflow.gaussian_made_sample(made, z)
    assert_gaussian_made_matches_float64(made, z, x, log_det)


@pytest.mark.parametrize("backend", [*SAMPLE_BACKENDS,
                                     pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)])
def test_iaf_inverse_matches_loop(backend):
    device = "cuda" if backend == "cuda" else "cpu"
    torch.manual_seed(0)
    made = reference.maf.MADE(9, 32, 1).to(device)
    x = torch.randn(6, 9, device=device)

    def loop(made, x):
        z = torch.zeros_like(x)
        with torch.no_grad():
            for d in range(9):
                mu, alpha = made.net(z).chunk(2, dim=1)
                z[:, d] = (x[:, d] - mu[:, d]) * torch.exp(-alpha[:, d])
            return z, -made.net(z).chunk(2, dim=1)[1].sum(1)

    z, expected_log_det = loop(made, x)
    z64, log_det64 = loop(copy.deepcopy(made).double(), x.double())
    with fastflow.backend(backend):
        got, log_det = fastflow.iaf_inverse(made, x)
    assert_matches_float64(got, z64, "z", reference=z)
    assert_matches_float64(log_det, log_det64, "log_det", reference=expected_log_det)


@pytest.mark.parametrize("n_flows,batch", [(1, 1), (3, 7), (5, 64)])
def test_maf_sample_maps_back_to_z(n_flows, batch):
    torch.manual_seed(n_flows)
    ref = reference.maf.MAF(10, 32, 1, n_flows)
    fast = ffnn.maf.MAF(10, 32, 1, n_flows)
    fast.load_state_dict(ref.state_dict())
    ref64 = copy.deepcopy(ref).double()
    z = torch.randn(batch, 10)
    x, log_prob = fast.sample(batch, z)
    expected = ref.sample(batch, z)
    assert_matches_float64(x, ref64.sample(batch, z.double()), "x", reference=expected)
    with torch.no_grad():
        assert_matches_float64(log_prob, ref64.log_prob(x.double()), "log_prob",
                               reference=ref.log_prob(x))
    assert_matches_float64(maf_latent(ref, x), z.double(), "latent of x",
                           reference=maf_latent(ref, expected))


def test_nn_gaussian_made_forward_is_one_pass():
    torch.manual_seed(1)
    ref = reference.maf.MADE(12, 40, 1)
    fast = ffnn.maf.MADE(12, 40, 1)
    fast.load_state_dict(ref.state_dict())
    z = torch.randn(5, 12)
    with torch.no_grad():
        expected = ref(z)
        truth = copy.deepcopy(ref).double()(z.double())
    got = fast(z)
    for name, g, t, e in zip(("x", "log_det"), got, truth, expected):
        assert_matches_float64(g, t, name, reference=e)


def test_plan_cyclic_degrees_share_steps():
    """The Gaussian MADE's cyclic hidden degrees: dimension d depends on all dimensions <
    d, so the plan has D steps, one dimension each."""
    made = reference.maf.MADE(7, 20, 1)
    plan = model_plan(made, 2)
    assert plan.steps == 7 and plan.step_of.tolist() == list(range(1, 8))


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
def test_gpu_reference_backend():
    made = bernoulli_made(10, [32], seed=0).cuda()
    uniforms = torch.rand(4, 10, device="cuda")
    with fastflow.backend("torch"):
        samples, _ = fastflow.made_sample(made, 4, uniforms=uniforms)
    assert torch.equal(samples, reference.made.generate_samples(made, 4, uniforms=uniforms))


# The CUDA kernel: the same comparisons on the 'cuda' backend (skipped without a GPU).

def test_cuda_kernel_registered_in_a_cuda_build():
    """The dispatch picks 'cuda' for any op with a CUDA kernel once the extension has CUDA
    kernels: a CUDA build must register every such op's (made_mlp has none)."""
    if not EXTENSION.cuda:
        pytest.skip("the extension was built without CUDA")
    from fastflow.ops import registry
    for op in registry.ops():
        has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(f"fastflow::{op.name}", "CUDA")
        assert has_kernel == ("cuda" in op.kernels), op.name


@pytest.mark.cuda
@pytest.mark.parametrize("dims,hidden,batch", [
    (10, [64], 1), (10, [64, 64], 7), (10, [16, 24, 16], 64), (10, [512, 512], 1024),
    (784, [512], 1), (784, [512, 512], 7), (784, [96, 64, 96], 64), (784, [512, 512], 1024),
    (100, [8], 64),  # steps of more than one chunk of dimensions
    (64, [4096, 4096], 20),  # accumulators too large for shared memory: global scratch
])
def test_cuda_bernoulli_matches_reference_loop(dims, hidden, batch):
    made = bernoulli_made(dims, hidden, seed=dims + batch).cuda()
    uniforms = torch.rand(batch, dims, device="cuda")
    expected = reference.made.generate_samples(made, batch, uniforms=uniforms)
    with fastflow.backend("cuda"):
        samples, log_likelihood, logits = fastflow.made_sample(made, batch, uniforms=uniforms,
                                                               return_logits=True)
    assert samples.device.type == "cuda"
    assert_same_samples(samples, expected, uniforms, made(expected).detach())
    assert_made_matches_float64(made, samples, log_likelihood, logits)
    assert set(samples.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.cuda
@pytest.mark.parametrize("dims,hidden,batch", [(10, [64, 64], 7), (784, [512, 512], 64)])
def test_cuda_matches_cpu_kernel(dims, hidden, batch):
    made = bernoulli_made(dims, hidden, seed=1)
    uniforms = torch.rand(batch, dims)
    with fastflow.backend("cpu"):
        expected, _, expected_logits = fastflow.made_sample(made, batch, uniforms=uniforms,
                                                            return_logits=True)
    made = made.cuda()
    with fastflow.backend("cuda"):
        got, got_ll, got_logits = fastflow.made_sample(made, batch, uniforms=uniforms.cuda(),
                                                       return_logits=True)
    assert_same_samples(got.cpu(), expected, uniforms, expected_logits)
    assert_made_matches_float64(made, got, got_ll, got_logits)


@pytest.mark.cuda
def test_cuda_any_input_order():
    dims = 12
    order = torch.randperm(dims, generator=torch.Generator().manual_seed(3)).tolist()
    made = bernoulli_made(dims, [40, 40], seed=5, order=order).cuda()
    uniforms = torch.rand(9, dims, device="cuda")
    with fastflow.backend("cuda"):
        samples, _ = fastflow.made_sample(made, 9, uniforms=uniforms)
    assert_same_samples(samples, loop_reference(made, uniforms, order), uniforms,
                        made(samples).detach())


@pytest.mark.cuda
def test_cuda_reduced_precision_matches_cpu():
    uniforms = torch.rand(16, 10, device="cuda")
    for dtype in (torch.bfloat16, torch.float16):
        low = bernoulli_made(10, [32], seed=4, dtype=dtype).cuda()
        with fastflow.backend("cuda"):
            samples, ll, logits = fastflow.made_sample(low, 16, uniforms=uniforms,
                                                       return_logits=True)
        assert samples.dtype == dtype and ll.dtype == torch.float32
        assert_made_matches_float64(low, samples, logits=logits)
        with fastflow.backend("cpu"):
            cpu_samples, _ = fastflow.made_sample(low.cpu(), 16, uniforms=uniforms.cpu())
        assert_same_samples(samples.cpu(), cpu_samples, uniforms.cpu(),
                            low.cpu()(cpu_samples).detach().float())


@pytest.mark.cuda
def test_cuda_batch_zero():
    made = bernoulli_made(10, [16], seed=1).cuda()
    with fastflow.backend("cuda"):
        samples, ll = fastflow.made_sample(made, 0)
    assert samples.shape == (0, 10) and ll.shape == (0,) and samples.device.type == "cuda"


@pytest.mark.cuda
@pytest.mark.parametrize("rule", MADE_RULES)
def test_cuda_opcheck(rule):
    if rule != "bernoulli":
        made = reference.maf.MADE(5, 12, 1).cuda()
        noise = torch.randn(4, 5, device="cuda")
    else:
        made = bernoulli_made(5, [12], seed=0).cuda()
        noise = torch.rand(4, 5, device="cuda")
    torch.library.opcheck(torch.ops.fastflow.made_sample.default, _op_args(made, noise, rule),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["torch", "cuda", pytest.param("triton", marks=pytest.mark.skipif(
    unavailable_reason("triton") is not None, reason=f"{unavailable_reason('triton')}"))])
def test_cuda_no_host_sync_after_the_first_call(backend):
    made = bernoulli_made(10, [32, 32], seed=0).cuda()
    uniforms = torch.rand(4, 10, device="cuda")
    with fastflow.backend(backend):
        expected, _ = fastflow.made_sample(made, 4, uniforms=uniforms)
        torch.cuda.set_sync_debug_mode("error")
        try:
            got, _ = fastflow.made_sample(made, 4, uniforms=uniforms)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(got, expected)


@pytest.mark.cuda
@pytest.mark.parametrize("dims,hidden,n_hidden,batch", [(2, 8, 0, 1), (10, 32, 1, 7),
                                                        (10, 24, 2, 64), (784, 128, 1, 3),
                                                        (784, 512, 1, 1024)])
def test_cuda_gaussian_made_matches_reference_forward(dims, hidden, n_hidden, batch):
    torch.manual_seed(dims + batch)
    made = reference.maf.MADE(dims, hidden, n_hidden).cuda()
    z = torch.randn(batch, dims, device="cuda")
    with fastflow.backend("cuda"):
        x, log_det = fastflow.gaussian_made_sample(made, z)
    assert_gaussian_made_matches_float64(made, z, x, log_det)


@pytest.mark.cuda
@pytest.mark.parametrize("n_flows,batch", [(1, 1), (3, 7), (5, 64), (5, 1024)])
def test_cuda_maf_sample_log_prob(n_flows, batch):
    torch.manual_seed(n_flows)
    ref = reference.maf.MAF(10, 32, 1, n_flows).cuda()
    fast = ffnn.maf.MAF(10, 32, 1, n_flows).cuda()
    fast.load_state_dict(ref.state_dict())
    ref64 = copy.deepcopy(ref).double()
    z = torch.randn(batch, 10, device="cuda")
    with fastflow.backend("cuda"):
        x, log_prob = fast.sample(batch, z)
    assert_matches_float64(x, ref64.sample(batch, z.double()), "x",
                           reference=ref.sample(batch, z.clone()))
    with torch.no_grad():
        assert_matches_float64(log_prob, ref64.log_prob(x.double()), "log_prob",
                               reference=ref.log_prob(x))
