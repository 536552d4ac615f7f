"""The MADE: a Bernoulli MADE for binarized MNIST (MaskedLinear, MADE), the original's
sampling loop (generate_samples) and its per-sample log-likelihood (log_likelihood).

The models are the original's, line for line. The two functions are the original's
generate_samples and get_log_likelihoods without plotting and data loading; their
differences from the original are named in their docstrings.
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class MaskedLinear(nn.Linear):
    """A linear layer with a configurable mask to enforce autoregressive constraints.

    `mask` is a registered buffer of ones [out_features, in_features]; set_mask copies a
    numpy array into it.
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer('mask', torch.ones(out_features, in_features))

    def set_mask(self, mask):
        self.mask.data.copy_(torch.from_numpy(mask.astype('float32')))

    def forward(self, input):
        return F.linear(input, self.mask * self.weight, self.bias)


class MADE(nn.Module):
    """MADE(input_dim, hidden_dims, output_dim), Bernoulli logits for each pixel.

    `net` is an nn.Sequential of layer_i (MaskedLinear) and relu_i; `layers` is a plain list
    of the MaskedLinear layers (registered through `net`, as in the original); `m` maps a
    layer index to its units' degrees (-1: the inputs). The hidden degrees are drawn from
    numpy's global RNG (np.random.randint, one hidden layer after another), after the layers'
    torch initialisation, as in the original. The masks assume output_dim == input_dim, as
    the original's. The layer class is the class attribute `masked_linear`
    (fastflow.nn.made.MADE swaps in its fused layer).
    """

    masked_linear = MaskedLinear

    def __init__(self, input_dim, hidden_dims, output_dim):
        super().__init__()
        self.input_dim = input_dim
        self.net = nn.Sequential()

        dims = [input_dim] + hidden_dims + [output_dim]
        self.layers = []
        for i in range(len(dims) - 1):
            m_layer = self.masked_linear(dims[i], dims[i + 1])
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

        # A hidden unit sees the units below with degree <= its own; an output unit needs
        # strictly smaller degrees, so output i sees inputs < i only.
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
    """The original's sampling loop: input_dim full forward passes, pixel i drawn in pass i.

    Puts the model in eval mode, as the original does. Returns the samples [num_samples, D]
    on the model's device, in its parameters' dtype.

    Differences from the original: no plotting (the original reshapes to 28x28 and plots);
    D is model.input_dim (the original hard-codes 784); the samples stay on the model's
    device (the original uses a global `device`). Optional `uniforms` [num_samples, D]:
    when given, pixel i is `(uniforms[:, i] < probs).float()` instead of
    torch.bernoulli(probs) (the same distribution for uniforms ~ U[0, 1)), so that a
    sampler can be compared with this one sample for sample.
    """
    model.eval()
    param = next(model.parameters())
    shape = (num_samples, model.input_dim)
    if uniforms is not None and tuple(uniforms.shape) != shape:
        raise ValueError(f"generate_samples: expected uniforms of shape {shape}, "
                         f"got {tuple(uniforms.shape)}")
    samples = torch.zeros(shape, device=param.device, dtype=param.dtype)
    for i in range(model.input_dim):
        logits = model(samples)
        probs = torch.sigmoid(logits[:, i])
        if uniforms is None:
            samples[:, i] = torch.bernoulli(probs)
        else:
            samples[:, i] = (uniforms[:, i].to(probs) < probs).float()
    return samples


def log_likelihood(model, x):
    """The original's get_log_likelihoods for one batch: log p(x) per sample [N], the
    Bernoulli log-likelihood -BCE-with-logits(model(x), x) summed over the pixels.

    Unlike the original function this neither switches the model to eval mode nor turns off
    autograd (MADE has no mode-dependent layers; the result stays differentiable).
    """
    return -F.binary_cross_entropy_with_logits(model(x), x, reduction='none').sum(dim=1)
