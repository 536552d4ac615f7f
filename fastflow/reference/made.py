"""Seed 000: MADE on binarized MNIST (MaskedLinear, MADE), its sampling loop and its
log-likelihood, as in the seed."""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class MaskedLinear(nn.Linear):
    """Seed 000: a linear layer with a configurable mask to enforce autoregressive constraints."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer('mask', torch.ones(out_features, in_features))

    def set_mask(self, mask):
        self.mask.data.copy_(torch.from_numpy(mask.astype('float32')))

    def forward(self, input):
        return F.linear(input, self.mask * self.weight, self.bias)


class MADE(nn.Module):
    """Seed 000: MADE(input_dim, hidden_dims, output_dim). Hidden degrees are drawn from
    numpy's global RNG (np.random.randint), one layer after another, as in the seed."""

    def __init__(self, input_dim, hidden_dims, output_dim):
        super().__init__()
        self.input_dim = input_dim
        self.net = nn.Sequential()

        dims = [input_dim] + hidden_dims + [output_dim]
        self.layers = []
        for i in range(len(dims) - 1):
            m_layer = MaskedLinear(dims[i], dims[i + 1])
            self.net.add_module(f"layer_{i}", m_layer)
            self.layers.append(m_layer)
            if i < len(dims) - 2:
                self.net.add_module(f"relu_{i}", nn.ReLU())

        self.m = {}
        self.create_masks()

    def create_masks(self):
        L = len(self.layers)
        # Input degrees 1..D; hidden degrees random in 1..D-1; output degrees 1..D.
        self.m[-1] = np.arange(1, self.input_dim + 1)
        for l in range(L - 1):
            self.m[l] = np.random.randint(1, self.input_dim, size=self.layers[l].out_features)
        self.m[L - 1] = np.arange(1, self.input_dim + 1)

        # Hidden unit j sees input units i with m(i) <= m(j); the output layer uses <.
        for l in range(L):
            if l < L - 1:
                mask = self.m[l - 1][None, :] <= self.m[l][:, None]
            else:
                mask = self.m[l - 1][None, :] < self.m[l][:, None]
            self.layers[l].set_mask(mask)

    def forward(self, x):
        return self.net(x)


@torch.no_grad()
def generate_samples(model, num_samples=16, uniforms=None):
    """Seed 000's sampling loop: D full forward passes, one pixel per pass.

    Differences from the seed: no plotting; the samples stay on the model's device and are
    returned as [num_samples, D]; D is the model's input_dim (the seed hard-codes 784).
    With `uniforms` [num_samples, D] given, pixel i is 1 exactly when uniforms[:, i] <
    sigmoid(logit_i) (in place of torch.bernoulli), so that other samplers can be compared
    sample for sample.
    """
    model.eval()
    param = next(model.parameters())
    samples = torch.zeros(num_samples, model.input_dim, device=param.device, dtype=param.dtype)
    for i in range(model.input_dim):
        logits = model(samples)
        probs = torch.sigmoid(logits[:, i])
        if uniforms is None:
            samples[:, i] = torch.bernoulli(probs)
        else:
            samples[:, i] = (uniforms[:, i].to(probs) < probs).to(samples.dtype)
    return samples


def log_likelihood(model, x):
    """Seed 000's per-sample log-likelihood: -BCE(model(x), x) summed over the pixels."""
    return -F.binary_cross_entropy_with_logits(model(x), x, reduction='none').sum(dim=1)
