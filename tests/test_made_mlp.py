"""made_mlp (a MADE's whole network in one op) against the reference layers, F.linear(h,
mask * weight, bias) and ReLU: forward and every gradient in float64 terms, odd sizes,
batch 0 and 1, strided x, no biases, one to four layers, staircases with empty blocks,
block counts at their edges, one and two threads; the plan from masks; opcheck; bad
arguments; and the MADEs' MaskedMLP (fused and reference paths, hooks, mask changes)."""

import copy

import numpy as np
import pytest
import torch

import fastflow
from fastflow import reference
from fastflow._extension import EXTENSION
from fastflow.ops.made_mlp import made_mlp_plan, made_mlp_reference, split_plan, staircase_mask
from fastflow.nn.made import reference_layers

from utils import assert_matches_float64, assert_raises_on_every_path

needs_extension = pytest.mark.skipif(not EXTENSION.loaded, reason="the extension is not built")
CPU_BACKENDS = [pytest.param("torch", id="torch"),
                pytest.param("cpu", id="cpu", marks=needs_extension)]


def made_masks(widths, kind="random", seed=0):
    """Masks of a MADE with these unit widths, built from degrees as MADE builds them (inputs
    a permutation of 1..D, hidden units random, outputs strict), or with empty blocks."""
    g = torch.Generator().manual_seed(seed)
    d = widths[0]
    degrees = [torch.randperm(d, generator=g) + 1]
    for width in widths[1:-1]:
        if kind == "random":
            degrees.append(torch.randint(1, max(d, 2), (width,), generator=g))
        elif kind == "dead-units":  # hidden units that see nothing, or that nothing sees
            degrees.append(torch.randint(-1, d + 3, (width,), generator=g))
        else:
            assert kind == "low-half"  # only the lower half of the degrees: blocks no row sees
            degrees.append(torch.randint(1, max(d // 2, 2), (width,), generator=g))
    degrees.append((torch.arange(widths[-1]) % d) + 1)
    masks = [(below[None, :] <= above[:, None]).float() for below, above in zip(degrees, degrees[1:-1])]
    masks.append((degrees[-2][None, :] < degrees[-1][:, None]).float())
    return masks


def make_layers(widths, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    weights = [(torch.randn(o, i, generator=g) / max(i, 1) ** 0.5).to(dtype)
               for i, o in zip(widths, widths[1:])]
    biases = [torch.randn(o, generator=g).to(dtype) if bias else None for o in widths[1:]]
    return weights, biases


def reference_run(x, masks, weights, biases, grad_y, x_grad):
    """The reference layers on copies: y and the gradients of x (when x_grad), the weights
    and the biases."""
    x = x.detach().requires_grad_(x_grad)
    weights = [w.detach().requires_grad_() for w in weights]
    biases = [b.detach().requires_grad_() if b is not None else None for b in biases]
    y = reference_layers(x, [m.to(x.dtype) for m in masks], weights, biases)
    y.backward(grad_y.to(y.dtype))
    return (y.detach(), x.grad if x_grad else None, [w.grad for w in weights],
            [b.grad if b is not None else None for b in biases])


def check_made_mlp(backend, x, masks, weights, biases, x_grad=True):
    """made_mlp on backend against the reference in float64 (allowance from the reference's
    own run in x's dtype); the weight gradients must be zero where the masks are."""
    plan = made_mlp_plan(masks)
    assert plan is not None
    grad_y = torch.randn(x.shape[0], weights[-1].shape[0], dtype=x.dtype)
    truth = reference_run(x.double(), masks, [w.double() for w in weights],
                          [b.double() if b is not None else None for b in biases], grad_y.double(),
                          x_grad)
    ref = reference_run(x, masks, weights, biases, grad_y, x_grad)
    x_ = x.detach().requires_grad_(x_grad)
    weights_ = [w.detach().requires_grad_() for w in weights]
    biases_ = [b.detach().requires_grad_() if b is not None else None for b in biases]
    with fastflow.backend(backend):
        y = fastflow.ops.made_mlp(x_, weights_, biases_, plan)
    assert y.dtype == x.dtype and y.shape == (x.shape[0], weights[-1].shape[0])
    assert_matches_float64(y, truth[0], "y", reference=ref[0])
    y.backward(grad_y)
    if x_grad:
        assert_matches_float64(x_.grad, truth[1], "grad_x", reference=ref[1])
    for l, (w, mask) in enumerate(zip(weights_, masks)):
        assert_matches_float64(w.grad, truth[2][l], f"grad_weight[{l}]", reference=ref[2][l])
        assert bool((w.grad[mask == 0] == 0).all()), f"grad_weight[{l}] must be 0 off the mask"
    for l, b in enumerate(biases_):
        if b is not None:
            assert_matches_float64(b.grad, truth[3][l], f"grad_bias[{l}]", reference=ref[3][l])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16],
                         ids=str)
@pytest.mark.parametrize("widths,batch", [
    ([5, 7, 5], 1), ([9, 13, 11, 18], 7), ([1, 3, 1], 4), ([12, 30, 30, 30, 24], 5),
    ([20, 20], 6), ([16, 40, 16], 0)], ids=str)
def test_matches_reference(backend, dtype, widths, batch):
    """One to four layers, odd sizes, batch 0 and 1, outputs of several units per degree."""
    x = torch.randn(batch, widths[0], dtype=dtype)
    check_made_mlp(backend, x, made_masks(widths, seed=len(widths) + batch),
                   *make_layers(widths, dtype))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind", ["dead-units", "low-half"])
def test_empty_blocks_no_bias_strided(backend, kind):
    """Hidden units that see nothing or that nothing sees, blocks of columns no row sees, no
    biases, x a column slice, x needing no gradient (MADE's first layer)."""
    widths = [30, 64, 64, 60]
    x = torch.randn(9, 35, dtype=torch.float64)[:, 3:33]
    assert not x.is_contiguous()
    check_made_mlp(backend, x, made_masks(widths, kind), *make_layers(widths, torch.float64, bias=False),
                   x_grad=False)


# Block counts (csrc/cpu/masked_linear.cpp): about one block per 0.7e6 multiply-adds of a
# layer's dense product (batch × out × in), at least 1, at most 16 (or two per thread), each
# block whole groups of 16 units and the last one the remainder. For the 300- and 301-unit
# layers here: batch 15 gives 1 block, 16 two (the edge), 120 fifteen over 19 groups (blocks
# of one and two groups), 400 the cap of 16; the 3-unit output layer is one block (one group).
@needs_extension
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [15, 16, 120, 400])
@pytest.mark.parametrize("widths", [[300, 301, 300], [299, 301, 3]], ids=str)
def test_cpu_block_counts(threads, batch, widths):
    x = torch.randn(batch, widths[0], dtype=torch.float64)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_made_mlp("cpu", x, made_masks(widths, seed=batch), *make_layers(widths, torch.float64))
    finally:
        torch.set_num_threads(previous)


def test_plan_reproduces_masks():
    """The plan's staircases are the masks: for MADE's masks (several layers), a plain
    degree mask, and a mask whose rows see everything or nothing."""
    cases = [made_masks([11, 20, 20, 22]), made_masks([6, 9, 6], "dead-units"),
             [torch.ones(4, 3)], [torch.zeros(2, 5)]]
    for masks in cases:
        plan = made_mlp_plan(masks)
        widths = [masks[0].shape[1], *(m.shape[0] for m in masks)]
        orders, row_prefixes = split_plan(plan, widths)
        for l, mask in enumerate(masks):
            assert torch.equal(staircase_mask(orders[l], orders[l + 1], row_prefixes[l]), mask != 0)


def test_plan_refuses_masks_without_a_common_order():
    """None for a mask without degrees, and for layers whose hidden order can't sort both
    staircases."""
    assert made_mlp_plan([torch.tensor([[1.0, 0.0], [0.0, 1.0]])]) is None  # not nested
    below = torch.tensor([[1.0], [1.0]])         # both hidden units see the one input (a tie)
    above = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # ...but the layer above tells them apart
    assert made_mlp_plan([below, above]) is not None
    below = torch.tensor([[1.0, 0.0], [1.0, 1.0]])   # hidden 0 sees less than hidden 1
    above = torch.tensor([[0.0, 1.0], [1.0, 1.0]])   # ...but is seen by fewer above
    assert made_mlp_plan([below, above]) is None


@needs_extension
def test_opcheck():
    widths = [7, 12, 12, 14]
    masks = made_masks(widths)
    weights, biases = make_layers(widths, torch.float32)
    x = torch.randn(5, 7, requires_grad=True)
    weights = [w.requires_grad_() for w in weights]
    plan = made_mlp_plan(masks)
    op = torch.ops.fastflow.made_mlp
    torch.library.opcheck(op, (x, weights, biases, plan, False))
    torch.library.opcheck(op, (x, weights, [None, biases[1], None], plan, True))
    torch.library.opcheck(op, (x.detach(), [w.detach() for w in weights], biases, plan, True))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bad_arguments(backend):
    widths = [4, 6, 4]
    masks = made_masks(widths)
    weights, biases = make_layers(widths, torch.float32)
    x = torch.randn(3, 4)
    plan = made_mlp_plan(masks)
    bad_order = plan.clone()
    bad_order[0] = bad_order[1]  # order 0 no longer a permutation
    bad_prefix = plan.clone()
    bad_prefix[-1] = 99  # past the layer's inputs
    cases = [
        (ValueError, "expected x of shape", (x[0], weights, biases, plan)),
        (TypeError, "x must be float32", (x.long(), weights, biases, plan)),
        (ValueError, r"weights\[1\] must have shape \[out_features, 6\]",
         (x, [weights[0], weights[1].t()], biases, plan)),
        (ValueError, r"weights\[0\] must have x's dtype", (x, [weights[0].double(), weights[1]], biases, plan)),
        (ValueError, r"biases\[1\] must have shape \[4\]", (x, weights, [biases[0], biases[0]], plan)),
        (ValueError, "expected 2 biases", (x, weights, [biases[0]], plan)),
        (ValueError, r"plan must have shape \[24\]", (x, weights, biases, plan[:-1])),
        (TypeError, "plan must be int64", (x, weights, biases, plan.int())),
        (ValueError, "plan: order 0 must be a permutation", (x, weights, biases, bad_order)),
        (ValueError, "plan: the row prefixes of layer 1 must be non-decreasing",
         (x, weights, biases, bad_prefix)),
    ]
    for error, message, args in cases:
        assert_raises_on_every_path(backend, "made_mlp", error, message,
                                    lambda: fastflow.ops.made_mlp(*args), (*args, False))


def test_no_gpu_kernel():
    """There is no CUDA or Triton kernel: asking for one names the op and the way out."""
    from fastflow.ops import made_mlp, registry
    op = registry.REGISTRY["made_mlp"]
    assert op.kernels == ("cpu",) and op.auto["cuda"] == ("torch",)
    with pytest.raises(ValueError, match="made_mlp: fastflow backend 'triton' has no kernel"):
        registry.run(op, "triton", ())
    assert made_mlp_reference is op.reference and callable(made_mlp)


# The MADEs' net -------------------------------------------------------------------------

def made_pair(kind, *args):
    np.random.seed(0)
    torch.manual_seed(0)
    if kind == "made":
        ref, fast = reference.made.MADE(*args), fastflow.nn.MADE(*args)
    else:
        ref, fast = reference.maf.MADE(*args), fastflow.nn.maf.MADE(*args)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.mark.parametrize("backend", ["auto", pytest.param("cpu", marks=needs_extension), "torch"])
@pytest.mark.parametrize("kind,args", [("made", (30, [40, 50], 30)), ("maf", (10, 64, 1))], ids=str)
def test_net_matches_reference(backend, kind, args):
    """fastflow.nn's MADEs (their net a MaskedMLP) against the reference models, forward and
    the parameters' gradients, on every CPU backend."""
    ref, fast = made_pair(kind, *args)
    assert isinstance(fast.net, fastflow.nn.made.MaskedMLP)
    assert list(fast.state_dict()) == list(ref.state_dict())
    x = torch.rand(6, args[0]).round()
    run = (lambda m, x: m(x)) if kind == "made" else (lambda m, x: m.inverse(x)[0])
    ref64 = copy.deepcopy(ref).double()
    truth = run(ref64, x.double())
    truth.square().sum().backward()
    run(ref, x).square().sum().backward()
    with fastflow.backend(backend):
        got = run(fast, x)
    assert_matches_float64(got, truth.detach(), "output", reference=run(ref, x).detach())
    got.square().sum().backward()
    for (name, p), p64, p_ref in zip(fast.named_parameters(), ref64.parameters(), ref.parameters()):
        assert_matches_float64(p.grad, p64.grad, name, reference=p_ref.grad)


@needs_extension
def test_net_fused_path_follows_masks_and_hooks():
    """Under 'cpu' the net runs fused; set_mask, load_state_dict and in-place mask edits
    change its plan; a forward hook on a layer makes it run layer by layer (the hook runs)."""
    ref, fast = made_pair("made", 20, [30], 20)
    x = torch.rand(4, 20).round()

    def check(what):
        with fastflow.backend("cpu"), torch.no_grad():
            got = fast(x)
        assert_matches_float64(got, copy.deepcopy(fast).double()(x.double()), what,
                               reference=ref(x) if what == "loaded" else None)

    check("loaded")
    plan = fast.net._plan
    fast.layers[0].set_mask(np.tril(np.ones((30, 20))))
    check("set_mask")
    assert fast.net._plan is not plan
    plan = fast.net._plan
    with torch.no_grad():
        fast.layers[1].mask[:, :] = 0
        fast.layers[1].mask[5:, :10] = 1
    check("mask edited in place")
    assert fast.net._plan is not plan
    fast.load_state_dict(ref.state_dict())
    check("load_state_dict")
    seen = []
    handle = fast.layers[1].register_forward_hook(lambda *args: seen.append(1))
    with fastflow.backend("cpu"), torch.no_grad():
        got = fast(x)
    assert seen == [1]
    handle.remove()
    assert_matches_float64(got, copy.deepcopy(fast).double()(x.double()), "hooked")


def test_net_without_degrees_runs_layer_by_layer():
    """A mask without degrees (not nested) leaves the net to its layers (matrix form)."""
    ref, fast = made_pair("made", 6, [8], 6)
    mask = np.ones((8, 6))
    mask[0, 0] = mask[1, 1] = 0  # rows 0 and 1 each miss an input the other sees
    for model in (ref, fast):
        model.layers[0].set_mask(mask)
    x = torch.rand(3, 6)
    with fastflow.backend("auto"):
        got = fast(x)
    assert fast.net._plan is None
    assert_matches_float64(got, copy.deepcopy(ref).double()(x.double()), "output",
                           reference=ref(x))


def test_net_compiles():
    """Under torch.compile the net runs its layers (their ops compiled), same results."""
    ref, fast = made_pair("maf", 5, 16, 1)
    x = torch.randn(4, 5)
    compiled = torch.compile(lambda x: fast.inverse(x)[0], backend="eager", fullgraph=False)
    assert_matches_float64(compiled(x), copy.deepcopy(ref).double().inverse(x.double())[0],
                           "compiled", reference=ref.inverse(x)[0])


@pytest.mark.parametrize("backend", ["auto", pytest.param("cpu", marks=needs_extension)])
def test_plain_linear_mlp(backend):
    """A MaskedMLP of plain nn.Linear layers (the 2-D RealNVP's s/t network: full masks, one
    block per product) against the same layers run as the reference runs them."""
    torch.manual_seed(0)
    layers = reference.realnvp2d.ScaleTranslateNet(3, 37, 6).net
    fused = fastflow.nn.made.MaskedMLP.wrap(copy.deepcopy(layers))
    assert list(fused.state_dict()) == list(layers.state_dict())
    x = torch.randn(301, 3)
    with fastflow.backend(backend):
        got = fused(x)
    if backend == "cpu":
        assert fused._plan is not None
    truth = copy.deepcopy(layers).double()(x.double())
    assert_matches_float64(got, truth.detach(), "output", reference=layers(x).detach())
    got.square().sum().backward()
    layers64 = copy.deepcopy(layers).double()
    layers64(x.double()).square().sum().backward()
    layers(x).square().sum().backward()
    for (name, p), p64, p_ref in zip(fused.named_parameters(), layers64.parameters(), layers.parameters()):
        assert_matches_float64(p.grad, p64.grad, name, reference=p_ref.grad)
