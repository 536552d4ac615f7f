"""A MADE's whole network in one op: masked linear layers with ReLU between.

    h_0 = x,   h_{l+1} = relu(h_l·(W_l⊙M_l)ᵀ + b_l),   y = h_{L−1}·(W_{L−1}⊙M_{L−1})ᵀ + b_{L−1}

The masks are given as staircases, MADE's masks once every unit layer is sorted by degree,
in one int64 `plan`: the orders of the L + 1 unit layers (0: the inputs, L: the outputs;
sorted position s holds unit order_u[s]), then the row prefixes of the L layers, with

    M_l[order_{l+1}[r], order_l[c]] = [c < prefix_l[r]]   (each prefix non-decreasing)

made_mlp_plan(masks) builds it for any masks that have MADE degrees and sort together (each
hidden layer's order must sort both the layer below and the layer above: always so for
masks MADE builds, and for masks loaded from a reference model).

The C++ CPU kernel (csrc/cpu/masked_linear.cpp) keeps the hidden units in degree order from
layer to layer, skips the staircase's zero blocks in every product (forward, grad_x,
grad_weight) and runs each block on the CPU BLAS; the whole network is one call forward and
one backward (its autograd is in C++), so small networks also save the per-layer Python
and autograd costs. There is no CUDA or Triton kernel: on a GPU the reference runs (the
layers' own kernels are in fastflow.ops.masked_linear). fastflow.nn's MADEs run their `net`
through it (fastflow.nn.made.MaskedMLP).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import registry
from ._checks import require_float, require_like_x, require_tensors
from .masked_linear import degrees_from_mask


def staircase_mask(in_order, out_order, row_prefix, dtype=torch.bool):
    """The mask [len(out_order), len(in_order)] of one layer's staircase, as `dtype`."""
    sorted_mask = (torch.arange(in_order.numel(), device=in_order.device)[None, :]
                   < row_prefix[:, None])
    mask = torch.empty_like(sorted_mask)
    mask[out_order[:, None], in_order[None, :]] = sorted_mask
    return mask.to(dtype)


def split_plan(plan, widths):
    """(orders, row_prefixes) of a plan for unit layers of these widths."""
    sizes = list(widths) + list(widths[1:])
    parts = list(torch.split(plan, sizes))
    return parts[:len(widths)], parts[len(widths):]


def reference_layers(x, masks, weights, biases):
    """The reference MLP as the reference models run it: F.linear(x, mask * weight, bias) (a
    None mask: the plain weight), ReLU between, in place on the product (its own new tensor,
    which the product's backward does not keep), as the MAF's nn.ReLU(inplace=True) does:
    with a new tensor per ReLU, the Gaussian MADE's inverse at batch 256 ran 4-6% slower
    than the reference model on a 2-core AMD EPYC (Zen 4)."""
    for l, (mask, weight, bias) in enumerate(zip(masks, weights, biases)):
        x = F.linear(x, weight if mask is None else mask * weight, bias)
        if l + 1 < len(weights):
            x = torch.relu_(x)
    return x


def made_mlp_reference(x, weights, biases, plan, keep_for_backward=False):
    """The reference (the 'torch' backend): reference_layers with the masks built from the
    plan. Returns (y, [], []) like the kernel without its backward's tensors."""
    orders, row_prefixes = split_plan(plan, [x.shape[1], *(w.shape[0] for w in weights)])
    masks = [staircase_mask(orders[l], orders[l + 1], row_prefixes[l], w.dtype)
             for l, w in enumerate(weights)]
    return reference_layers(x, masks, weights, biases), [], []


def _check_plan(op, x, widths, plan, values):
    size = sum(widths) + sum(widths[1:])
    require_tensors(op, plan=plan)
    if plan.shape != (size,):
        raise ValueError(f"{op}: plan must have shape [{size}] (the units' orders, then the "
                         f"layers' row prefixes), got {tuple(plan.shape)}")
    if plan.dtype != torch.int64:
        raise TypeError(f"{op}: plan must be int64, got {plan.dtype}")
    if plan.device != x.device:
        raise ValueError(f"{op}: plan must be on x's device {x.device}, got {plan.device}")
    if not values:
        return
    orders, row_prefixes = split_plan(plan, widths)
    for u, order in enumerate(orders):
        if not torch.equal(torch.sort(order).values, torch.arange(widths[u], device=order.device)):
            raise ValueError(f"{op}: plan: order {u} must be a permutation of 0..{widths[u] - 1}")
    for l, prefix in enumerate(row_prefixes):
        if prefix.numel() and (bool((prefix < 0).any()) or bool((prefix > widths[l]).any())
                               or bool((prefix[1:] < prefix[:-1]).any())):
            raise ValueError(f"{op}: plan: the row prefixes of layer {l} must be non-decreasing, "
                             f"in 0..{widths[l]}")


def _count(value):
    return len(value) if isinstance(value, (list, tuple)) else type(value).__name__


def check_made_mlp(x, weights, biases, plan, keep_for_backward=False, *, values=True) -> None:
    """ValueError/TypeError naming the argument (the twin of csrc/masked_linear.h); with
    values=False (fake tensors) the plan's values are not read."""
    op = "made_mlp"
    require_tensors(op, x=x)
    if x.dim() != 2:
        raise ValueError(f"{op}: expected x of shape [B, in_features], got {tuple(x.shape)}")
    require_float(op, "x", x)
    if not isinstance(weights, (list, tuple)) or not weights:
        raise ValueError(f"{op}: weights must hold at least one layer")
    if not isinstance(biases, (list, tuple)) or len(biases) != len(weights):
        raise ValueError(f"{op}: expected {len(weights)} biases (None for a layer without), "
                         f"got {_count(biases)}")
    widths = [x.shape[1]]
    for l, (weight, bias) in enumerate(zip(weights, biases)):
        require_tensors(op, **{f"weights[{l}]": weight})
        if weight.dim() != 2 or weight.shape[1] != widths[-1]:
            raise ValueError(f"{op}: weights[{l}] must have shape [out_features, {widths[-1]}], "
                             f"got {tuple(weight.shape)}")
        require_like_x(op, x, **{f"weights[{l}]": weight})
        if bias is not None:
            require_tensors(op, **{f"biases[{l}]": bias})
            if bias.shape != (weight.shape[0],):
                raise ValueError(f"{op}: biases[{l}] must have shape [{weight.shape[0]}], got "
                                 f"{tuple(bias.shape)}")
            require_like_x(op, x, **{f"biases[{l}]": bias})
        widths.append(weight.shape[0])
    _check_plan(op, x, widths, plan, values)


def made_mlp_plan(masks) -> torch.Tensor | None:
    """made_mlp's plan from the layers' 0/1 masks ([out, in] each, in network order), or
    None when a mask has no degrees or the layers' degrees don't sort together."""
    return staircases([degrees_from_mask(mask) for mask in masks])


def staircases(degrees) -> torch.Tensor | None:
    """made_mlp_plan from each layer's (in_degrees, out_degrees) (degrees_from_mask's; None
    for a layer without). Each hidden layer is sorted by its degree in the layer below, ties
    by its degree in the layer above: both rise with MADE's degree, so for MADE's masks
    that order sorts both staircases."""
    if not degrees or any(d is None for d in degrees):
        return None
    orders = [torch.sort(degrees[0][0], stable=True).indices]
    for below, above in zip(degrees, degrees[1:]):
        order = torch.sort(above[0], stable=True).indices
        orders.append(order[torch.sort(below[1][order], stable=True).indices])
    orders.append(torch.sort(degrees[-1][1], stable=True).indices)
    row_prefixes = []
    for l, (in_degrees, out_degrees) in enumerate(degrees):
        sorted_in, sorted_out = in_degrees[orders[l]], out_degrees[orders[l + 1]]
        if bool((sorted_in[1:] < sorted_in[:-1]).any()):
            return None
        row_prefixes.append(torch.searchsorted(sorted_in, sorted_out, right=True))
    return torch.cat(orders + row_prefixes)


if "" in registry.KERNEL_SUFFIXES:
    @torch.library.register_fake("fastflow::made_mlp")
    def _fake(x, weights, biases, plan, keep_for_backward):
        check_made_mlp(x, weights, biases, plan, values=False)
        y = x.new_empty(x.shape[0], weights[-1].shape[0])
        if not keep_for_backward:
            return y, [], []
        return (y, [x.new_empty(x.shape[0], w.shape[0]) for w in weights[:-1]],
                [w.new_empty(w.shape) for w in weights])

    @torch.library.register_fake("fastflow::made_mlp_backward")
    def _fake_backward(grad_y, x, hidden, sorted_weights, plan, input_grad):
        grad_x = x.new_empty(x.shape if input_grad else (0,))
        return (grad_x, [w.new_empty(w.shape) for w in sorted_weights],
                [w.new_empty(w.shape[0]) for w in sorted_weights])


def _sizes(x, weights, *rest):
    return ("-".join(str(n) for n in [x.shape[1], *(w.shape[0] for w in weights)]),)


# 'auto' on the CPU: the C++ kernel where measured faster than the reference, per shape
# class (fastflow.autotune); no GPU kernel.
OP = registry.register(registry.Op(
    name="made_mlp", functions=("made_mlp",),
    summary="a MADE's network (masked linear layers, ReLU between) in one call; skips the "
            "staircases' zeros, hidden units kept in degree order",
    reference=made_mlp_reference,
    reference_source="`F.linear(h, mask * weight, bias)` and ReLU per layer",
    check=check_made_mlp, tensors=("x",), auto={"cpu": ("cpu",), "cuda": ("torch",)},
    bench="made", measured_sizes=_sizes, kernels=("cpu",)))


def made_mlp(x: torch.Tensor, weights, biases, plan: torch.Tensor) -> torch.Tensor:
    """A MADE's network on the current backend: y [B, out_features] (see the module
    docstring for the plan; made_mlp_plan builds it from masks).

    Args:
        x: [B, in_features] (float32/float64/float16/bfloat16; rows may be strided).
        weights: L tensors [out_l, in_l], x's dtype; biases: L tensors [out_l] or None.
        plan: int64 [Σ units + Σ output units], on x's device.
    """
    weights, biases = (list(a) if isinstance(a, (list, tuple)) else a for a in (weights, biases))
    return registry.call(OP, x, weights, biases, plan, False)[0]
