"""Seed 003: MAF built from Gaussian MADE blocks (MaskedLinear, PermuteLayer, MADE, MAF).

Seed 003 shows MADE's forward and inverse; its constructor and masks follow the course code
it comes from (Stanford CS236's MAF homework): hidden degrees arange(hidden_size) %
(input_size − 1) (cyclic), output degrees i − 1, connections where the degree does not
decrease, so that output i sees inputs < i.
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class MaskedLinear(nn.Linear):
    """Seed 003: a linear layer with a fixed mask (a buffer)."""

    def __init__(self, input_size, output_size, mask):
        super().__init__(input_size, output_size)
        self.register_buffer("mask", mask)

    def forward(self, x):
        return F.linear(x, self.mask * self.weight, self.bias)


class PermuteLayer(nn.Module):
    """Seed 003: reverses the order of the dimensions (its own inverse); log-det 0, [B, 1]."""

    def __init__(self, num_inputs):
        super().__init__()
        self.perm = np.array(np.arange(0, num_inputs)[::-1])

    def forward(self, inputs):
        return inputs[:, self.perm], torch.zeros(inputs.size(0), 1, device=inputs.device)

    def inverse(self, inputs):
        return inputs[:, self.perm], torch.zeros(inputs.size(0), 1, device=inputs.device)


class MADE(nn.Module):
    """Seed 003: Gaussian MADE, outputs (μ, α) for each dimension (α: log std).

    forward(z) samples sequentially, x_i = μ_i + z_i·exp(α_i) (input_size full passes);
    inverse(x) is one pass, z = (x − μ)·exp(−α). Both return log_det = −Σ α.
    """

    def __init__(self, input_size, hidden_size, n_hidden):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.n_hidden = n_hidden
        masks = self.create_masks()

        layers = [MaskedLinear(input_size, hidden_size, masks[0]), nn.ReLU(inplace=True)]
        for i in range(n_hidden):
            layers += [MaskedLinear(hidden_size, hidden_size, masks[i + 1]), nn.ReLU(inplace=True)]
        # Means and log stds share the last layer's mask.
        layers += [MaskedLinear(hidden_size, input_size * 2, masks[-1].repeat(2, 1))]
        self.net = nn.Sequential(*layers)

    def create_masks(self):
        """Masks for the natural order: degree(input k) = k, degree(hidden j) = j mod (D−1),
        degree(output i) = i − 1; a unit sees the units of the layer below with degree ≤ its own."""
        input_degrees = torch.arange(self.input_size)
        degrees = [input_degrees]
        for _ in range(self.n_hidden + 1):
            degrees += [torch.arange(self.hidden_size) % (self.input_size - 1)]
        degrees += [input_degrees % self.input_size - 1]
        self.m = degrees
        return [(d1.unsqueeze(-1) >= d0.unsqueeze(0)).float()
                for d0, d1 in zip(degrees[:-1], degrees[1:])]

    def forward(self, z):
        x = torch.zeros_like(z)
        log_det = None
        for i in range(self.input_size):
            out = self.net(x)
            mean, alpha = out.chunk(2, dim=1)
            x[:, i] = mean[:, i] + z[:, i] * torch.exp(alpha[:, i])
            if log_det is None:
                log_det = alpha[:, i].unsqueeze(1)
            else:
                log_det = torch.cat((log_det, alpha[:, i].unsqueeze(1)), dim=1)
        log_det = -torch.sum(log_det, dim=1)
        return x, log_det

    def inverse(self, x):
        out = self.net(x)
        mean, alpha = out.chunk(2, dim=1)
        z = (x - mean) * torch.exp(-alpha)
        log_det = -torch.sum(alpha, dim=1)
        return z, log_det


class MAF(nn.Module):
    """Seed 003: n_flows blocks of (MADE, PermuteLayer).

    Differences from the seed: log_probs sums the per-layer log-dets after flattening each
    to [B] (the seed stacks MADE's [B] with PermuteLayer's [B, 1], which torch.stack
    refuses); log_prob(x) (added) returns the per-sample values whose mean log_probs is;
    sample(n, z=None) takes optional normals and returns a tensor on the model's device
    (the seed: sample(device, n) returning numpy).
    """

    def __init__(self, input_size, hidden_size, n_hidden, n_flows):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.n_hidden = n_hidden
        self.n_flows = n_flows
        self.base_dist = torch.distributions.normal.Normal(0, 1)

        nf_blocks = []
        for _ in range(self.n_flows):
            nf_blocks.append(MADE(self.input_size, self.hidden_size, self.n_hidden))
            nf_blocks.append(PermuteLayer(self.input_size))
        self.nf = nn.Sequential(*nf_blocks)

    def log_prob(self, x):
        log_det_list = []
        for flow in self.nf:
            x, log_det = flow.inverse(x)
            log_det_list.append(log_det.reshape(-1))
        sum_log_det = torch.stack(log_det_list, dim=1).sum(dim=1)
        p_z = self.base_dist.log_prob(x).sum(-1)
        return p_z + sum_log_det

    def log_probs(self, x):
        return self.log_prob(x).mean()

    @torch.no_grad()
    def sample(self, n, z=None):
        device = next(self.parameters()).device
        x_sample = torch.randn(n, self.input_size, device=device) if z is None else z.to(device)
        for flow in self.nf[::-1]:
            x_sample, _ = flow.forward(x_sample)
        return x_sample
