"""The sampling plan of a MADE (docs/design.md, "One-pass MADE/MAF sampling"), and the cache
of each model's plan.

Every unit gets a ready step: an input is ready at the step it is sampled, a hidden unit at
the largest ready step among the units its mask connects it to. The plan sorts each layer's
units by ready step and records, for each unit, the range of the next layer it is connected
to (layout: csrc/made_sample.h). It depends only on the masks (any autoregressive stack:
the MADE's random degrees, the Gaussian MADE's cyclic ones, any input order); a stack whose
masks are not autoregressive is refused with a ValueError.

A SamplePlan checks its values once, when it is made: build_plan's plans and plans made by
hand alike. The ops do not trust it either: the CPU kernel checks the values it reads on
the host, and the GPU kernels clamp every index they read from a plan, so a call costs no
copy to the host.

cached_plan keeps each model's plan with the masks it was built from, and rebuilds it when a
mask changes. On the CPU it compares the masks by value at every call; on other devices
that would make the host wait for the device, so there a mask counts as unchanged while it
is the same memory with the same version counter: in-place edits, load_state_dict and new
tensors are seen, but not writes through `mask.data` (set_mask, of the reference MADE and
of fastflow.nn's, writes so): call clear_sample_plans() after those.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from .made_model import MaskedLayer


def step_of_dimensions(dim_order: torch.Tensor, step_offsets: torch.Tensor) -> torch.Tensor:
    """The step (1..T) of each dimension, from the sampling order (unit_orders[0]) and the
    step offsets, on their device (no copy to the host)."""
    positions = torch.arange(dim_order.shape[0], device=dim_order.device)
    step_of = torch.empty_like(dim_order)
    step_of[dim_order] = torch.searchsorted(step_offsets, positions, right=True)
    return step_of


@dataclass(eq=False)
class SamplePlan:
    """Sorted positions and schedule of a masked stack (csrc/made_sample.h), int64 on the CPU:
    unit_orders (L + 1), push_ranges (L), finalize_offsets (L − 1) and step_offsets [T + 1].

    Checked when made (TypeError or ValueError naming the field): a plan the kernels could
    read out of bounds with, or that would leave some output unwritten, is refused.
    """
    unit_orders: list[torch.Tensor]
    push_ranges: list[torch.Tensor]
    finalize_offsets: list[torch.Tensor]
    step_offsets: torch.Tensor
    _on_device: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self):
        _check_plan(self)

    @property
    def steps(self) -> int:
        """The number of sampling steps T (dimensions that depend on the same earlier ones
        are sampled in the same step)."""
        return self.step_offsets.shape[0] - 1

    @property
    def step_of(self) -> torch.Tensor:
        """The step (1..T) of each dimension."""
        return step_of_dimensions(self.unit_orders[0], self.step_offsets)

    def to(self, device: torch.device) -> tuple:
        """(unit_orders, push_ranges, finalize_offsets, step_offsets) on `device`, copied
        there once."""
        if device not in self._on_device:
            move = lambda ts: [t.to(device) for t in ts]  # noqa: E731
            self._on_device[device] = (move(self.unit_orders), move(self.push_ranges),
                                       move(self.finalize_offsets), self.step_offsets.to(device))
        return self._on_device[device]


def _check_index_tensor(name: str, t, shape: tuple) -> None:
    """TypeError or ValueError unless t is an int64 tensor on the CPU of this shape (None: any
    size)."""
    if not (isinstance(t, torch.Tensor) and t.dtype == torch.int64 and t.device.type == "cpu"):
        got = f"{t.dtype} on {t.device}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(f"SamplePlan: {name} must be an int64 tensor on the CPU, got {got}")
    if t.dim() != len(shape) or any(n is not None and n != m for n, m in zip(shape, t.shape)):
        expected = ", ".join("any" if n is None else str(n) for n in shape)
        raise ValueError(f"SamplePlan: {name} must have shape [{expected}], got {list(t.shape)}")


def _require(ok, what: str) -> None:
    if not ok:
        raise ValueError(f"SamplePlan: {what}")


def _check_plan(plan: SamplePlan) -> None:
    layers = len(plan.push_ranges)
    _require(layers >= 1 and (len(plan.unit_orders), len(plan.finalize_offsets)) ==
             (layers + 1, layers - 1),
             f"expected L >= 1 push_ranges, L + 1 unit_orders and L - 1 finalize_offsets, got "
             f"{layers}, {len(plan.unit_orders)} and {len(plan.finalize_offsets)}")
    widths = []
    for l, order in enumerate(plan.unit_orders):
        _check_index_tensor(f"unit_orders[{l}]", order, (None,))
        widths.append(order.shape[0])
        _require(torch.equal(order.sort().values, torch.arange(widths[l])),
                 f"unit_orders[{l}] must be a permutation of 0..{widths[l] - 1}")
    offsets = plan.step_offsets
    _check_index_tensor("step_offsets", offsets, (None,))
    _require(offsets.shape[0] >= 1 and offsets[0] == 0 and offsets[-1] == widths[0] and
             (offsets.diff() >= 0).all(),
             f"step_offsets must run non-decreasing from 0 to D = {widths[0]}")
    for l, ranges in enumerate(plan.push_ranges):
        _check_index_tensor(f"push_ranges[{l}]", ranges, (widths[l], 2))
        _require(((ranges >= 0) & (ranges <= widths[l + 1])).all() and
                 (ranges[:, 0] <= ranges[:, 1]).all(),
                 f"push_ranges[{l}] must hold ranges within [0, {widths[l + 1]}]")
    for l, offsets in enumerate(plan.finalize_offsets):
        _check_index_tensor(f"finalize_offsets[{l}]", offsets, (plan.steps + 2,))
        _require(offsets[0] == 0 and offsets[-1] <= widths[l + 1] and (offsets.diff() >= 0).all(),
                 f"finalize_offsets[{l}] must run non-decreasing from 0 to at most "
                 f"{widths[l + 1]}")


def _sampling_steps(depends: np.ndarray, caller: str) -> np.ndarray:
    """Step (1..T) of each dimension: 1 + the largest step among the dimensions it depends
    on (Kahn's algorithm, one level at a time). ValueError when there is none (a cycle)."""
    dims = depends.shape[0]
    unresolved = depends.sum(axis=1).astype(np.int64)
    step = np.zeros(dims, dtype=np.int64)
    frontier = np.flatnonzero(unresolved == 0)
    t = 0
    while frontier.size:
        t += 1
        step[frontier] = t
        unresolved -= depends[:, frontier].sum(axis=1)
        unresolved[frontier] = -1
        frontier = np.flatnonzero(unresolved == 0)
    if (step == 0).any():
        stuck = np.flatnonzero(step == 0)
        own = stuck[depends[stuck, stuck]]
        why = (f"the output of dimension {int(own[0])} depends on input {int(own[0])}" if own.size
               else f"dimensions {stuck[:5].tolist()} depend on each other in a cycle")
        raise ValueError(f"{caller}: the masks are not autoregressive: {why} (through the masks)")
    return step


def _ranges(connected: torch.Tensor) -> torch.Tensor:
    """[inputs, 2]: the first and one past the last connected output position of each input
    column of a bool [outputs, inputs] matrix ((0, 0) for a column connected to nothing)."""
    outputs = connected.shape[0]
    any_ = connected.any(dim=0)
    first = connected.int().argmax(dim=0)
    last = outputs - connected.flip(0).int().argmax(dim=0)
    return torch.stack([torch.where(any_, first, 0), torch.where(any_, last, 0)], dim=1).long()


def build_plan(masks: list[torch.Tensor], per_dim: int, caller: str = "made_sample",
               interleaved: bool = False, skips: list[int] | None = None) -> SamplePlan:
    """The sampling plan of a chain of layers with these masks ([out, in] each, nonzero =
    connected) and residual skips (skips[l] = k: layer l adds layer k's outputs, unit by
    unit; -1: none); the last layer has per_dim outputs per dimension: the units of
    dimension d are rows d, D + d, ... (blocked, the seeds' MADEs), or with `interleaved` rows
    per_dim·d, ..., per_dim·d + per_dim − 1 (zuko's and nflows')."""
    connected = [m.detach().cpu() != 0 for m in masks]
    skips = [-1] * len(masks) if skips is None else skips
    dims = connected[0].shape[1]
    if connected[-1].shape[0] != per_dim * dims:
        raise ValueError(f"{caller}: the last layer must have {per_dim * dims} outputs "
                         f"({per_dim} per input dimension), got {connected[-1].shape[0]}")
    reaches = [connected[0].float()]  # reaches[l][j, k]: unit j of layer l depends on input k
    for l, m in enumerate(connected[1:], start=1):
        reach = m.float() @ reaches[-1]
        if skips[l] >= 0:
            reach += reaches[skips[l]]
        reaches.append(reach.clamp_(max=1.0))
    reach = reaches[-1]
    by_unit = reach.view(dims, per_dim, dims).transpose(0, 1) if interleaved else \
        reach.view(per_dim, dims, dims)
    depends = (by_unit.amax(dim=0) > 0).numpy()
    step_of = torch.from_numpy(_sampling_steps(depends, caller))
    steps = int(step_of.max()) if dims else 0

    dim_order = torch.sort(step_of, stable=True).indices
    step_offsets = torch.searchsorted(step_of[dim_order], torch.arange(steps + 1), right=True)
    unit_orders, finalize_offsets = [dim_order], []
    readies = [step_of]  # of each layer's inputs: the dimensions', then each layer's units'
    for l, m in enumerate(connected[:-1]):
        ready = (m.long() * readies[-1][None, :]).amax(dim=1) if m.shape[1] else \
            torch.zeros(m.shape[0], dtype=torch.long)
        if skips[l] >= 0:
            ready = torch.maximum(ready, readies[skips[l] + 1])
        readies.append(ready)
        order = torch.sort(ready, stable=True).indices
        unit_orders.append(order)
        finalize_offsets.append(torch.searchsorted(ready[order], torch.arange(steps + 2)))
    units = dim_order[:, None] * per_dim + torch.arange(per_dim) if interleaved else \
        dim_order[:, None] + dims * torch.arange(per_dim)
    unit_orders.append(units.reshape(-1))
    push_ranges = [_ranges(m[unit_orders[l + 1]][:, unit_orders[l]])
                   for l, m in enumerate(connected)]
    return SamplePlan(unit_orders, push_ranges, finalize_offsets, step_offsets)


# Device types on which the plan cache compares the masks by value: free on the CPU, and it
# sees writes through `mask.data`. Elsewhere it compares memory and version counters.
MASKS_COMPARED_BY_VALUE_ON = frozenset({"cpu"})


def _mask_key(mask: torch.Tensor, by_version: bool) -> tuple | None:
    """What identifies a mask's contents without reading them, or None where the cache must
    compare values (on a device in MASKS_COMPARED_BY_VALUE_ON unless `by_version`, and for
    inference tensors, which have no version counter)."""
    if (mask.device.type in MASKS_COMPARED_BY_VALUE_ON and not by_version) or mask.is_inference():
        return None
    return (mask.data_ptr(), mask._version, mask.shape, mask.stride(), mask.dtype, mask.device)


class CachedPlan:
    """A model's plan and the masks it was built from (held, so that their memory is not
    another tensor's while cached; copies where compared by value)."""

    def __init__(self, masks: list[torch.Tensor], layout: tuple, plan: SamplePlan,
                 by_version: bool):
        keys = [_mask_key(m, by_version) for m in masks]
        self._by_version = by_version
        self._masks = [m if key is not None else m.clone() for m, key in zip(masks, keys)]
        self._keys = keys
        self._in_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        self.layout = layout
        self.plan = plan

    def holds(self, masks: list[torch.Tensor], layout: tuple) -> bool:
        """Whether `masks` are the masks this plan was built from, with this layout (outputs
        per dimension, interleaved, skips)."""
        if layout != self.layout or len(masks) != len(self._masks):
            return False
        for mask, held, key in zip(masks, self._masks, self._keys):
            if key is None:
                if not (mask.shape == held.shape and mask.device == held.device and
                        torch.equal(mask, held)):
                    return False
            elif _mask_key(mask, self._by_version) != key:
                return False
        return True

    def masks_as(self, dtype: torch.dtype) -> list[torch.Tensor]:
        """The masks in `dtype`, converted once: the same tensors at every call, which the CPU
        kernel's cache of packed weights recognises."""
        if dtype not in self._in_dtype:
            self._in_dtype[dtype] = [m.to(dtype) for m in self._masks]
        return self._in_dtype[dtype]


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached_plan(model: nn.Module, layers: list[MaskedLayer], per_dim: int, caller: str,
                interleaved: bool = False, skips: list[int] | None = None,
                masks_by_version: bool = False) -> CachedPlan:
    """The model's plan, rebuilt when a mask changes (module docstring). masks_by_version:
    match masks by memory and version counter on the CPU too (for models that never write
    their masks through `.data`, such as zuko's and nflows': comparing values costs about as
    much as the sampling of a small model)."""
    masks = [layer.mask for layer in layers]
    skips = [-1] * len(layers) if skips is None else list(skips)
    layout = (per_dim, interleaved, tuple(skips), masks_by_version)
    cached = _PLANS.get(model)
    if cached is None or not cached.holds(masks, layout):
        cached = CachedPlan(masks, layout, build_plan(masks, per_dim, caller, interleaved, skips),
                            masks_by_version)
        _PLANS[model] = cached
    return cached


def clear_sample_plans() -> None:
    """Drops every model's cached sampling plan. Needed after writing a mask through
    `mask.data` on a GPU (set_mask does), which the cache does not see there; on the CPU it
    compares the masks by value and sees every change."""
    _PLANS.clear()
