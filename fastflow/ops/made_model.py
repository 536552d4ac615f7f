"""Reading a MADE for one-pass sampling (fastflow.ops.made_sample): its masked linear layers.

Any stack of masked linear layers with ReLUs between them is accepted (the MADE and the
Gaussian MADE, in fastflow.reference and fastflow.nn); the layers' tensors are read, never
copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class MaskedLayer:
    """One masked linear layer of a stack: y = x·(weight⊙mask)ᵀ + bias."""
    weight: torch.Tensor
    bias: torch.Tensor | None
    mask: torch.Tensor


def masked_stack(model: nn.Module, caller: str) -> list[MaskedLayer]:
    """The masked linear layers of a MADE: `model.net` (or the model itself) must be an
    nn.Sequential of layers that have `weight`, `bias` and a `mask` of the weight's shape,
    with an nn.ReLU between each two (the MADE and the Gaussian MADE, in fastflow.reference
    and fastflow.nn)."""
    net = getattr(model, "net", model)
    if not isinstance(net, nn.Sequential):
        raise TypeError(f"{caller}: expected a MADE (a module whose `net` is an nn.Sequential of "
                        f"masked linear layers and ReLUs), got {type(model).__name__}")
    layers, expect_layer = [], True
    for index, module in enumerate(net):
        if expect_layer:
            weight, mask = getattr(module, "weight", None), getattr(module, "mask", None)
            if not (isinstance(weight, torch.Tensor) and isinstance(mask, torch.Tensor)
                    and weight.dim() == 2 and mask.shape == weight.shape):
                raise TypeError(f"{caller}: module {index} of the MADE's net must be a masked "
                                f"linear layer (weight and a mask of its shape), got "
                                f"{type(module).__name__}")
            if layers and weight.shape[1] != layers[-1].weight.shape[0]:
                raise ValueError(f"{caller}: layer {index} takes {weight.shape[1]} inputs, the "
                                 f"layer before gives {layers[-1].weight.shape[0]}")
            layers.append(MaskedLayer(weight.detach(), None if module.bias is None
                                      else module.bias.detach(), mask.detach()))
        elif not isinstance(module, nn.ReLU):
            raise TypeError(f"{caller}: module {index} of the MADE's net must be an nn.ReLU "
                            f"between masked linear layers, got {type(module).__name__}")
        expect_layer = not expect_layer
    if not layers or expect_layer:
        raise TypeError(f"{caller}: the MADE's net must start and end with a masked linear layer")
    return layers
