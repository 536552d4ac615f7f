"""Seed 003's Gaussian MADE and MAF on the fused masked linear: drop-ins for
fastflow.reference.maf's MaskedLinear, MADE and MAF (same constructor arguments, masks,
state_dict keys and results). See fastflow.nn.made for how each layer picks its kernel."""

from __future__ import annotations

import torch

from .. import reference
from .made import FusedMaskedForward, check_zero_one


class MaskedLinear(FusedMaskedForward, reference.maf.MaskedLinear):
    """Seed 003's MaskedLinear(input_size, output_size, mask): the mask [output_size,
    input_size] must hold only 0 and 1 (ValueError otherwise)."""

    def __init__(self, input_size, output_size, mask):
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"MaskedLinear: mask must be a tensor, got {type(mask).__name__}")
        if tuple(mask.shape) != (output_size, input_size):
            raise ValueError(f"MaskedLinear: mask must have shape ({output_size}, {input_size}), "
                             f"got {tuple(mask.shape)}")
        check_zero_one(mask, "mask")
        super().__init__(input_size, output_size, mask)
        self._follow_mask()


class MADE(reference.maf.MADE):
    """Seed 003's Gaussian MADE (forward: sequential sampling; inverse: one pass)."""

    masked_linear = MaskedLinear


class MAF(reference.maf.MAF):
    """Seed 003's MAF built from fused Gaussian MADE blocks."""

    made = MADE
