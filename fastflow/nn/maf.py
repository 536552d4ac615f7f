"""The Gaussian MADE and the MAF on the fused masked linear: drop-ins for
fastflow.reference.maf's MaskedLinear, MADE and MAF (same constructor arguments, masks,
state_dict keys and results). See fastflow.nn.made for how each layer picks its kernel.

Sampling runs in one pass (fastflow.made_sample and its relatives): MADE.forward(z), the
reference's sequential direction, and MAF.sample(n, z), which also returns log p of the
samples."""

from __future__ import annotations

import torch

from .. import reference
from ..ops.made_sample import gaussian_made_sample
from .made import FusedMaskedForward, MaskedMLP, check_zero_one


class MaskedLinear(FusedMaskedForward, reference.maf.MaskedLinear):
    """The MAF's MaskedLinear(input_size, output_size, mask): the mask [output_size,
    input_size] must hold only 0 and 1 (ValueError otherwise)."""

    def __init__(self, input_size, output_size, mask):
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"MaskedLinear: mask must be a tensor, got {type(mask).__name__}")
        if tuple(mask.shape) != (output_size, input_size):
            raise ValueError(f"MaskedLinear: mask must have shape ({output_size}, {input_size}), "
                             f"got {tuple(mask.shape)}")
        check_zero_one(mask, "mask")
        super().__init__(input_size, output_size, mask)
        self._follow_mask()


class MADE(reference.maf.MADE):
    """The Gaussian MADE. forward(z) -> (x, log_det), the sequential direction
    x_d = μ_d + z_d·exp(α_d), runs in one pass instead of input_size (no gradient: the
    reference's in-place loop has none either); inverse(x) is the reference's one pass, its
    `net` a MaskedMLP (fastflow.nn.made)."""

    masked_linear = MaskedLinear

    def __init__(self, input_size, hidden_size, n_hidden):
        super().__init__(input_size, hidden_size, n_hidden)
        self.net = MaskedMLP.wrap(self.net)

    def forward(self, z):
        return gaussian_made_sample(self, z)

    def inverse(self, x):
        """The reference's inverse with one tensor operation fewer: −α is formed once for
        exp(−α) and the log-det −Σα (negation is exact, so the numbers are the reference's
        bit for bit). At batch 16 the inverse is about six small operations around the net."""
        mean, alpha = self.net(x).chunk(2, dim=1)
        neg_alpha = -alpha
        return (x - mean) * torch.exp(neg_alpha), neg_alpha.sum(dim=1)


class MAF(reference.maf.MAF):
    """The MAF built from fused Gaussian MADE blocks.

    sample(n, z=None) -> (x [n, input_size], log_prob [n]): every block's forward in
    reverse order with its permutation, as the reference, each MADE in one pass; log p(x)
    of the samples comes along (log N(z; 0, I) plus the blocks' log-dets), with no extra
    pass. The difference from the reference's sample: it returns log p(x) too.
    """

    made = MADE

    @torch.no_grad()
    def sample(self, n, z=None):
        device = next(self.parameters()).device
        x = torch.randn(n, self.input_size).to(device) if z is None else z.to(device)
        log_prob = self.base_dist.log_prob(x).sum(-1)
        for flow in self.nf[::-1]:
            x, log_det = flow.forward(x)
            log_prob = log_prob + log_det.reshape(-1)
        return x, log_prob
