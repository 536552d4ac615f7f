"""The MLP RealNVP on the fused vector coupling: drop-ins for
fastflow.reference.mlp_realnvp.AffineCoupling and RealNVP (same constructor arguments,
state_dict keys and results).

The coupling's nets skip the zeros the reference computes with: their input x·mask is zero
wherever mask is 0, and their outputs are multiplied by 1 − mask, so only the kept inputs
(mask = 1) and the transformed outputs (mask = 0) matter. With a 0/1 mask the first layers
run on the kept inputs' columns of the weights and the last layers on the transformed
outputs' rows: at 784-256 with the alternating masks, 57% of the nets' multiply-adds.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import autotune, reference
from ..backend import get_backend
from ..ops.affine_coupling import affine_coupling
from .made import is_zero_one


class AffineCoupling(reference.mlp_realnvp.AffineCoupling):
    """The MLP RealNVP's AffineCoupling; the masking, exp, affine map and log-det sum run
    as one fused kernel. forward(x) -> (y, log_det); forward(x, reverse=True) -> y, as the
    reference.

    The nets skip the mask's zeros (the module docstring) on CPU tensors: always under the
    kernel backends, where measured faster per shape class under 'auto' (fastflow.autotune),
    never under 'torch'. Otherwise (GPU tensors, torch.compile, a mask that is not 0/1, nets
    changed from the reference's layers or with hooks) the nets run as modules on x·mask."""

    _mask_key = None
    _halves = None  # (kept, transformed, zeros): index tensors of a 0/1 mask, else None

    def forward(self, x, reverse=False):
        params = self._skippable(x)
        if params is not None:
            args = (x, *self._halves, *params)
            if get_backend() != "auto" or _skipping_is_faster(args, self.mask, reverse):
                y, log_det = skipping_coupling(*args, reverse=reverse)
                return y if reverse else (y, log_det)
        x_masked = x * self.mask
        y, log_det = affine_coupling(x, self.s_net(x_masked), self.t_net(x_masked), self.mask,
                                     reverse=reverse)
        return y if reverse else (y, log_det)

    def _skippable(self, x):
        """The nets' parameters ([w1, b1, w2, b2, w3, b3] each, and the LeakyReLU slope)
        when the skipping path can run x, else None."""
        if (type(x) is not torch.Tensor or x.dim() != 2 or not x.is_cpu
                or get_backend() == "torch" or torch.compiler.is_compiling()
                or nn.modules.module._global_forward_hooks
                or nn.modules.module._global_forward_pre_hooks):
            return None
        s_params, t_params = _net_parameters(self.s_net, nn.Tanh), _net_parameters(self.t_net, None)
        if s_params is None or t_params is None or s_params[-1] != t_params[-1]:
            return None
        if s_params[0][0].dtype != x.dtype or s_params[0][0].shape[1] != x.shape[1]:
            return None
        if self._mask_halves() is None:
            return None
        return s_params[0], t_params[0], s_params[1]

    def _mask_halves(self):
        """(kept, transformed, zeros) of the mask, recomputed when it changes (seen through
        its version counter, as fastflow.nn.made's masks); None unless the mask is 0/1 and
        both halves are non-empty."""
        mask = self.mask
        key = (mask.data_ptr(), mask._version, mask.shape, mask.dtype)
        if key != self._mask_key:
            self._halves = None
            if mask.dim() == 1 and is_zero_one(mask):
                kept, transformed = (mask == 1).nonzero().squeeze(1), (mask == 0).nonzero().squeeze(1)
                if kept.numel() and transformed.numel():
                    self._halves = (kept, transformed, mask.new_zeros(transformed.numel()))
            self._mask_key = key
        return self._halves


def _net_parameters(net, last):
    """([w1, b1, w2, b2, w3, b3], slope) of a Linear, LeakyReLU, Linear, LeakyReLU, Linear
    net (then `last`, nn.Tanh or None), the reference's layers without hooks, else None."""
    modules = list(net)
    types = [nn.Linear, nn.LeakyReLU, nn.Linear, nn.LeakyReLU, nn.Linear] + ([last] if last else [])
    if (not isinstance(net, nn.Sequential) or [type(m) for m in modules] != types
            or any(m._forward_hooks or m._forward_pre_hooks for m in (net, *modules))
            or modules[1].negative_slope != modules[3].negative_slope
            or any(m.bias is None for m in modules[0:5:2])):
        return None
    params = [p for m in modules[0:5:2] for p in (m.weight, m.bias)]
    return params, modules[1].negative_slope


def _mlp(x, w1, b1, w2, b2, w3, b3, slope):
    """Linear, LeakyReLU, Linear, LeakyReLU, Linear: the nets without their last activation."""
    h = F.leaky_relu(F.linear(x, w1, b1), slope)
    h = F.leaky_relu(F.linear(h, w2, b2), slope)
    return F.linear(h, w3, b3)


def _net_on_halves(x_kept, kept, transformed, params, slope):
    """The net's outputs at the transformed positions from its input's kept columns (the
    others are zero): the first layer's weight columns of the kept inputs, the last layer's
    rows of the transformed outputs."""
    w1, b1, w2, b2, w3, b3 = params
    return _mlp(x_kept, w1.index_select(1, kept), b1, w2, b2, w3.index_select(0, transformed),
                b3.index_select(0, transformed), slope)


def skipping_coupling(x, kept, transformed, zeros, s_params, t_params, slope, reverse=False):
    """The coupling's (y, log_det) with its nets on the mask's halves only: y keeps x at the
    kept positions, the fused coupling transforms the others (its mask `zeros`: all
    transformed)."""
    x_kept = x.index_select(1, kept)
    s = torch.tanh(_net_on_halves(x_kept, kept, transformed, s_params, slope))
    t = _net_on_halves(x_kept, kept, transformed, t_params, slope)
    y_transformed, log_det = affine_coupling(x.index_select(1, transformed), s, t, zeros,
                                             reverse=reverse)
    return x.index_copy(1, transformed, y_transformed), log_det


def _full_coupling(x, mask, s_params, t_params, slope, reverse=False):
    """The same coupling as the modules compute it, on x·mask (what 'auto' times against)."""
    x_masked = x * mask
    s, t = (_mlp(x_masked, *params, slope) for params in (s_params, t_params))
    return affine_coupling(x, torch.tanh(s), t, mask, reverse=reverse)


def _skipping_is_faster(args, mask, reverse) -> bool:
    """fastflow.autotune's choice for this shape class: the nets on the mask's halves, or
    on x·mask."""
    x, kept, transformed, zeros, s_params, t_params, slope = args
    grad = autotune.wants_grad(args)
    sizes = f"{x.shape[1]}-{s_params[0].shape[0]} kept {kept.numel()}{' reverse' if reverse else ''}"
    key = autotune.shape_class("mlp_realnvp_coupling", x, sizes, grad=grad)
    # The mask in x's dtype, made only when the class is measured (candidates() is called
    # then alone).
    return autotune.decide(key, lambda: {
        "full": autotune.timed_call(lambda *a: _full_coupling(*a, reverse=reverse),
                                    (x, mask.to(x.dtype), s_params, t_params, slope), grad),
        "skipping": autotune.timed_call(lambda *a: skipping_coupling(*a, reverse=reverse), args, grad),
    }) == "skipping"


class RealNVP(reference.mlp_realnvp.RealNVP):
    """The MLP RealNVP (log_prob, sample) built from fused AffineCoupling layers."""

    coupling_layer = AffineCoupling
