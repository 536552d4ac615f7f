"""One-pass MADE and MAF sampling (docs/design.md, "One-pass MADE/MAF sampling"): the
public functions, the ops and the reference loop.

The reference samplers (the MADE's generate_samples, the Gaussian MADE's forward) run the
whole network once per dimension: D full forward passes. But once every unit a hidden unit
depends on is known, its value never changes again. The kernels keep running
pre-activations and add each unit's contribution once, when it becomes final, in the order
of the model's sampling plan (fastflow.ops.made_plan; the model is read by
fastflow.ops.made_model): the arithmetic of about one forward pass.

Public functions: made_sample (a Bernoulli MADE such as the reference MADE),
gaussian_made_sample (the Gaussian MADE's forward: x = μ + z·exp(α)) and iaf_inverse (the
same loop run the other way, an IAF's slow direction). The ops: torch.ops.fastflow.made_sample
(C++ CPU kernel; CUDA kernel, one persistent launch per call) and
torch.ops.fastflow.made_sample_triton (Triton, the same arguments); the 'torch' backend runs
the reference algorithm (one full pass per sampling step). The CUDA and Triton kernels have
not run on a GPU yet: only an explicit backend picks them.

After a model's first call, a call on a GPU makes the host wait for nothing: the plan, its
copy on the device and the masks in the weights' dtype are kept, and the ops check their
arguments' shapes, dtypes and devices, not the plan's values (made_plan says why that is
safe).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import triton as _triton
from . import registry
from ._checks import FLOAT_DTYPES
from .made_model import MaskedLayer, masked_stack
from .made_plan import cached_plan, step_of_dimensions

# The sampling rules, the ops' `rule` (their formulas: csrc/made_sample_math.h): the network
# outputs each reads per dimension (None: 3·bins − 1, the spline's) and its rule_params.
RULES = {
    "bernoulli": (1, ()),
    "gaussian": (2, ()),
    "gaussian_inverse": (2, ()),
    "zuko_affine_inverse": (2, ("log slope",)),
    "zuko_rqs_inverse": (None, ("bound", "log slope")),
    "nflows_affine_inverse": (2, ("epsilon",)),
}
# The rules of fastflow's own models (the seeds' MADE, MAF and IAF).
MADE_RULES = ("bernoulli", "gaussian", "gaussian_inverse")

# The hidden units' activations, the ops' `activation`, as torch computes them.
ACTIVATIONS = {"relu": torch.relu, "leaky_relu": F.leaky_relu, "elu": F.elu, "silu": F.silu,
               "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def _stack_forward(layers: list[MaskedLayer], x: torch.Tensor, activation: str,
                   activated: list[bool], skips: list[int],
                   context_biases: list[torch.Tensor | None]) -> torch.Tensor:
    """The network's last outputs on inputs x, wired as csrc/made_sample.h says."""
    ys = []
    for l, layer in enumerate(layers):
        if l:
            x = ACTIVATIONS[activation](ys[-1]) if activated[l - 1] else ys[-1]
        y = F.linear(x, layer.mask * layer.weight, layer.bias)
        if context_biases[l] is not None:
            y = y + context_biases[l]
        if skips[l] >= 0:
            y = y + ys[skips[l]]
        ys.append(y)
    return ys[-1]


def _soft_clamp(x: torch.Tensor, limit: float) -> torch.Tensor:
    return x / (1 + (x / limit).abs())


def _rqs_inverse(o: torch.Tensor, y: torch.Tensor, bound: float, log_slope: float):
    """zuko's MonotonicRQSTransform inverse of y [...] for parameters o [..., 3K − 1], and
    log f′ at the result (0 outside [−bound, bound], where it is the identity)."""
    bins = (o.shape[-1] + 1) // 3
    widths, heights, derivatives = o.split([bins, bins, bins - 1], dim=-1)
    knots_x = bound * (2 * F.pad(torch.softmax(_soft_clamp(widths, log_slope / 2), -1),
                                 (1, 0)).cumsum(-1) - 1)
    knots_y = bound * (2 * F.pad(torch.softmax(_soft_clamp(heights, log_slope / 2), -1),
                                 (1, 0)).cumsum(-1) - 1)
    slopes = F.pad(torch.exp(_soft_clamp(derivatives, log_slope)), (1, 1), value=1.0)
    k = (knots_y < y[..., None]).sum(-1) - 1
    inside = (k >= 0) & (k < bins)
    k = k.clamp(0, bins - 1)[..., None]
    pick = lambda t, shift: t.gather(-1, k + shift)[..., 0]  # noqa: E731
    x0, x1, y0, y1 = pick(knots_x, 0), pick(knots_x, 1), pick(knots_y, 0), pick(knots_y, 1)
    d0, d1 = pick(slopes, 0), pick(slopes, 1)
    s = (y1 - y0) / (x1 - x0)
    y_ = y - y0
    bend = d0 + d1 - 2 * s
    a = (y1 - y0) * (s - d0) + y_ * bend
    b = (y1 - y0) * d0 - y_ * bend
    c = -s * y_
    z = 2 * c / (-b - (b * b - 4 * a * c).sqrt())
    x = x0 + z * (x1 - x0)
    zz = z * (1 - z)
    log_slope_at_x = (s * s * (2 * s * zz + d0 * (1 - z) ** 2 + d1 * z * z)).log() - \
        2 * (s + bend * zz).log()
    return torch.where(inside, x, y), torch.where(inside, log_slope_at_x, 0)


def _apply_rule(rule: str, o: torch.Tensor, e: torch.Tensor, params: list[float]):
    """(values, terms) [N, D] of `rule` for outputs o [N, D, k] and noise e [N, D], both in
    sampling positions; the kernels subtract the terms from the log term."""
    if rule == "bernoulli":
        logit = o[..., 0]
        v = (e < torch.sigmoid(logit)).to(e.dtype)
        acc = torch.float64 if e.dtype == torch.float64 else torch.float32
        return v, F.binary_cross_entropy_with_logits(logit.to(acc), v.to(acc), reduction="none")
    if rule == "zuko_rqs_inverse":
        return _rqs_inverse(o, e, params[0], params[1])
    first, second = o[..., 0], o[..., 1]
    if rule == "gaussian":
        return first + e * torch.exp(second), second
    if rule == "gaussian_inverse":
        return (e - first) * torch.exp(-second), second
    if rule == "zuko_affine_inverse":
        log_scale = _soft_clamp(second, params[0])
        return (e - first) / torch.exp(log_scale), log_scale
    scale = F.softplus(first) + params[0]  # nflows_affine_inverse
    return (e - second) / scale, scale.log()


@torch.no_grad()
def sample_reference(noise, weights, biases, masks, unit_orders, push_ranges, finalize_offsets,
                     step_offsets, rule, rule_params, activation, activated, skips,
                     context_biases):
    """The reference algorithm (the 'torch' backend), on the op's arguments: one full
    forward pass per sampling step, as the MADE's generate_samples, the Gaussian MADE's
    forward and zuko's and nflows' inverses, in the plan's order. Each step's dimensions are
    chosen on the device (no copy to the host)."""
    layers = [MaskedLayer(w, b, m) for w, b, m in zip(weights, biases, masks)]
    wiring = (activation, activated, skips, context_biases)
    samples, dims = noise.shape
    acc = torch.float64 if noise.dtype == torch.float64 else torch.float32
    width = weights[-1].shape[0]
    if dims == 0:
        return noise.clone(), noise.new_zeros(samples, dtype=acc), noise.new_zeros(samples, width)
    dim_order, out_order = unit_orders[0], unit_orders[-1]
    step_of = step_of_dimensions(dim_order, step_offsets)[dim_order]  # per position
    noise_by_position = noise[:, dim_order]

    def outputs_by_position(out):
        return out[:, out_order].view(samples, dims, width // dims)

    values = torch.zeros_like(noise)
    for t in range(1, step_offsets.shape[0]):
        out = _stack_forward(layers, values, *wiring)
        v, _ = _apply_rule(rule, outputs_by_position(out), noise_by_position, rule_params)
        sampled = values[:, dim_order]
        values = values.index_copy(1, dim_order, torch.where(step_of == t, v, sampled))
    outputs = _stack_forward(layers, values, *wiring)
    _, terms = _apply_rule(rule, outputs_by_position(outputs), noise_by_position, rule_params)
    return values, -terms.to(acc).sum(dim=1), outputs


def _made_sample_fake(noise, weights, biases, masks, unit_orders, push_ranges,
                      finalize_offsets, step_offsets, rule, rule_params, activation, activated,
                      skips, context_biases):
    acc = torch.float64 if noise.dtype == torch.float64 else torch.float32
    return (noise.new_empty(noise.shape), noise.new_empty(noise.shape[0], dtype=acc),
            noise.new_empty(noise.shape[0], weights[-1].shape[0]))


def outputs_per_dim(rule: str, width: int, dims: int, op: str = "made_sample") -> int:
    """The network outputs per dimension that `rule` reads from a last layer of `width`
    outputs (ValueError when the width does not fit the rule)."""
    per_dim = RULES[rule][0]
    if per_dim is None:
        per_dim = width // dims if dims and width % dims == 0 else 0
        if dims and (per_dim < 2 or (per_dim + 1) % 3):
            raise ValueError(f"{op}: rule '{rule}' needs 3·bins − 1 outputs per dimension "
                             f"(bins >= 1), got {width} outputs for {dims} dimensions")
        return per_dim
    if width != per_dim * dims:
        raise ValueError(f"{op}: the last layer must have {per_dim * dims} outputs for rule "
                         f"'{rule}', got {width}")
    return per_dim


def check_made_sample(noise, weights, biases, masks, unit_orders, push_ranges,
                      finalize_offsets, step_offsets, rule, rule_params, activation, activated,
                      skips, context_biases) -> None:
    """ValueError/TypeError for arguments of the wrong shape, dtype or device (the twin of
    csrc/made_sample.h's check). The plan's values are not read: that would be a copy to the
    host per call on a GPU, and the Triton launcher and kernel clamp every index they read."""
    op = "made_sample"
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(f"{op}: rule must be one of {', '.join(map(repr, RULES))}, got {rule!r}")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of {', '.join(map(repr, ACTIVATIONS))}, "
                         f"got {activation!r}")
    names = RULES[rule][1]
    if len(rule_params) != len(names):
        raise ValueError(f"{op}: rule '{rule}' takes {len(names)} rule_params, got "
                         f"{len(rule_params)}")
    if not all(math.isfinite(p) for p in rule_params):
        raise ValueError(f"{op}: rule_params must be finite, got {list(rule_params)}")
    if "log slope" in names and not rule_params[-1] < 0:
        raise ValueError(f"{op}: the log slope (rule_params[{len(names) - 1}]) must be negative "
                         f"(a slope in (0, 1)), got {rule_params[-1]}")
    if rule == "zuko_rqs_inverse" and not rule_params[0] > 0:
        raise ValueError(f"{op}: the spline's bound (rule_params[0]) must be positive, got "
                         f"{rule_params[0]}")
    if rule == "nflows_affine_inverse" and not rule_params[0] > 0:
        raise ValueError(f"{op}: epsilon (rule_params[0]) must be positive, got {rule_params[0]}")
    if noise.dim() != 2 or noise.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op}: noise must be a float [N, D] tensor, got {noise.dtype} "
                         f"{tuple(noise.shape)}")
    layers = len(weights)
    if layers < 1 or (len(biases), len(masks), len(push_ranges), len(unit_orders),
                      len(finalize_offsets)) != (layers,) * 3 + (layers + 1, layers - 1):
        raise ValueError(f"{op}: expected {layers} (at least 1) biases, masks and push_ranges, "
                         f"{layers + 1} unit_orders and {layers - 1} finalize_offsets")
    steps = step_offsets.shape[0] - 1 if step_offsets.dim() == 1 else -1
    index = [("step_offsets", step_offsets, (steps + 1,))]
    width = noise.shape[1]
    for l, (weight, bias, mask) in enumerate(zip(weights, biases, masks)):
        if weight.shape[1:] != (width,) or mask.shape != weight.shape:
            raise ValueError(f"{op}: weights[{l}] and masks[{l}] must be [out, {width}], got "
                             f"{tuple(weight.shape)} and {tuple(mask.shape)}")
        if bias is not None and bias.shape != weight.shape[:1]:
            raise ValueError(f"{op}: biases[{l}] must be [{weight.shape[0]}], got "
                             f"{tuple(bias.shape)}")
        for name, t in (("weights", weight), ("masks", mask), ("biases", bias)):
            if t is not None and (t.dtype != noise.dtype or t.device != noise.device):
                raise ValueError(f"{op}: {name}[{l}] must have the noise's dtype {noise.dtype} "
                                 f"and device {noise.device}, got {t.dtype} on {t.device}")
        index += [("unit_orders", unit_orders[l], (width,)),
                  ("push_ranges", push_ranges[l], (width, 2))]
        if l < layers - 1:
            index.append(("finalize_offsets", finalize_offsets[l], (steps + 2,)))
        width = weight.shape[0]
    outputs_per_dim(rule, width, noise.shape[1], op)
    index.append(("unit_orders", unit_orders[layers], (width,)))
    for name, t, shape in index:
        if t.dtype != torch.int64 or t.shape != shape or t.device != noise.device:
            raise ValueError(f"{op}: {name} must be int64 {list(shape)} on {noise.device}, got "
                             f"{t.dtype} {list(t.shape)} on {t.device}")
    if (len(activated), len(skips), len(context_biases)) != (layers - 1, layers, layers):
        raise ValueError(f"{op}: expected {layers - 1} activated flags, {layers} skips and "
                         f"{layers} context_biases, got {len(activated)}, {len(skips)} and "
                         f"{len(context_biases)}")
    for l, (k, context) in enumerate(zip(skips, context_biases)):
        if k != -1 and not (0 <= k <= l - 2 and weights[k].shape[0] == weights[l].shape[0]):
            raise ValueError(f"{op}: skips[{l}] must be -1 or a layer k <= l - 2 of the same "
                             f"width, got {k}")
        if context is not None and (
                context.shape != (noise.shape[0], weights[l].shape[0]) or
                context.dtype != noise.dtype or context.device != noise.device):
            raise ValueError(f"{op}: context_biases[{l}] must be [{noise.shape[0]}, "
                             f"{weights[l].shape[0]}] with the noise's dtype and device, got "
                             f"{context.dtype} {list(context.shape)} on {context.device}")


if _triton.VERSION is not None:
    from ..triton import made_sample as _kernels

    @torch.library.custom_op("fastflow::made_sample_triton", mutates_args=())
    def _made_sample_triton(noise: torch.Tensor, weights: list[torch.Tensor],
                            biases: list[torch.Tensor | None], masks: list[torch.Tensor],
                            unit_orders: list[torch.Tensor], push_ranges: list[torch.Tensor],
                            finalize_offsets: list[torch.Tensor], step_offsets: torch.Tensor,
                            rule: str, rule_params: list[float], activation: str,
                            activated: list[bool], skips: list[int],
                            context_biases: list[torch.Tensor | None]
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        args = (noise, weights, biases, masks, unit_orders, push_ranges, finalize_offsets,
                step_offsets, rule, rule_params, activation, activated, skips, context_biases)
        check_made_sample(*args)
        return _kernels.made_sample(noise.contiguous(), *args[1:])


def _checked_fake(*args):
    check_made_sample(*args)
    return _made_sample_fake(*args)


for _suffix in registry.KERNEL_SUFFIXES:
    torch.library.register_fake("fastflow::made_sample" + _suffix, _checked_fake)

# The C++ CPU kernel is checked against the reference loop here; no GPU kernel has run yet
# (the CUDA kernel is compiled only, the Triton kernel tested under the interpreter only),
# so only an explicit 'cuda' or 'triton' backend picks them.
OP = registry.register(registry.Op(
    name="made_sample", functions=("made_sample", "gaussian_made_sample", "iaf_inverse"),
    summary="one-pass sampling of a MADE (Bernoulli), of a MAF's Gaussian MADE, an IAF's "
            "inverse, zuko's MAF and NSF and nflows' MAF inverses (fastflow.zuko, "
            "fastflow.nflows), in about one forward pass",
    reference=sample_reference, reference_source="the D-pass sampling loops",
    check=check_made_sample, tensors=("noise",), auto={"cpu": ("cpu",), "cuda": ()},
    bench="made_sample"))


def run_made_sample(model: nn.Module, layers: list[MaskedLayer], noise: torch.Tensor, rule: str,
                    caller: str, *, rule_params: tuple[float, ...] = (), activation: str = "relu",
                    activated: list[bool] | None = None, skips: list[int] | None = None,
                    context_biases: list[torch.Tensor | None] | None = None,
                    interleaved: bool = False, masks_by_version: bool = False):
    """(values, log terms, outputs) of `model` (whose masked layers are `layers`) on `noise`
    [N, D] under `rule`, the layers wired as csrc/made_sample.h says (by default a plain
    stack: every hidden layer activated, no skips, no context). The last layer's outputs are
    the rule's k outputs of each dimension: rows d, D + d, ... of dimension d, or with
    `interleaved` rows k·d .. k·d + k − 1. The plan is cached on `model`
    (made_plan.cached_plan, masks_by_version)."""
    count = len(layers)
    activated = [True] * (count - 1) if activated is None else list(activated)
    skips = [-1] * count if skips is None else list(skips)
    context_biases = [None] * count if context_biases is None else list(context_biases)
    weight = layers[0].weight
    if not isinstance(noise, torch.Tensor):
        raise TypeError(f"{caller}: noise must be a torch.Tensor, got {type(noise).__name__}")
    if weight.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{caller}: the MADE's parameters must be float, got {weight.dtype}")
    if noise.dim() != 2 or noise.shape[1] != weight.shape[1]:
        raise ValueError(f"{caller}: expected noise of shape [N, {weight.shape[1]}], got "
                         f"{tuple(noise.shape)}")
    if not noise.is_floating_point():
        raise TypeError(f"{caller}: noise must be a float tensor, got {noise.dtype}")
    noise = noise.to(device=weight.device, dtype=weight.dtype).contiguous()
    per_dim = outputs_per_dim(rule, layers[-1].weight.shape[0], weight.shape[1], caller)
    cached = cached_plan(model, layers, per_dim, caller, interleaved, skips, masks_by_version)
    return registry.call(OP, noise, [layer.weight for layer in layers],
                         [layer.bias for layer in layers], cached.masks_as(weight.dtype),
                         *cached.plan.to(weight.device), rule, list(rule_params), activation,
                         activated, skips, context_biases)


def made_sample(made: nn.Module, num_samples: int, *, uniforms: torch.Tensor | None = None,
                generator: torch.Generator | None = None, return_logits: bool = False):
    """Samples of a Bernoulli MADE (such as the reference MADE) in about one forward pass of
    arithmetic.

    Args:
        made: fastflow.nn.MADE, the reference MADE, or any module whose `net` is an
            nn.Sequential of masked linear layers with ReLUs between them and D outputs.
        num_samples: N.
        uniforms: optional [N, D]; then x[n, d] = 1 exactly when uniforms[n, d] <
            sigmoid(logit_d), as the reference loop run on the same uniforms. Drawn with
            torch.rand (from `generator`) when not given.
        return_logits: also return the logits of the finished samples (one full forward pass
            of the model on them).

    Returns:
        (samples [N, D] in the parameters' dtype, log_likelihood [N]: log p(sample), float32
        or float64) and, with return_logits, the logits [N, D].

    The model's sampling plan is kept between calls (fastflow.ops.made_plan). On a GPU a
    mask written through `mask.data` (as set_mask does) is not seen until
    fastflow.ops.clear_sample_plans() is called; other mask changes, and any on the CPU,
    are.
    """
    caller = "made_sample"
    layers = masked_stack(made, caller)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"{caller}: num_samples must be a non-negative int, got {num_samples!r}")
    weight = layers[0].weight
    if uniforms is None:
        uniforms = torch.rand(num_samples, weight.shape[1], generator=generator,
                              device=weight.device, dtype=weight.dtype)
    elif isinstance(uniforms, torch.Tensor) and uniforms.shape[:1] != (num_samples,):
        raise ValueError(f"{caller}: expected uniforms of shape [{num_samples}, "
                         f"{weight.shape[1]}], got {tuple(uniforms.shape)}")
    samples, log_likelihood, logits = run_made_sample(made, layers, uniforms, "bernoulli", caller)
    return (samples, log_likelihood, logits) if return_logits else (samples, log_likelihood)


def gaussian_made_sample(made: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian MADE's forward in one pass: x_d = μ_d + z_d·exp(α_d), where the
    network's 2D outputs are [μ | α]. Returns (x [N, D], log_det [N] = −Σ_d α_d), as the
    reference."""
    caller = "gaussian_made_sample"
    x, log_det, _ = run_made_sample(made, masked_stack(made, caller), z, "gaussian", caller)
    return x, log_det


def iaf_inverse(made: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The slow direction of an IAF (x_d = z_d·exp(α_d) + μ_d, μ and α functions of z_<d):
    z_d = (x_d − μ_d)·exp(−α_d), with the network fed z. Returns (z, log_det = −Σ_d α_d)."""
    caller = "iaf_inverse"
    z, log_det, _ = run_made_sample(made, masked_stack(made, caller), x, "gaussian_inverse",
                                    caller)
    return z, log_det
