"""The MLP RealNVP: RealNVP with MLP coupling layers on flattened images (AffineCoupling,
RealNVP)."""

import torch
import torch.nn as nn


class AffineCoupling(nn.Module):
    """Affine coupling with separate s and t networks (s ends in Tanh); the
    `mask` buffer marks the kept dimensions (1 = kept).

    forward(x) returns (y, log_det) with y = x·mask + (1 − mask)·(x·exp(s) + t); forward(x,
    reverse=True) returns the inverse y only (no log-det), as in the original.
    """

    def __init__(self, dim, hidden_dim, mask):
        super().__init__()
        self.register_buffer('mask', mask)
        self.s_net = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.LeakyReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.LeakyReLU(),
            nn.Linear(hidden_dim, dim), nn.Tanh()
        )
        self.t_net = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.LeakyReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.LeakyReLU(),
            nn.Linear(hidden_dim, dim)
        )

    def forward(self, x, reverse=False):
        x_masked = x * self.mask
        s = self.s_net(x_masked) * (1 - self.mask)
        t = self.t_net(x_masked) * (1 - self.mask)

        if not reverse:
            y = x_masked + (1 - self.mask) * (x * torch.exp(s) + t)
            log_det = s.sum(dim=1)
            return y, log_det
        else:
            y = x_masked + (1 - self.mask) * ((x - t) * torch.exp(-s))
            return y


class RealNVP(nn.Module):
    """n_layers AffineCoupling layers with alternating masks (arange(dim) % 2,
    then 1 − mask). log_prob(x) runs the layers forward (data -> latent); sample(n) runs
    them in reverse from z ~ N(0, I).

    Differences from the original: log_prob is a TODO in the original; here it returns
    log_prior + the sum of the layers' log-dets, after the original's dequantization
    x + U[0, 1) (drawn with torch.rand_like) when dim > 2. sample uses the parameters'
    device instead of the original's global `device`; z is still drawn on the CPU and then
    moved, as in the original, so an RNG seed gives the same z on every device. The
    coupling class is the class attribute `coupling_layer`, so that fastflow.nn's RealNVP
    builds the same model on its fused layers.
    """

    coupling_layer = AffineCoupling

    def __init__(self, dim, hidden_dim, n_layers):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList()
        mask = torch.arange(dim).float() % 2
        for i in range(n_layers):
            self.layers.append(self.coupling_layer(dim, hidden_dim, mask))
            mask = 1 - mask

    def log_prob(self, x):
        if self.dim > 2:
            x = x + torch.rand_like(x)

        log_det_sum = 0
        for layer in self.layers:
            x, log_det = layer(x)
            log_det_sum += log_det

        prior = torch.distributions.Normal(0, 1)
        log_prior = prior.log_prob(x).sum(dim=1)
        return log_prior + log_det_sum

    def sample(self, num_samples):
        device = next(self.parameters()).device
        z = torch.randn(num_samples, self.dim).to(device)
        for layer in reversed(self.layers):
            z = layer(z, reverse=True)
        return z
