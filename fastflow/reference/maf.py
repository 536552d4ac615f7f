"""The MAF, built from Gaussian MADE blocks (MaskedLinear, PermuteLayer, MADE, MAF).

The original shows MaskedLinear, PermuteLayer, MADE's forward and inverse, and MAF's
constructor, log_probs and sample, but not MADE's constructor and masks. Those come from
the course code the original's classes are taken from (Stanford CS236's MAF homework,
codebase/flow_network.py): checked against a public copy of that file,
github.com/rsbandhu/Flow-Models-and-GANs codebase/flow_network.py (its MaskedLinear,
PermuteLayer and MAF constructor are the original's code), and against several other
students' copies of the homework with the same MADE constructor and create_masks. The masks
give input k degree k, hidden unit j degree j % (input_size − 1) and output i degree
i − 1; a unit sees the units below whose degree does not exceed its own, so output i (mean
and log-std alike) depends on inputs < i only, and output 0 is a constant (its bias).
The original's IAF is prose only and is not reproduced.
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class MaskedLinear(nn.Linear):
    """A linear layer with a fixed mask, a registered buffer (in the state_dict)."""

    def __init__(self, input_size, output_size, mask):
        super().__init__(input_size, output_size)
        self.register_buffer("mask", mask)

    def forward(self, x):
        return F.linear(x, self.mask * self.weight, self.bias)


class PermuteLayer(nn.Module):
    """Reverses the order of the dimensions (so it is its own inverse); forward and
    inverse both return (permuted inputs, zeros [B, 1]), as in the original."""

    def __init__(self, num_inputs):
        super().__init__()
        self.perm = np.array(np.arange(0, num_inputs)[::-1])

    def forward(self, inputs):
        return inputs[:, self.perm], torch.zeros(inputs.size(0), 1, device=inputs.device)

    def inverse(self, inputs):
        return inputs[:, self.perm], torch.zeros(inputs.size(0), 1, device=inputs.device)


class MADE(nn.Module):
    """Gaussian MADE, net(x) = (μ, α) for each dimension (α: log std), with
    `net` the nn.Sequential MaskedLinear, ReLU, (MaskedLinear, ReLU) × n_hidden,
    MaskedLinear to 2·input_size outputs (the means' and log-stds' rows share one mask).
    `m` holds the degrees (see the module docstring).

    forward(z) -> (x, log_det): sequential, input_size full passes,
    x_i = μ_i + z_i·exp(α_i); inverse(x) -> (z, log_det): one pass, z = (x − μ)·exp(−α).
    Both return log_det = −Σ α, the log-determinant of the x -> z map, as the original.
    forward writes x in place between passes, as the original: it is for sampling (under
    no_grad); autograd cannot differentiate through it. The layer class is the class
    attribute `masked_linear`.
    """

    masked_linear = MaskedLinear

    def __init__(self, input_size, hidden_size, n_hidden):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.n_hidden = n_hidden
        masks = self.create_masks()

        layers = [self.masked_linear(input_size, hidden_size, masks[0]), nn.ReLU(inplace=True)]
        for i in range(n_hidden):
            layers += [self.masked_linear(hidden_size, hidden_size, masks[i + 1]), nn.ReLU(inplace=True)]
        # The means' and the log-stds' rows share the last layer's mask.
        layers += [self.masked_linear(hidden_size, input_size * 2, masks[-1].repeat(2, 1))]
        self.net = nn.Sequential(*layers)

    def create_masks(self):
        """Masks for the natural order: degree(input k) = k, degree(hidden j) = j mod (D − 1),
        degree(output i) = i − 1; a unit sees the units of the layer below with degree <= its
        own. Deterministic (no RNG)."""
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
    """`nf` = nn.Sequential of n_flows (MADE, PermuteLayer) pairs, base_dist
    N(0, 1). log_probs(x) is the batch mean of log p(x), running every block's inverse
    (data -> latent); sample runs the blocks' forward in reverse order.

    Differences from the original:
      * log_prob(x) is added: the per-sample log p(x) [B]; log_probs(x) is its mean, as
        the original's log_probs;
      * each block's log-det is flattened to [B] before they are stacked: the original
        stacks MADE's [B] with PermuteLayer's [B, 1], which torch.stack refuses;
      * sample(n, z=None) replaces the original's sample(device, n): it uses the
        parameters' device, takes optional normals z [n, input_size] (drawn when not given:
        on the CPU, then moved, as the original does) and returns a tensor [n, input_size]
        on that device (the original returns a numpy array), computed under no_grad.

    The MADE class is the class attribute `made`.
    """

    made = MADE

    def __init__(self, input_size, hidden_size, n_hidden, n_flows):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.n_hidden = n_hidden
        self.n_flows = n_flows
        self.base_dist = torch.distributions.normal.Normal(0, 1)

        nf_blocks = []
        for _ in range(self.n_flows):
            nf_blocks.append(self.made(self.input_size, self.hidden_size, self.n_hidden))
            nf_blocks.append(PermuteLayer(self.input_size))
        self.nf = nn.Sequential(*nf_blocks)

    def log_prob(self, x):
        """Per-sample log p(x) [B] = log N(z; 0, I) + the blocks' log-dets (added)."""
        log_det_list = []
        for flow in self.nf:
            x, log_det = flow.inverse(x)
            log_det_list.append(log_det.reshape(-1))
        sum_log_det = torch.stack(log_det_list, dim=1).sum(dim=1)
        p_z = self.base_dist.log_prob(x).sum(-1)
        return p_z + sum_log_det

    def log_probs(self, x):
        """The original's log_probs: the mean of log_prob(x) over the batch."""
        return self.log_prob(x).mean()

    @torch.no_grad()
    def sample(self, n, z=None):
        """n samples x [n, input_size] from z ~ N(0, I) (or the given z)."""
        device = next(self.parameters()).device
        x_sample = torch.randn(n, self.input_size).to(device) if z is None else z.to(device)
        for flow in self.nf[::-1]:
            x_sample, _ = flow.forward(x_sample)
        return x_sample
