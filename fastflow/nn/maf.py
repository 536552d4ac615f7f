"""The Gaussian MADE and the MAF on the fused masked linear: drop-ins for
fastflow.reference.maf's MaskedLinear, PermuteLayer, MADE and MAF (same constructor
arguments, masks, state_dict keys and results). See fastflow.nn.made for how each layer
picks its kernel.

Sampling runs in one pass (fastflow.made_sample and its relatives): MADE.forward(z), the
reference's sequential direction, and MAF.sample(n, z), which also returns log p of the
samples."""

from __future__ import annotations

import numpy as np
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


class PermuteLayer(reference.maf.PermuteLayer):
    """The MAF's PermuteLayer(num_inputs): forward and inverse return (inputs[:, perm],
    zeros [B, 1]) as the reference. On CPU tensors the columns are taken with index_select
    through a tensor that shares `perm`'s memory (made again when `perm` is replaced or the
    layer copied, and seeing in-place edits of it), where the reference's numpy index is
    converted on every call: 12 -> 6 us a call, and the MAF's log_prob 1.12x faster at
    batch 16 (2-core AMD EPYC, Zen 4). Any other case (another device, an index that is not
    a writable 1-D int64 array, one out of index_select's range such as a negative one,
    torch.compile) takes the reference's indexing."""

    _perm_seen = None
    _perm_index = None

    def __getstate__(self):
        # A copy's perm is a new array: its index must share that one's memory, so it is
        # made again on the copy's first call rather than copied.
        state = dict(super().__getstate__())
        state.pop("_perm_seen", None)
        state.pop("_perm_index", None)
        return state

    def _permute(self, inputs):
        perm = self.perm
        if perm is not self._perm_seen:
            usable = (isinstance(perm, np.ndarray) and perm.dtype == np.int64 and perm.ndim == 1
                      and perm.flags.c_contiguous and perm.flags.writeable)
            self._perm_index = torch.from_numpy(perm) if usable else None
            self._perm_seen = perm
        index = self._perm_index
        if index is not None and inputs.is_cpu and not torch.compiler.is_compiling():
            try:
                return inputs.index_select(1, index)
            except (IndexError, RuntimeError):  # the reference's indexing wraps or explains
                pass
        return inputs[:, perm]

    def forward(self, inputs):
        return self._permute(inputs), torch.zeros(inputs.size(0), 1, device=inputs.device)

    inverse = forward  # the reversal is its own inverse, and so is the reference's


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

    def __init__(self, input_size, hidden_size, n_hidden, n_flows):
        super().__init__(input_size, hidden_size, n_hidden, n_flows)
        for index, block in enumerate(self.nf):  # stateless: the state_dict is unchanged
            if type(block) is reference.maf.PermuteLayer:
                self.nf[index] = PermuteLayer(input_size)

    @torch.no_grad()
    def sample(self, n, z=None):
        device = next(self.parameters()).device
        x = torch.randn(n, self.input_size).to(device) if z is None else z.to(device)
        log_prob = self.base_dist.log_prob(x).sum(-1)
        for flow in self.nf[::-1]:
            x, log_det = flow.forward(x)
            log_prob = log_prob + log_det.reshape(-1)
        return x, log_prob
