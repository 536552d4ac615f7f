"""The MADE on the fused masked linear: drop-ins for fastflow.reference.made's
MaskedLinear and MADE (same constructor arguments, numpy RNG draws, state_dict keys and
results).

The MADE's `net` is a MaskedMLP: the reference's nn.Sequential (same module names and keys)
that runs its layers as one fastflow.ops.made_mlp call, hidden units in degree order, where
that is faster (measured per shape class under 'auto'), and layer by layer otherwise. The
2-D RealNVP's s/t network (plain nn.Linear layers) is one too.

Each layer runs fastflow.ops.degree_masked_linear when its mask has MADE degrees (always,
for masks MADE builds, and for masks loaded from a reference model), skipping the all-zero
weight tiles, and fastflow.ops.masked_linear for any other 0/1 mask. The degrees are read
from the mask itself, once per mask change, so set_mask, load_state_dict and in-place
edits of the buffer are all followed. Parameters, buffers and outputs stay in the user's
unit order.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import autotune, reference
from .._extension import EXTENSION
from ..backend import get_backend
from ..ops.made_mlp import reference_layers, staircases
from ..ops.masked_linear import (check_degree_masked_linear, check_masked_linear,
                                 degree_masked_linear, degree_masked_linear_backend,
                                 degrees_from_mask, masked_linear, masked_linear_backend)


class FusedMaskedForward:
    """forward(x) of an nn.Linear with a `mask` buffer through the fused ops (a mixin).

    Under 'auto', where the shape class's measured choice (fastflow.autotune) is the
    reference, forward is the reference's own F.linear(x, mask * weight, bias), with no
    argument checks or degree lookups around it: at small sizes those would cost more than
    the layer. The choice is looked up again when the batch size, dtype, device, grad mode
    or thread count changes."""

    _mask_key = None
    _mask_degrees = None
    _path_key = None
    _path_is_reference = False

    def _degrees(self):
        """The mask's degrees (None when it has none), recomputed when the mask changes.

        A change is seen through the buffer's version counter: in-place edits and
        load_state_dict are followed, but not writes through `mask.data` (use set_mask).
        Under torch.compile the degrees cached at construction, set_mask or load_state_dict
        are used (the check is data-dependent): after editing a mask in place, run the layer
        once eagerly before compiling."""
        mask = self.mask
        if torch.compiler.is_compiling():
            if self._mask_degrees is None:
                return None
            return tuple(d.to(mask.device) for d in self._mask_degrees)
        key = (mask.data_ptr(), mask._version, mask.device, mask.shape)
        if key != self._mask_key:
            check_zero_one(mask, "mask")
            self._mask_degrees = degrees_from_mask(mask)
            self._mask_key = key
        return self._mask_degrees

    def _follow_mask(self):
        """Reads the degrees now, and after every load_state_dict (called from __init__)."""
        self._degrees()
        self.register_load_state_dict_post_hook(_reread_degrees)

    def forward(self, x):
        if (type(x) is torch.Tensor and x.ndim == 2 and get_backend() == "auto"
                and not torch.compiler.is_compiling()):
            key = (x.shape[0], x.dtype, x.is_cpu, torch.is_grad_enabled(), x.requires_grad,
                   torch.get_num_threads())
            if key != self._path_key:
                self._path_is_reference = self._fused_backend(x) == "torch"
                self._path_key = key
            if self._path_is_reference:
                return F.linear(x, self.mask * self.weight, self.bias)
        return self._fused_forward(x)

    def _fused_backend(self, x) -> str:
        """The backend the fused forward would run x on (measured on first use)."""
        degrees = self._degrees()
        if degrees is None:
            mask = self.mask.to(x.dtype)
            check_masked_linear(x, self.weight, mask, self.bias)
            return masked_linear_backend(x, self.weight, mask, self.bias)
        check_degree_masked_linear(x, self.weight, *degrees, self.bias)
        return degree_masked_linear_backend(x, self.weight, *degrees, self.bias)

    def _fused_forward(self, x):
        degrees = self._degrees()
        if degrees is None:
            return masked_linear(x, self.weight, self.mask, self.bias)
        return degree_masked_linear(x, self.weight, *degrees, self.bias)


def _reread_degrees(module, incompatible_keys) -> None:
    module._degrees()


def is_zero_one(mask: torch.Tensor) -> bool:
    return bool(((mask == 0) | (mask == 1)).all())


def check_zero_one(mask: torch.Tensor, name: str) -> None:
    if not is_zero_one(mask):
        raise ValueError(f"MaskedLinear: {name} must hold only 0 and 1")


class MaskedLinear(FusedMaskedForward, reference.made.MaskedLinear):
    """The MADE's MaskedLinear (an nn.Linear with a `mask` buffer of ones); set_mask takes
    a numpy array (or a tensor) of shape [out_features, in_features] holding only 0 and 1
    (or True and False) and refuses anything else with a ValueError."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__(in_features, out_features, bias)
        self._follow_mask()

    def set_mask(self, mask):
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"MaskedLinear.set_mask: mask must be a numpy array or a tensor, "
                            f"got {type(mask).__name__}")
        if mask.shape != tuple(self.mask.shape):
            raise ValueError(f"MaskedLinear.set_mask: mask must have shape "
                             f"{tuple(self.mask.shape)}, got {mask.shape}")
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("MaskedLinear.set_mask: mask must hold only 0 and 1")
        super().set_mask(mask)
        self._mask_key = None  # the reference copies through .data: no version counter bump
        self._degrees()


class MaskedMLP(nn.Sequential):
    """An MLP of linear layers with nn.ReLU between, masked (FusedMaskedForward: a MADE's
    `net`) or plain nn.Linear (a full mask: the 2-D RealNVP's s/t network), as the reference
    builds it (same module names, state_dict keys and results), run as one
    fastflow.ops.made_mlp call where that is faster, and layer by layer otherwise.

    The fused call runs on CPU tensors of the layers' dtype under 'auto' (where measured
    faster than the reference's layers, per shape class: fastflow.autotune) and 'cpu', when
    every mask has MADE degrees that sort together and no module has hooks; where 'auto'
    keeps the reference, the reference's layer math runs without the module calls around it.
    Otherwise (other backends, torch.compile, hooks, masks without degrees) the modules run
    one by one, each layer choosing its own kernel. The plan follows the masks as the layers
    do (set_mask, load_state_dict, in-place edits)."""

    _modules_seen = ()
    _layers = None       # the masked layers, when the modules have the MADE pattern
    _masks_seen = None   # per layer: (mask, its data_ptr, its version, the layer's degrees)
    _plan = None
    _path_key = None
    _path_fused = False

    @classmethod
    def wrap(cls, net: nn.Sequential) -> "MaskedMLP":
        """The same modules under the same names, as a MaskedMLP."""
        return cls(OrderedDict(net.named_children()))

    def forward(self, x):
        backend = get_backend()
        found = self._fusable_layers(x, backend)
        plan = None if found is None else self._staircases(found[0])
        if plan is None:
            return super().forward(x)
        layers, weights, biases = found
        if backend == "cpu" or self._fused_is_faster(x, weights, biases, plan):
            return torch.ops.fastflow.made_mlp(x, weights, biases, plan, False)[0]
        # The reference's own layers, computed as its modules do, without their calls.
        return reference_layers(x, [m._buffers.get("mask") for m in layers], weights, biases)

    # Every call runs _fusable_layers and _staircases, so they read the modules' dicts
    # directly (nn.Module.__getattr__ costs about a microsecond a parameter): a small MADE's
    # layer takes only microseconds, and Python's work between its tensor operations runs
    # slower than alone (timed in a Gaussian MADE's forward, the checks cost about twice
    # their time in a loop of their own).
    def _fusable_layers(self, x, backend):
        """(the masked layers, their weights, their biases) when the fused op can run x
        through this net, else None."""
        if (type(x) is not torch.Tensor or x.dim() != 2 or not x.is_cpu or not _EXTENSION_LOADED
                or backend not in ("auto", "cpu") or torch.compiler.is_compiling()
                or _global_forward_hooks or _global_forward_pre_hooks):
            return None
        modules = tuple(self._modules.values())
        if modules != self._modules_seen:
            self._modules_seen, self._layers = modules, _made_layers(modules)
            self._masks_seen = None  # new layers: a new plan
        layers = self._layers
        if layers is None:
            return None
        for m in modules:
            if m._forward_hooks or m._forward_pre_hooks:
                return None
        dtype = x.dtype
        weights, biases = [], []
        for m in layers:
            parameters = m._parameters
            weight = parameters["weight"]
            if weight.dtype != dtype or not weight.is_cpu:
                return None
            weights.append(weight)
            biases.append(parameters["bias"])
        if weights[0].shape[1] != x.shape[1]:
            return None
        return layers, weights, biases

    def _staircases(self, layers):
        """made_mlp's plan, rebuilt when a layer's mask or degrees change (a new mask tensor,
        new data or an in-place edit, set_mask, load_state_dict)."""
        seen = self._masks_seen
        if seen is not None:
            for m, (mask, data, version, degrees) in zip(layers, seen):
                now = m._buffers.get("mask")
                if now is not mask or (now is not None and (
                        now._version != version or now.data_ptr() != data
                        or m._mask_degrees is not degrees)):
                    seen = None
                    break
        if seen is None:
            self._plan = staircases([_degrees(m) for m in layers])
            self._masks_seen = [(None, 0, 0, None) if type(m) is nn.Linear else
                                (m.mask, m.mask.data_ptr(), m.mask._version, m._mask_degrees)
                                for m in layers]
        return self._plan

    def _fused_is_faster(self, x, weights, biases, plan) -> bool:
        """Under 'auto': whether made_mlp was measured faster for x's shape class."""
        key = (x.shape[0], x.dtype, torch.is_grad_enabled(), x.requires_grad,
               weights[0].requires_grad, torch.get_num_threads())
        if key != self._path_key:
            masks = [m._buffers.get("mask") for m in self._layers]
            self._path_fused = self._measure(x, masks, weights, biases, plan) == "cpu"
            self._path_key = key
        return self._path_fused

    @staticmethod
    def _measure(x, masks, weights, biases, plan) -> str:
        """fastflow.autotune's choice for this shape class: 'cpu' (made_mlp) or 'torch' (the
        reference's layers)."""
        grad = autotune.wants_grad((x, weights, biases))

        def reference_net(x, weights, biases):
            return reference_layers(x, masks, weights, biases)

        def fused(x, weights, biases):
            return torch.ops.fastflow.made_mlp(x, weights, biases, plan, False)[0]

        sizes = "-".join(str(n) for n in [x.shape[1], *(w.shape[0] for w in weights)])
        args = (x, weights, biases)
        return autotune.decide(autotune.shape_class("made_mlp", x, sizes, grad=grad), lambda: {
            "torch": autotune.timed_call(reference_net, args, grad),
            "cpu": autotune.timed_call(fused, args, grad)})


# Read on every call of MaskedMLP (the dicts are mutated in place, never replaced).
_global_forward_hooks = nn.modules.module._global_forward_hooks
_global_forward_pre_hooks = nn.modules.module._global_forward_pre_hooks
_EXTENSION_LOADED = EXTENSION.loaded


def _made_layers(modules):
    """The linear layers of Linear, ReLU, ..., Linear (each a FusedMaskedForward or a plain
    nn.Linear), or None."""
    layers = modules[0::2]
    if (len(modules) % 2 == 0
            or not all(isinstance(m, FusedMaskedForward) or type(m) is nn.Linear for m in layers)
            or not all(type(m) is nn.ReLU for m in modules[1::2])):
        return None
    return layers


def _degrees(layer):
    """The layer's mask degrees (degrees_from_mask's); a plain nn.Linear's full mask has all
    degrees 0."""
    if type(layer) is nn.Linear:
        out_features, in_features = layer.weight.shape
        return (torch.zeros(in_features, dtype=torch.long), torch.zeros(out_features, dtype=torch.long))
    return layer._degrees()


class MADE(reference.made.MADE):
    """The MADE, MADE(input_dim, hidden_dims, output_dim), on fused MaskedLinear layers, its
    `net` a MaskedMLP."""

    masked_linear = MaskedLinear

    def __init__(self, input_dim, hidden_dims, output_dim):
        super().__init__(input_dim, hidden_dims, output_dim)
        self.net = MaskedMLP.wrap(self.net)
