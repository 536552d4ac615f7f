"""The multi-scale RealNVP of Dinh et al. (squeeze_2x2, checkerboard and
channel-wise couplings with weight-normalized ResNet s/t networks, dequantize-and-logit
pre-processing), with RealNVPLoss and bits_per_dim.

Differences from the original, each also named in its docstring:
  * squeeze_2x2 raises a ValueError for an x that is not 4-D (the original fails while
    unpacking its shape);
  * RealNVP does not pick a device at construction (the original sets self.device to CUDA
    when available and moves its flows there): _pre_process uses the data_constraint
    buffer on x's device, sample draws on the parameters' device;
  * RealNVP._pre_process(x, noise=None) takes optional dequantization noise;
    RealNVP.sample(n_samples, z=None) takes optional latents and returns the images
    instead of plotting and saving them;
  * reshape where the original has view (_pre_process, nll_score, RealNVPLoss): the same
    values, but it also accepts channels-last tensors, on which view fails.
The original's training and plotting helpers (train_model, get_norm_layer,
get_param_groups, BatchNormStats2d, clip_grad_norm, create_checkpoint_dir) are left out:
they are not the model. Class attributes (_RealNVP.coupling_layer and .squeeze,
RealNVP.flows_class) name the pieces, so that fastflow.nn builds the same model on its
fused kernels.
"""

from enum import IntEnum

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def squeeze_2x2(x, reverse=False, alt_order=False):
    """Squeeze (B, C, H, W) -> (B, 4C, H/2, W/2); reverse=True undoes it.

    Default order: output channel 4c + 2·di + dj at (i, j) is x[:, c, 2i + di, 2j + dj].
    alt_order=True (the original's stride-2 conv / conv_transpose with a permutation
    weight): output channel q·C + c holds sub-pixel q of channel c, the sub-pixels in the
    order (0, 0), (1, 1), (0, 1), (1, 0). The original's ValueErrors are kept, messages
    included.

    Added: a ValueError for an x that is not 4-D, checked first (the original fails while
    unpacking its shape).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"squeeze_2x2: expected a 4-D NCHW tensor x, got shape {shape}")
    if alt_order:
        n, c, h, w = x.size()

        if reverse:
            if c % 4 != 0:
                raise ValueError('Number of channels must be divisible by 4, got {}.'.format(c))
            c //= 4
        else:
            if h % 2 != 0:
                raise ValueError('Height must be divisible by 2, got {}.'.format(h))
            if w % 2 != 0:
                raise ValueError('Width must be divisible by 4, got {}.'.format(w))
        # Defines permutation of input channels (shape is (4, 1, 2, 2)).
        squeeze_matrix = torch.tensor([[[[1., 0.], [0., 0.]]],
                                       [[[0., 0.], [0., 1.]]],
                                       [[[0., 1.], [0., 0.]]],
                                       [[[0., 0.], [1., 0.]]]],
                                      dtype=x.dtype,
                                      device=x.device)
        perm_weight = torch.zeros((4 * c, c, 2, 2), dtype=x.dtype, device=x.device)
        for c_idx in range(c):
            slice_0 = slice(c_idx * 4, (c_idx + 1) * 4)
            slice_1 = slice(c_idx, c_idx + 1)
            perm_weight[slice_0, slice_1, :, :] = squeeze_matrix
        shuffle_channels = torch.tensor([c_idx * 4 for c_idx in range(c)]
                                        + [c_idx * 4 + 1 for c_idx in range(c)]
                                        + [c_idx * 4 + 2 for c_idx in range(c)]
                                        + [c_idx * 4 + 3 for c_idx in range(c)])
        perm_weight = perm_weight[shuffle_channels, :, :, :]

        if reverse:
            x = F.conv_transpose2d(x, perm_weight, stride=2)
        else:
            x = F.conv2d(x, perm_weight, stride=2)
    else:
        b, c, h, w = x.size()
        x = x.permute(0, 2, 3, 1)

        if reverse:
            if c % 4 != 0:
                raise ValueError('Number of channels {} is not divisible by 4'.format(c))
            x = x.view(b, h, w, c // 4, 2, 2)
            x = x.permute(0, 1, 4, 2, 5, 3)
            x = x.contiguous().view(b, 2 * h, 2 * w, c // 4)
        else:
            if h % 2 != 0 or w % 2 != 0:
                raise ValueError('Expected even spatial dims HxW, got {}x{}'.format(h, w))
            x = x.view(b, h // 2, 2, w // 2, 2, c)
            x = x.permute(0, 1, 3, 5, 2, 4)
            x = x.contiguous().view(b, h // 2, w // 2, c * 4)

        x = x.permute(0, 3, 1, 2)

    return x


class MaskType(IntEnum):
    """The coupling masks, checkerboard (before squeezing) or channel-wise (after)."""
    CHECKERBOARD = 0
    CHANNEL_WISE = 1


def checkerboard_mask(height, width, reverse=False, dtype=torch.float32,
                      device=None, requires_grad=False):
    """A (1, 1, height, width) checkerboard mask, entry (i, j) = (i + j) % 2:
    top-left entry 0 (1 if reverse)."""
    checkerboard = [[((i % 2) + j) % 2 for j in range(width)] for i in range(height)]
    mask = torch.tensor(checkerboard, dtype=dtype, device=device, requires_grad=requires_grad)
    if reverse:
        mask = 1 - mask
    return mask.view(1, 1, height, width)


class Rescale(nn.Module):
    """Per-channel rescaling, weight [num_channels, 1, 1] of ones (a module, so
    that weight_norm can wrap it)."""

    def __init__(self, num_channels):
        super(Rescale, self).__init__()
        self.weight = nn.Parameter(torch.ones(num_channels, 1, 1))

    def forward(self, x):
        x = self.weight * x
        return x


class WNConv2d(nn.Module):
    """Weight-normalized 2d convolution
    (torch.nn.utils.parametrizations.weight_norm over nn.Conv2d, as the original)."""

    def __init__(self, in_channels, out_channels, kernel_size, padding, bias=True):
        super(WNConv2d, self).__init__()
        self.conv = nn.utils.parametrizations.weight_norm(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias))

    def forward(self, x):
        x = self.conv(x)
        return x


class ResidualBlock(nn.Module):
    """ResNet basic block with weight norm (BatchNorm, ReLU, 3x3 conv, twice,
    plus the skip)."""

    def __init__(self, in_channels, out_channels):
        super(ResidualBlock, self).__init__()
        self.in_norm = nn.BatchNorm2d(in_channels)
        self.in_conv = WNConv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.out_norm = nn.BatchNorm2d(out_channels)
        self.out_conv = WNConv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=True)

    def forward(self, x):
        skip = x
        x = self.in_norm(x)
        x = F.relu(x)
        x = self.in_conv(x)
        x = self.out_norm(x)
        x = F.relu(x)
        x = self.out_conv(x)
        x = x + skip
        return x


class ResNet(nn.Module):
    """The ResNet that computes the scale and translate factors; its input is
    batch-normalized (doubled when double_after_norm), concatenated with its negative and
    passed through ReLU before the first conv."""

    def __init__(self, in_channels, mid_channels, out_channels,
                 num_blocks, kernel_size, padding, double_after_norm):
        super(ResNet, self).__init__()
        self.in_norm = nn.BatchNorm2d(in_channels)
        self.double_after_norm = double_after_norm
        self.in_conv = WNConv2d(2 * in_channels, mid_channels, kernel_size, padding, bias=True)
        self.in_skip = WNConv2d(mid_channels, mid_channels, kernel_size=1, padding=0, bias=True)

        self.blocks = nn.ModuleList([ResidualBlock(mid_channels, mid_channels)
                                     for _ in range(num_blocks)])
        self.skips = nn.ModuleList([WNConv2d(mid_channels, mid_channels, kernel_size=1, padding=0, bias=True)
                                    for _ in range(num_blocks)])

        self.out_norm = nn.BatchNorm2d(mid_channels)
        self.out_conv = WNConv2d(mid_channels, out_channels, kernel_size=1, padding=0, bias=True)

    def forward(self, x):
        x = self.in_norm(x)
        if self.double_after_norm:
            x *= 2.
        x = torch.cat((x, -x), dim=1)
        x = F.relu(x)
        x = self.in_conv(x)
        x_skip = self.in_skip(x)

        for block, skip in zip(self.blocks, self.skips):
            x = block(x)
            x_skip += skip(x)

        x = self.out_norm(x_skip)
        x = F.relu(x)
        x = self.out_conv(x)
        return x


class CouplingLayer(nn.Module):
    """Coupling layer with a checkerboard or channel-wise mask.

    forward(x, sldj=None, reverse=True) -> (x, sldj). Note the original's default
    reverse=True.
    reverse=False: x -> (x + t)·exp(s) on the changed part, and sldj (a tensor [B]) is
    increased in place by the sum of s per sample; reverse=True: x -> x·exp(−s) − t, sldj
    passed through untouched (it may be None). s = rescale(tanh(s_raw)). Raises
    RuntimeError('Scale factor has NaN entries') when exp(±s) has a NaN, as the original.
    """

    def __init__(self, in_channels, mid_channels, num_blocks, mask_type, reverse_mask):
        super(CouplingLayer, self).__init__()
        self.mask_type = mask_type
        self.reverse_mask = reverse_mask

        if self.mask_type == MaskType.CHANNEL_WISE:
            in_channels //= 2
        self.st_net = ResNet(in_channels, mid_channels, 2 * in_channels,
                             num_blocks=num_blocks, kernel_size=3, padding=1,
                             double_after_norm=(self.mask_type == MaskType.CHECKERBOARD))

        # Learnable scale for s
        self.rescale = nn.utils.parametrizations.weight_norm(Rescale(in_channels))

    def forward(self, x, sldj=None, reverse=True):
        if self.mask_type == MaskType.CHECKERBOARD:
            b = checkerboard_mask(x.size(2), x.size(3), self.reverse_mask, device=x.device)
            x_b = x * b
            st = self.st_net(x_b)
            s, t = st.chunk(2, dim=1)
            s = self.rescale(torch.tanh(s))
            s = s * (1 - b)
            t = t * (1 - b)

            if reverse:
                inv_exp_s = s.mul(-1).exp()
                if torch.isnan(inv_exp_s).any():
                    raise RuntimeError('Scale factor has NaN entries')
                x = x * inv_exp_s - t
            else:
                exp_s = s.exp()
                if torch.isnan(exp_s).any():
                    raise RuntimeError('Scale factor has NaN entries')
                x = (x + t) * exp_s
                sldj += s.reshape(s.size(0), -1).sum(-1)
        else:
            if self.reverse_mask:
                x_id, x_change = x.chunk(2, dim=1)
            else:
                x_change, x_id = x.chunk(2, dim=1)

            st = self.st_net(x_id)
            s, t = st.chunk(2, dim=1)
            s = self.rescale(torch.tanh(s))

            if reverse:
                inv_exp_s = s.mul(-1).exp()
                if torch.isnan(inv_exp_s).any():
                    raise RuntimeError('Scale factor has NaN entries')
                x_change = x_change * inv_exp_s - t
            else:
                exp_s = s.exp()
                if torch.isnan(exp_s).any():
                    raise RuntimeError('Scale factor has NaN entries')
                x_change = (x_change + t) * exp_s
                sldj += s.reshape(s.size(0), -1).sum(-1)

            if self.reverse_mask:
                x = torch.cat((x_id, x_change), dim=1)
            else:
                x = torch.cat((x_change, x_id), dim=1)

        return x, sldj


class _RealNVP(nn.Module):
    """One scale of RealNVP, built recursively: 3 checkerboard couplings, then
    (unless last) squeeze, 3 channel-wise couplings, unsqueeze, and the next scale on half
    the channels after an alt-order squeeze; the last scale has 4 checkerboard couplings.

    forward(x, sldj, reverse=False) -> (x, sldj). img_size is unused and not passed on to
    the next scale, as in the original. The next scale is built with type(self) (the
    original names _RealNVP), so that a subclass builds its own kind throughout.
    """

    coupling_layer = CouplingLayer
    squeeze = staticmethod(squeeze_2x2)

    def __init__(self, scale_idx, num_scales, in_channels, mid_channels, num_blocks, img_size=32):
        super(_RealNVP, self).__init__()
        coupling = self.coupling_layer
        self.is_last_block = scale_idx == num_scales - 1

        self.in_couplings = nn.ModuleList([
            coupling(in_channels, mid_channels, num_blocks, MaskType.CHECKERBOARD, reverse_mask=False),
            coupling(in_channels, mid_channels, num_blocks, MaskType.CHECKERBOARD, reverse_mask=True),
            coupling(in_channels, mid_channels, num_blocks, MaskType.CHECKERBOARD, reverse_mask=False)
        ])

        if self.is_last_block:
            self.in_couplings.append(
                coupling(in_channels, mid_channels, num_blocks, MaskType.CHECKERBOARD, reverse_mask=True))
        else:
            self.out_couplings = nn.ModuleList([
                coupling(4 * in_channels, 2 * mid_channels, num_blocks, MaskType.CHANNEL_WISE, reverse_mask=False),
                coupling(4 * in_channels, 2 * mid_channels, num_blocks, MaskType.CHANNEL_WISE, reverse_mask=True),
                coupling(4 * in_channels, 2 * mid_channels, num_blocks, MaskType.CHANNEL_WISE, reverse_mask=False)
            ])
            self.next_block = type(self)(scale_idx + 1, num_scales, 2 * in_channels, 2 * mid_channels, num_blocks)

    def forward(self, x, sldj, reverse=False):
        squeeze_2x2 = self.squeeze
        if reverse:
            if not self.is_last_block:
                # Re-squeeze -> split -> next block
                x = squeeze_2x2(x, reverse=False, alt_order=True)
                x, x_split = x.chunk(2, dim=1)
                x, sldj = self.next_block(x, sldj, reverse)
                x = torch.cat((x, x_split), dim=1)
                x = squeeze_2x2(x, reverse=True, alt_order=True)

                # Squeeze -> 3x coupling (channel-wise)
                x = squeeze_2x2(x, reverse=False)
                for coupling in reversed(self.out_couplings):
                    x, sldj = coupling(x, sldj, reverse)
                x = squeeze_2x2(x, reverse=True)

            for coupling in reversed(self.in_couplings):
                x, sldj = coupling(x, sldj, reverse)
        else:
            for coupling in self.in_couplings:
                x, sldj = coupling(x, sldj, reverse)

            if not self.is_last_block:
                # Squeeze -> 3x coupling (channel-wise)
                x = squeeze_2x2(x, reverse=False)
                for coupling in self.out_couplings:
                    x, sldj = coupling(x, sldj, reverse)
                x = squeeze_2x2(x, reverse=True)

                # Re-squeeze -> split -> next block
                x = squeeze_2x2(x, reverse=False, alt_order=True)
                x, x_split = x.chunk(2, dim=1)
                x, sldj = self.next_block(x, sldj, reverse)
                x = torch.cat((x, x_split), dim=1)
                x = squeeze_2x2(x, reverse=True, alt_order=True)

        return x, sldj


class RealNVP(nn.Module):
    """RealNVP(img_size, in_channels, args), args any object with num_scales, mid_channels
    and num_blocks (the original's Config). forward(x, reverse=False) -> (z, sldj):
    x in [0, 1] is dequantized and converted to logits (_pre_process), then run through
    `flows`; forward(z, reverse=True) runs the flows backwards (sldj None).

    Differences from the original: no device is picked at construction (the original sets
    self.device to CUDA when available and moves its flows there; here the model stays
    where it is put, and there is no `device` attribute); _pre_process takes optional
    noise; sample(n_samples, z=None) returns the images instead of plotting and saving
    them. The original's train_model is left out.
    """

    flows_class = _RealNVP

    def __init__(self, img_size, in_channels, args):
        super(RealNVP, self).__init__()
        self.register_buffer('data_constraint', torch.tensor([0.9], dtype=torch.float32))
        self.flows = self.flows_class(0, args.num_scales, in_channels, args.mid_channels, args.num_blocks)
        self.img_size = img_size
        self.channels = in_channels

    def forward(self, x, reverse=False):
        sldj = None
        if not reverse:
            if x.min() < 0 or x.max() > 1:
                raise ValueError('Expected x in [0, 1], got x with min/max {}/{}'
                                 .format(x.min(), x.max()))
            x, sldj = self._pre_process(x)
        x, sldj = self.flows(x, sldj, reverse)
        return x, sldj

    def _pre_process(self, x, noise=None):
        """Dequantize x and convert to logits: y = logit((1 + c·(2u − 1)) / 2) with
        u = (255·x + noise) / 256 and c = data_constraint (0.9). Returns (y, sldj), sldj the
        per-sample log-determinant of the map from u to y.

        Differences from the original: `noise` (U[0, 1) of x's shape) is drawn with
        torch.rand_like(x) only when not given, so that a result can be reproduced exactly;
        the buffer is used on x's device (the original moves it to self.device).
        """
        if noise is None:
            noise = torch.rand_like(x)
        data_constraint = self.data_constraint.to(x.device)
        y = (x * 255. + noise) / 256.
        y = (2 * y - 1) * data_constraint
        y = (y + 1) / 2
        y = y.log() - (1. - y).log()

        # Log-determinant of the Jacobian of this initial transform
        ldj = F.softplus(y) + F.softplus(-y) \
            - F.softplus((1. - data_constraint).log() - data_constraint.log())
        sldj = ldj.reshape(ldj.size(0), -1).sum(-1)
        return y, sldj

    @torch.no_grad()
    def sample(self, n_samples, z=None):
        """Puts the model in eval mode (as the original) and returns n_samples images
        sigmoid(flows⁻¹(z)) clamped to [0, 1], [n_samples, C, img_size, img_size], on the
        model's device, without autograd history (the original detaches them too).

        Differences from the original: no plotting or saving (the original's train/epoch
        arguments only chose the file name, and are gone); z ~ N(0, I) is drawn on the
        parameters' device (the original: self.device) unless given, so that a result can
        be reproduced exactly; the images stay on that device (the original moves them to
        the CPU to plot).
        """
        self.eval()
        device = next(self.parameters()).device
        if z is None:
            z = torch.randn((n_samples, self.channels, self.img_size, self.img_size),
                            dtype=torch.float32, device=device)
        x, _ = self.forward(z.to(device), reverse=True)
        return torch.sigmoid(x).clamp(0, 1)

    def nll_score(self, z, sldj):
        """Per-sample negative log-likelihood [B] of latents z with log-dets sldj,
        for k = 256 levels per dimension (RealNVPLoss is its batch mean)."""
        k = 256
        prior_ll = -0.5 * (z ** 2 + np.log(2 * np.pi))
        prior_ll = prior_ll.reshape(z.size(0), -1).sum(-1) - np.log(k) * np.prod(z.size()[1:])
        ll = prior_ll + sldj
        return -ll


class RealNVPLoss(nn.Module):
    """The NLL loss of a RealNVP model, k discrete values per input dimension:
    −mean(log N(z; 0, I) − D·log k + sldj), D the dimensions per sample.

    reshape where the original has view: the model's z can come out channels-last (from
    the convolutions, e.g. with 3 input channels on the CPU), where the original's view
    fails."""

    def __init__(self, k=256):
        super(RealNVPLoss, self).__init__()
        self.k = k

    def forward(self, z, sldj):
        prior_ll = -0.5 * (z ** 2 + np.log(2 * np.pi))
        prior_ll = prior_ll.reshape(z.size(0), -1).sum(-1) \
            - np.log(self.k) * np.prod(z.size()[1:])
        ll = prior_ll + sldj
        nll = -ll.mean()
        return nll


def bits_per_dim(x, nll):
    """Bits per dimension nll / (log(2)·D), D the dimensions per sample of x."""
    dim = np.prod(x.size()[1:])
    bpd = nll / (np.log(2) * dim)
    return bpd
