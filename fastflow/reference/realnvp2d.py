"""The 2-D RealNVP: RealNVP on 2-D data such as the Swiss roll (ScaleTranslateNet,
CouplingLayer, RealNVP), as in the original; its training and plotting are left out."""

import torch
import torch.nn as nn


class ScaleTranslateNet(nn.Module):
    """The MLP (two hidden ReLU layers) that predicts scale and translation."""

    def __init__(self, in_features, hidden_features, out_features):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden_features),
            nn.ReLU(),
            nn.Linear(hidden_features, hidden_features),
            nn.ReLU(),
            nn.Linear(hidden_features, out_features),
        )

    def forward(self, x):
        return self.net(x)


class CouplingLayer(nn.Module):
    """One affine coupling layer; st = st_net(x·mask) is split into s (through
    tanh) and t, and y = x·mask + (1 − mask)·(x·exp(s) + t).

    forward(x) returns (y, log_det_J), inverse(y) returns (x, log_det_J) with the inverse's
    log-det (the negative). The mask (1 = kept) is a plain attribute, as in the original:
    it is not a buffer, so it is not in the state_dict and does not follow .to(); each call
    moves it to the input's device, as the original does.
    """

    def __init__(self, dim, hidden_dim, mask):
        super().__init__()
        self.dim = dim
        self.mask = mask
        self.st_net = ScaleTranslateNet(dim, hidden_dim, dim * 2)

    def forward(self, x):
        mask = self.mask.to(x.device)
        x_masked = x * mask
        st = self.st_net(x_masked)
        s, t = st.chunk(2, dim=1)
        s = torch.tanh(s)
        y = x_masked + (1 - mask) * (x * torch.exp(s) + t)
        log_det_J = torch.sum((1 - mask) * s, dim=1)
        return y, log_det_J

    def inverse(self, y):
        mask = self.mask.to(y.device)
        y_masked = y * mask
        st = self.st_net(y_masked)
        s, t = st.chunk(2, dim=1)
        s = torch.tanh(s)
        x = y_masked + (1 - mask) * ((y - t) * torch.exp(-s))
        log_det_J = -((1 - mask) * s).sum(dim=1)
        return x, log_det_J


class RealNVP(nn.Module):
    """num_coupling_layers CouplingLayers whose masks alternate between keeping the
    first dim // 2 dimensions and keeping the rest (int64 tensors, as the original builds
    them). forward(x) maps data to latent, returning (z, log_det_J); inverse(z) maps back,
    returning (x, log_det_J of the inverse). The coupling class is the class attribute
    `coupling_layer`, so that fastflow.nn's RealNVP builds the same model on its fused layers.
    """

    coupling_layer = CouplingLayer

    def __init__(self, dim, hidden_dim, num_coupling_layers):
        super().__init__()
        self.dim = dim
        masks = []
        for i in range(num_coupling_layers):
            if i % 2 == 0:
                mask = torch.tensor([1 if j < dim // 2 else 0 for j in range(dim)])
            else:
                mask = torch.tensor([0 if j < dim // 2 else 1 for j in range(dim)])
            masks.append(mask)
        self.coupling_layers = nn.ModuleList(
            [self.coupling_layer(dim, hidden_dim, mask) for mask in masks]
        )

    def forward(self, x):
        log_det_J = 0
        for layer in self.coupling_layers:
            x, ld = layer(x)
            log_det_J += ld
        return x, log_det_J

    def inverse(self, z):
        log_det_J = 0
        for layer in reversed(self.coupling_layers):
            z, ld = layer.inverse(z)
            log_det_J += ld
        return z, log_det_J
