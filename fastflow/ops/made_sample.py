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

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import triton as _triton
from . import registry
from ._checks import FLOAT_DTYPES
from .made_model import MaskedLayer, masked_stack
from .made_plan import cached_plan, step_of_dimensions

# The sampling rules, the ops' `rule` (csrc/made_sample.h says what each does), and the
# network outputs each reads per dimension.
OUTPUTS_PER_DIM = {"bernoulli": 1, "gaussian": 2, "gaussian_inverse": 2}

def _stack_forward(layers: list[MaskedLayer], x: torch.Tensor) -> torch.Tensor:
    for index, layer in enumerate(layers):
        if index:
            x = torch.relu(x)
        x = F.linear(x, layer.mask * layer.weight, layer.bias)
    return x


def _log_terms(rule: str, outputs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """log p(values | logits) for Bernoulli; −Σ α for the Gaussian rules (the Gaussian
    MADE's log_det)."""
    acc = torch.float64 if values.dtype == torch.float64 else torch.float32
    if rule == "bernoulli":
        return -F.binary_cross_entropy_with_logits(outputs.to(acc), values.to(acc),
                                                   reduction="none").sum(dim=1)
    return -outputs.chunk(2, dim=1)[1].to(acc).sum(dim=1)


def _sampled(rule: str, out: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Every dimension's value under `rule` from the network's outputs `out` [N, k·D]."""
    dims = noise.shape[1]
    if rule == "bernoulli":
        return (noise < torch.sigmoid(out)).to(noise.dtype)
    mu, alpha = out[:, :dims], out[:, dims:]
    if rule == "gaussian":
        return mu + noise * torch.exp(alpha)
    return (noise - mu) * torch.exp(-alpha)


@torch.no_grad()
def sample_reference(noise, weights, biases, masks, unit_orders, push_ranges, finalize_offsets,
                     step_offsets, rule):
    """The reference algorithm (the 'torch' backend), on the op's arguments: one full
    forward pass per sampling step, as the MADE's generate_samples and the Gaussian MADE's
    forward, in the plan's order. Each step's dimensions are chosen on the device (no copy
    to the host)."""
    layers = [MaskedLayer(w, b, m) for w, b, m in zip(weights, biases, masks)]
    step_of = step_of_dimensions(unit_orders[0], step_offsets)
    values = torch.zeros_like(noise)
    for t in range(1, step_offsets.shape[0]):
        values = torch.where(step_of == t, _sampled(rule, _stack_forward(layers, values), noise),
                             values)
    outputs = _stack_forward(layers, values)
    return values, _log_terms(rule, outputs, values), outputs


def _made_sample_fake(noise, weights, biases, masks, unit_orders, push_ranges,
                      finalize_offsets, step_offsets, rule):
    acc = torch.float64 if noise.dtype == torch.float64 else torch.float32
    return (noise.new_empty(noise.shape), noise.new_empty(noise.shape[0], dtype=acc),
            noise.new_empty(noise.shape[0], weights[-1].shape[0]))




def check_made_sample(noise, weights, biases, masks, unit_orders, push_ranges,
                      finalize_offsets, step_offsets, rule) -> None:
    """ValueError/TypeError for arguments of the wrong shape, dtype or device (the twin of
    csrc/made_sample.h's check). The plan's values are not read: that would be a copy to the
    host per call on a GPU, and the Triton launcher and kernel clamp every index they read."""
    op = "made_sample"
    if not isinstance(rule, str) or rule not in OUTPUTS_PER_DIM:
        raise ValueError(f"{op}: rule must be one of {', '.join(map(repr, OUTPUTS_PER_DIM))}, "
                         f"got {rule!r}")
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
    if width != OUTPUTS_PER_DIM[rule] * noise.shape[1]:
        raise ValueError(f"{op}: the last layer must have {OUTPUTS_PER_DIM[rule]} outputs per "
                         f"dimension for rule {rule!r}, got {width}")
    index.append(("unit_orders", unit_orders[layers], (width,)))
    for name, t, shape in index:
        if t.dtype != torch.int64 or t.shape != shape or t.device != noise.device:
            raise ValueError(f"{op}: {name} must be int64 {list(shape)} on {noise.device}, got "
                             f"{t.dtype} {list(t.shape)} on {t.device}")


if _triton.VERSION is not None:
    from ..triton import made_sample as _kernels

    @torch.library.custom_op("fastflow::made_sample_triton", mutates_args=())
    def _made_sample_triton(noise: torch.Tensor, weights: list[torch.Tensor],
                            biases: list[torch.Tensor | None], masks: list[torch.Tensor],
                            unit_orders: list[torch.Tensor], push_ranges: list[torch.Tensor],
                            finalize_offsets: list[torch.Tensor], step_offsets: torch.Tensor,
                            rule: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_made_sample(noise, weights, biases, masks, unit_orders, push_ranges,
                          finalize_offsets, step_offsets, rule)
        return _kernels.made_sample(noise.contiguous(), weights, biases, masks, unit_orders,
                                    push_ranges, finalize_offsets, step_offsets, rule)


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
    summary="one-pass sampling of a MADE (Bernoulli), of a MAF's Gaussian MADE, and an IAF's "
            "inverse, in about one forward pass",
    reference=sample_reference, reference_source="the D-pass sampling loops",
    check=check_made_sample, tensors=("noise",), auto={"cpu": ("cpu",), "cuda": ()},
    bench="made_sample"))


def run_made_sample(model: nn.Module, layers: list[MaskedLayer], noise: torch.Tensor, rule: str,
                    caller: str):
    """(values, log terms, outputs) of `model` (whose masked_stack is `layers`) on `noise`
    [N, D] under `rule`."""
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
    cached = cached_plan(model, layers, OUTPUTS_PER_DIM[rule], caller)
    return registry.call(OP, noise, [layer.weight for layer in layers],
                         [layer.bias for layer in layers], cached.masks_as(weight.dtype),
                         *cached.plan.to(weight.device), rule)


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
