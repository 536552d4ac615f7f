"""How fastflow judges a result: against the reference computed in float64 on the same
inputs (same weights, same noise), the truth as far as it can be computed.

A result passes when its error against the float64 truth is at most
max(the dtype's tolerance, 2 × the error of the reference itself run in that dtype) —
flash-attention's rule: a kernel may be as inexact as the reference it replaces (twice, for
a different summation order), never worse, and never judged against a less accurate
reference. The error is the largest absolute difference relative to the truth's largest
magnitude; for a truth that is zero up to float64's rounding (a conv bias in front of a
train-mode BatchNorm has no gradient: its float64 gradient is rounding noise, below
NEGLIGIBLE times the model's largest) it is relative to a scale the caller gives (its
model's largest gradient).
The tests (tests/utils.py) and the benchmark's check (fastflow.bench) both use this.
"""

from __future__ import annotations

import copy
import math

import torch

# Relative error every result may have in its dtype, whatever the reference's error.
TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}


# A float64 truth this much smaller than the scale of its whole (the model's largest
# gradient) is zero but for rounding.
NEGLIGIBLE = 1e-10


def relative_error(got: torch.Tensor, truth: torch.Tensor, scale: float | None = None) -> float:
    """max |got − truth| / max |truth|, or / scale (the scale of the whole truth belongs to)
    when max |truth| is below NEGLIGIBLE times it; 0 for empty tensors, inf for a NaN or
    inf where truth is finite, or for shapes that differ."""
    if got.shape != truth.shape:
        return math.inf
    if truth.numel() == 0:
        return 0.0
    diff = (got.detach().double() - truth.detach().double()).abs()
    diff = torch.where(torch.isnan(got.detach()) & torch.isnan(truth.detach()), 0.0, diff)
    largest = diff.max().item()
    if math.isnan(largest):
        return math.inf
    own = truth.detach().double().abs().max().item()
    if scale is None or own > NEGLIGIBLE * scale:
        scale = own
    return largest / scale if scale > 0 else (0.0 if largest == 0 else math.inf)


def float64_copy(value):
    """The float64 twin the truth is computed on: a module's deep copy (its parameters and
    buffers as they are now), a floating tensor's detached copy (keeping requires_grad);
    anything else as it is."""
    if isinstance(value, torch.nn.Module):
        return copy.deepcopy(value).double()
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().double().requires_grad_(value.requires_grad)
    return value


def perturbed(values, generator: torch.Generator) -> tuple:
    """values with each floating tensor moved by about one rounding of its dtype,
    v·(1 + ε·N(0, 1)) (anything else as it is). The reference's error on one draw is a
    lottery ticket where its result is ill-conditioned (a sum whose terms cancel, a ReLU
    input within rounding of zero): its largest error over runs on perturbed inputs
    measures what rounding alone does to that result."""
    def move(v):
        if not (isinstance(v, torch.Tensor) and v.is_floating_point()):
            return v
        noise = torch.randn(v.shape, generator=generator).to(device=v.device, dtype=v.dtype)
        return v + v * torch.finfo(v.dtype).eps * noise
    return tuple(move(v) for v in values)


def least_accurate(runs, truth: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """The run (of the reference, e.g. on perturbed inputs) furthest from the float64 truth
    by relative_error: the error to allow a result twice of."""
    return max(runs, key=lambda run: relative_error(run, truth, scale))


def allowed_error(dtype: torch.dtype, reference_error: float = 0.0) -> float:
    return max(TOLERANCE[dtype], 2.0 * reference_error)


def mismatch(got: torch.Tensor, truth: torch.Tensor, *, reference: torch.Tensor | None = None,
             dtype: torch.dtype | None = None, scale: float | None = None) -> str | None:
    """Why `got` is not close enough to the float64 `truth`, or None. `reference`: the
    reference's own result in got's dtype, whose error widens the allowance; `dtype`: whose
    tolerance applies (default got's); `scale`: the scale of the whole truth belongs to, for
    a truth that is zero but for rounding."""
    dtype = dtype or got.dtype
    error = relative_error(got, truth, scale)
    reference_error = relative_error(reference, truth, scale) if reference is not None else 0.0
    allowed = allowed_error(dtype, reference_error)
    if error <= allowed:
        return None
    return (f"error {error:.3g} against float64 > allowed {allowed:.3g} (max of the {dtype} "
            f"tolerance {TOLERANCE[dtype]:.0e} and 2x the reference's own error {reference_error:.3g})")
