"""The vector Glow module: Glow's pieces on vectors (ActNorm, Invertible1x1Conv,
AffineCoupling, GlowBlock, Glow), its RealNVP, and its MADE and MAF. (The original's
PlanarFlow, NormalizingFlow and Neural-ODE flow are not reproduced.)

Differences from the original: torch.qr and torch.lu (removed from, or deprecated in,
recent torch) are torch.linalg.qr and torch.linalg.lu_factor, which give the same factors;
the original's MAF reverse branch reads a name it never defines (it raises
UnboundLocalError), fixed. The original's other defects are kept, and named in the
docstrings: its MADE's output mask uses <= (output i sees input i: not autoregressive) and
its masks are plain attributes; its MAF samples through made_layers[0] only; its ActNorm
initialisation does not zero the mean; its "Glow" has no squeeze or split; its 1x1
convolution drops the signs of U's diagonal; the ActNorm and 1x1-convolution log-dets are
float32 whatever the model's dtype.
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class AffineCoupling(nn.Module):
    """Affine coupling whose s and t networks see the kept dimensions only
    (mask 1 = kept). mask_type 'checkerboard' keeps the odd dimensions, the `mask` buffer
    being the integer tensor arange(dim) % 2 (int64, as the original registers it);
    'channel' keeps the first dim // 2 (a float mask). Any other mask_type registers no
    mask, and the constructor fails on self.mask, as in the original.

    forward(z, reverse=False) -> (x, log_det): x = z·exp(s) + t on the changed dimensions,
    log_det = Σ s; reverse=True inverts it, log_det = −Σ s.
    """

    def __init__(self, dim, hidden_dim=256, mask_type='checkerboard'):
        super().__init__()
        self.dim = dim
        if mask_type == 'checkerboard':
            self.register_buffer('mask', torch.arange(dim) % 2)
        elif mask_type == 'channel':
            mask = torch.zeros(dim)
            mask[:dim // 2] = 1
            self.register_buffer('mask', mask)

        mask_dim = int(self.mask.sum().item())
        transform_dim = dim - mask_dim
        self.scale_net = nn.Sequential(
            nn.Linear(mask_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, transform_dim)
        )
        self.translate_net = nn.Sequential(
            nn.Linear(mask_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, transform_dim)
        )

    def forward(self, z, reverse=False):
        mask = self.mask.unsqueeze(0)
        z_masked = z * mask
        z_transform = z * (1 - mask)
        z_cond = z_masked[:, self.mask == 1]
        s = self.scale_net(z_cond)
        t = self.translate_net(z_cond)
        if not reverse:
            x_transform = z_transform[:, self.mask == 0] * torch.exp(s) + t
            log_det = s.sum(dim=1)
        else:
            x_transform = (z_transform[:, self.mask == 0] - t) * torch.exp(-s)
            log_det = -s.sum(dim=1)
        x = torch.zeros_like(z)
        x[:, self.mask == 1] = z_cond
        x[:, self.mask == 0] = x_transform
        return x, log_det


class RealNVP(nn.Module):
    """n_layers AffineCouplings alternating 'checkerboard' and 'channel' masks.
    forward(z, reverse=False) -> (x, log_det) maps latent to data; reverse=True maps data
    to latent (the layers in reverse order); log_prob(x) = log N(z; 0, I) + that log-det."""

    def __init__(self, dim, n_layers=6, hidden_dim=256):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList()
        for i in range(n_layers):
            mask_type = 'checkerboard' if i % 2 == 0 else 'channel'
            self.layers.append(AffineCoupling(dim, hidden_dim, mask_type))

    def forward(self, z, reverse=False):
        log_det_total = 0
        x = z
        layers = reversed(self.layers) if reverse else self.layers
        for layer in layers:
            x, log_det = layer(x, reverse=reverse)
            log_det_total += log_det
        return x, log_det_total

    def log_prob(self, x):
        z, log_det = self.forward(x, reverse=True)
        log_pz = -0.5 * (z ** 2).sum(dim=1) - 0.5 * self.dim * np.log(2 * np.pi)
        return log_pz + log_det


class Invertible1x1Conv(nn.Module):
    """The invertible linear map x = W z on vectors ("1x1 convolution"),
    W = P·L·(U + diag(exp(log_s))) with L unit lower and U strictly upper triangular.

    Initialised as in the original: a random rotation (the Q of QR of
    torch.randn(channels, channels)), LU-factorised into the `P` buffer and the L, U,
    log_s parameters, log_s = log|diag(U)|. torch.linalg.qr and torch.linalg.lu_factor
    replace the original's torch.qr (removed from torch) and torch.lu (deprecated); they
    give the same factors. Kept from the original: diag(U) enters W only as exp(log_s) =
    |diag(U)|, so the initial W is that rotation only when every entry of diag(U) is
    positive (the log-det, Σ log_s, is exact for the W it uses); the log-det is Σ log_s
    times torch.ones(batch_size), so it is float32 whatever the model's dtype.
    """

    def __init__(self, channels):
        super().__init__()
        self.channels = channels
        W = torch.linalg.qr(torch.randn(channels, channels))[0]
        P, L, U = torch.lu_unpack(*torch.linalg.lu_factor(W))
        self.register_buffer('P', P)
        self.L = nn.Parameter(L)
        self.U = nn.Parameter(U)
        self.log_s = nn.Parameter(torch.log(torch.abs(torch.diag(U))))

    def forward(self, z, reverse=False):
        batch_size = z.size(0)
        L = torch.tril(self.L, diagonal=-1) + torch.eye(self.channels, device=z.device)
        U = torch.triu(self.U, diagonal=1)
        W = self.P @ L @ (U + torch.diag(torch.exp(self.log_s)))
        if not reverse:
            x = z @ W.t()
            log_det = self.log_s.sum() * torch.ones(batch_size, device=z.device)
        else:
            W_inv = torch.inverse(W)
            x = z @ W_inv.t()
            log_det = -self.log_s.sum() * torch.ones(batch_size, device=z.device)
        return x, log_det


class ActNorm(nn.Module):
    """Per-channel scale and bias, x = z·exp(log_scale) + bias, initialised from
    the first batch it sees (in either direction, under no_grad; the `initialized` buffer,
    an int64 scalar, records it).

    Kept from the original: the initialisation sets bias = −mean and log_scale =
    −log(std + 1e-6), so the first batch comes out as z/std − mean, with zero mean only
    when the mean is 0 or std is 1 (Glow's actnorm would set bias = −mean/std); the
    log-det is Σ log_scale times torch.ones(batch_size), so it is float32 whatever the
    model's dtype.
    """

    def __init__(self, channels):
        super().__init__()
        self.channels = channels
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer('initialized', torch.tensor(0))

    def forward(self, z, reverse=False):
        batch_size = z.size(0)
        if not self.initialized:
            with torch.no_grad():
                mean = z.mean(dim=0)
                std = z.std(dim=0)
                self.bias.data = -mean
                self.log_scale.data = -torch.log(std + 1e-6)
                self.initialized.fill_(1)
        if not reverse:
            x = z * torch.exp(self.log_scale) + self.bias
            log_det = self.log_scale.sum() * torch.ones(batch_size, device=z.device)
        else:
            x = (z - self.bias) * torch.exp(-self.log_scale)
            log_det = -self.log_scale.sum() * torch.ones(batch_size, device=z.device)
        return x, log_det


class GlowBlock(nn.Module):
    """ActNorm -> Invertible1x1Conv -> AffineCoupling ('channel' mask), in
    reverse order when reverse=True; returns (x, the sum of the three log-dets)."""

    def __init__(self, channels, hidden_dim=256):
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.conv1x1 = Invertible1x1Conv(channels)
        self.coupling = AffineCoupling(channels, hidden_dim, mask_type='channel')

    def forward(self, z, reverse=False):
        if not reverse:
            x, ld1 = self.actnorm(z, reverse=False)
            x, ld2 = self.conv1x1(x, reverse=False)
            x, ld3 = self.coupling(x, reverse=False)
        else:
            x, ld3 = self.coupling(z, reverse=True)
            x, ld2 = self.conv1x1(x, reverse=True)
            x, ld1 = self.actnorm(x, reverse=True)
        return x, ld1 + ld2 + ld3


class Glow(nn.Module):
    """n_blocks GlowBlocks on input_dim-dimensional vectors. forward(z, reverse=False) ->
    (x, log_det) maps latent to data; log_prob(x) runs it reversed. Kept from the
    original: despite its docstring ("multi-scale architecture with squeeze, flow, split")
    there is no squeeze or split."""

    def __init__(self, input_dim, n_blocks=8, hidden_dim=256):
        super().__init__()
        self.input_dim = input_dim
        self.blocks = nn.ModuleList([GlowBlock(input_dim, hidden_dim) for _ in range(n_blocks)])

    def forward(self, z, reverse=False):
        log_det_total = 0
        x = z
        blocks = reversed(self.blocks) if reverse else self.blocks
        for block in blocks:
            x, log_det = block(x, reverse=reverse)
            log_det_total += log_det
        return x, log_det_total

    def log_prob(self, x):
        z, log_det = self.forward(x, reverse=True)
        log_pz = -0.5 * (z ** 2).sum(dim=1) - 0.5 * self.input_dim * np.log(2 * np.pi)
        return log_pz + log_det


class MADE(nn.Module):
    """MADE with plain nn.Linear `layers`, masked in forward; forward(z) ->
    (log_scale, loc), each [B, input_dim]. The hidden degrees are drawn with torch.randint
    after the layers' initialisation, as in the original.

    Kept from the original, defects included: every mask, the output layer's too, connects
    degree m(l) <= m(l+1), so output i sees input i (not autoregressive); the masks are
    plain attributes (a list of bool tensors), not buffers, so not in the state_dict.
    """

    def __init__(self, input_dim, hidden_dims=[256, 256]):
        super().__init__()
        self.input_dim = input_dim
        dims = [input_dim] + hidden_dims + [input_dim * 2]
        self.layers = nn.ModuleList()
        for i in range(len(dims) - 1):
            self.layers.append(nn.Linear(dims[i], dims[i + 1]))
        self.masks = self._create_masks(dims)

    def _create_masks(self, dims):
        masks = []
        m = {}
        m[0] = torch.arange(1, self.input_dim + 1)
        for l in range(1, len(dims) - 1):
            m[l] = torch.randint(1, self.input_dim, (dims[l],))
        m[len(dims) - 1] = torch.arange(1, self.input_dim + 1).repeat(2)
        for l in range(len(dims) - 1):
            masks.append(m[l].unsqueeze(1) <= m[l + 1].unsqueeze(0))
        return masks

    def forward(self, z):
        x = z
        for i, (layer, mask) in enumerate(zip(self.layers, self.masks)):
            weight = layer.weight * mask.t().float().to(z.device)
            x = F.linear(x, weight, layer.bias)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        log_scale, loc = x.chunk(2, dim=1)
        return log_scale, loc


class MAF(nn.Module):
    """MAF of n_layers MADEs. forward(z, reverse=False) -> (x, log_det) samples
    sequentially; reverse=True maps data to latent through every MADE;
    log_prob(x) = log N(z; 0, I) + the reverse log-det.

    Kept from the original: forward runs made_layers[0] only, whatever n_layers is; and as
    the MADE is not autoregressive, forward is not the inverse of reverse even for one
    layer. Fixed: the original's reverse branch starts with `z = x.clone()`, x undefined
    there (the argument is named z), which raises UnboundLocalError; here the argument is
    the data.
    """

    def __init__(self, input_dim, n_layers=5, hidden_dims=[256, 256]):
        super().__init__()
        self.input_dim = input_dim
        self.made_layers = nn.ModuleList([MADE(input_dim, hidden_dims) for _ in range(n_layers)])

    def forward(self, z, reverse=False):
        if not reverse:
            x = torch.zeros_like(z)
            log_det_total = 0
            for i in range(self.input_dim):
                log_s, t = self.made_layers[0](x)
                x[:, i] = z[:, i] * torch.exp(log_s[:, i]) + t[:, i]
                log_det_total += log_s[:, i]
            return x, log_det_total
        else:
            # The original's branch reads `x`, undefined there: the argument is the data.
            x = z
            log_det_total = 0
            for made in self.made_layers:
                log_s, t = made(x)
                z = (x - t) * torch.exp(-log_s)
                log_det_total += -log_s.sum(dim=1)
                x = z
            return z, log_det_total

    def log_prob(self, x):
        z, log_det = self.forward(x, reverse=True)
        log_pz = -0.5 * (z ** 2).sum(dim=1) - 0.5 * self.input_dim * np.log(2 * np.pi)
        return log_pz + log_det
