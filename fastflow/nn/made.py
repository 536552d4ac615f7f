"""The MADE on the fused masked linear: drop-ins for fastflow.reference.made's
MaskedLinear and MADE (same constructor arguments, numpy RNG draws, state_dict keys and
results).

Each layer runs fastflow.ops.degree_masked_linear when its mask has MADE degrees (always,
for masks MADE builds, and for masks loaded from a reference model), skipping the all-zero
weight tiles, and fastflow.ops.masked_linear for any other 0/1 mask. The degrees are read
from the mask itself, once per mask change, so set_mask, load_state_dict and in-place
edits of the buffer are all followed. Parameters, buffers and outputs stay in the user's
unit order.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import reference
from ..backend import get_backend
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


def check_zero_one(mask: torch.Tensor, name: str) -> None:
    if not bool(((mask == 0) | (mask == 1)).all()):
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


class MADE(reference.made.MADE):
    """The MADE, MADE(input_dim, hidden_dims, output_dim), on fused MaskedLinear layers."""

    masked_linear = MaskedLinear
