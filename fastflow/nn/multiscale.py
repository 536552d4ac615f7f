"""The multi-scale RealNVP on fused kernels: drop-ins for
fastflow.reference.multiscale's CouplingLayer, _RealNVP and RealNVP (same constructor
arguments, state_dict keys and results), with fastflow's squeeze_2x2 and the fused
dequantize-and-logit pre-process.

NaN policy. The reference checks every coupling layer for NaN scale factors and raises
RuntimeError('Scale factor has NaN entries'); each check waits for the GPU. Here the check
is off by default (no host synchronisation in the forward pass; a NaN then shows up in the
outputs and log-determinants). Turn it on per layer (`layer.nan_check = True`) or for a
whole model (`RealNVP(..., nan_check=True)` or `model.set_nan_check(True)`): each layer
then raises the reference's RuntimeError when its s has a NaN (its fused log-det, a sum of
s, is NaN exactly then).
"""

import torch
from torch._prims_common import suggest_memory_format

from .. import reference
from ..ops.dequantize_logit import dequantize_logit
from ..ops.image_coupling import checkerboard_keep, image_coupling
from ..ops.squeeze_2x2 import squeeze_2x2

MaskType = reference.multiscale.MaskType
RealNVPLoss = reference.multiscale.RealNVPLoss
bits_per_dim = reference.multiscale.bits_per_dim


# The reference's tensors are channels-last from its first squeeze on (the squeeze is a
# permute, and convolutions, chunks and elementwise ops keep the layout they are given).
# The fused ops return NCHW, which sends every later convolution and BatchNorm down
# PyTorch's NCHW path: on a 2-core AMD EPYC (Zen 5) that made the model 2-8% slower than
# with the reference's formats, and the convolutions round differently. So the drop-in
# hands on its results in the layout the reference's own ops would have given them (a copy
# of a few small tensors).
def _in_layout_of(result, like):
    """result in the memory format that the reference's elementwise ops on `like` give it."""
    if like.size(1) == 1:
        # One channel: both formats are the same memory, told apart only by the channel
        # stride, and the elementwise ops give NCHW's. (An NCHW copy of `like`, as the
        # Triton kernels make, keeps like's channel stride.)
        if result.stride(1) == result.size(2) * result.size(3):
            return result
        return result.clone(memory_format=torch.contiguous_format)
    return result.contiguous(memory_format=suggest_memory_format(like))


def _squeeze_2x2(x, reverse=False, alt_order=False):
    """squeeze_2x2 with the reference's output layout: its plain squeeze is a permute of
    an NHWC tensor, its alt-order squeeze a convolution (x's layout)."""
    y = squeeze_2x2(x, reverse=reverse, alt_order=alt_order)
    if alt_order:
        return y.contiguous(memory_format=suggest_memory_format(x))
    return y.new_empty(y.size(0), y.size(2), y.size(3), y.size(1)).permute(0, 3, 1, 2).copy_(y)


def _channels_last_without_autograd(conv, args):
    """The s/t network's first convolution's forward pre-hook: without autograd, its input
    (and so the whole ResNet after it) goes channels-last. The reference's first scale runs
    NCHW (its input has one channel, for which PyTorch keeps NCHW), where oneDNN's 64-channel
    14x14 convolutions are slow: channels-last made that scale's ResNet 1.4-1.8x faster
    forward on a 2-core AMD EPYC (Zen 5). With autograd the reference's layouts stay:
    PyTorch's channels-last train-mode BatchNorm computes its batch statistics less
    accurately (about 10x the error of its NCHW one), which showed in the gradients that
    BatchNorm makes zero but for its eps."""
    if torch.is_grad_enabled():
        return None
    return (args[0].contiguous(memory_format=torch.channels_last),)


class _WeightNormInLayout(torch.nn.Module):
    """The weight_norm parametrization of a convolution, w = g·v/‖v‖ per output channel (as
    torch's), with w in v's memory format. torch's makes w contiguous (copying a
    channels-last v), and a convolution on a channels-last input then copies w back to
    channels-last, forward and backward: four weight copies per 3x3 convolution and step.
    Here a channels-last v's norm runs on its NHWC view, which is contiguous."""

    def forward(self, weight_g, weight_v):
        if weight_v.is_contiguous():
            return torch._weight_norm(weight_v, weight_g, 0)
        return torch._weight_norm(weight_v.permute(0, 2, 3, 1), weight_g, 0).permute(0, 3, 1, 2)

    def right_inverse(self, weight):
        return torch.norm_except_dim(weight, 2, 0), weight


class CouplingLayer(reference.multiscale.CouplingLayer):
    """The multi-scale RealNVP's CouplingLayer: the ResNet s/t network as in the reference,
    then the masking, rescale·tanh, exp, affine map and log-det in one kernel that reads st
    in place."""

    nan_check = False

    def __init__(self, in_channels, mid_channels, num_blocks, mask_type, reverse_mask):
        super().__init__(in_channels, mid_channels, num_blocks, mask_type, reverse_mask)
        self.st_net.in_conv.register_forward_pre_hook(_channels_last_without_autograd)
        if mask_type == MaskType.CHANNEL_WISE:
            # Its input comes from a squeeze, channels-last going forward and in reverse (as the
            # reference's): its weights in the same format, so that no convolution copies its
            # own. On a 2-core AMD EPYC (Zen 5) a 3x3 convolution of a 128-channel 7x7 input
            # ran 6-8% faster forward and backward, weight norm included.
            for conv in self.st_net.modules():
                if isinstance(conv, torch.nn.Conv2d):
                    weight = conv.parametrizations.weight
                    weight.original1.data = weight.original1.data.contiguous(memory_format=torch.channels_last)
                    weight[0] = _WeightNormInLayout()

    def forward(self, x, sldj=None, reverse=True):
        channel_wise = self.mask_type == MaskType.CHANNEL_WISE
        if channel_wise:
            x_id = x.chunk(2, dim=1)[0 if self.reverse_mask else 1]
            st = self.st_net(x_id)
        else:
            keep = checkerboard_keep(x.size(2), x.size(3), self.reverse_mask, x.dtype, x.device)
            st = self.st_net(x * keep)
        y, logdet = image_coupling(x, st, self.rescale.weight, channel_wise=channel_wise,
                                   reverse_mask=self.reverse_mask, reverse=reverse)
        y = _in_layout_of(y, x)
        if self.nan_check and torch.isnan(logdet).any():
            raise RuntimeError('Scale factor has NaN entries')
        if not reverse:
            sldj = sldj + logdet.to(sldj.dtype)
        return y, sldj


class _RealNVP(reference.multiscale._RealNVP):
    """One scale of the multi-scale RealNVP, on fused coupling layers and squeeze_2x2."""

    coupling_layer = CouplingLayer
    squeeze = staticmethod(_squeeze_2x2)


class RealNVP(reference.multiscale.RealNVP):
    """The multi-scale RealNVP, RealNVP(img_size, in_channels, args), on fused kernels.

    Additions: nan_check (keyword only; see the module docstring). Under torch.compile the
    reference's input range check (x in [0, 1], a host synchronisation) is skipped.
    """

    flows_class = _RealNVP

    def __init__(self, img_size, in_channels, args, *, nan_check=False):
        super().__init__(img_size, in_channels, args)
        self.set_nan_check(nan_check)

    def set_nan_check(self, enabled):
        for module in self.modules():
            if isinstance(module, CouplingLayer):
                module.nan_check = bool(enabled)

    def forward(self, x, reverse=False):
        sldj = None
        if not reverse:
            if not torch.compiler.is_compiling() and (x.min() < 0 or x.max() > 1):
                raise ValueError('Expected x in [0, 1], got x with min/max {}/{}'
                                 .format(x.min(), x.max()))
            x, sldj = self._pre_process(x)
        return self.flows(x, sldj, reverse)

    def _pre_process(self, x, noise=None):
        """Dequantize (noise: U[0, 1) of x's shape, drawn when not given) and convert to
        logits in one fused kernel; returns (logits, log-determinant per sample)."""
        if noise is None:
            noise = torch.rand_like(x)
        return dequantize_logit(x, noise, self.data_constraint)
