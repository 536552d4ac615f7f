"""The 2-D RealNVP on the fused vector coupling: drop-ins for
fastflow.reference.realnvp2d.CouplingLayer and RealNVP. The fused kernel reads s and t
as the two halves of the s/t network's output, in place."""

from .. import reference
from ..ops.affine_coupling import affine_coupling_packed
from .made import MaskedMLP


class CouplingLayer(reference.realnvp2d.CouplingLayer):
    """The 2-D RealNVP's CouplingLayer: tanh of s, masking, exp, affine map and log-det in
    one kernel that reads st = [s | t] in place (and writes its gradient as one tensor). The
    s/t network's MLP is a MaskedMLP (fastflow.nn.made): its layers in one call where that
    is faster."""

    def __init__(self, dim, hidden_dim, mask):
        super().__init__(dim, hidden_dim, mask)
        self.st_net.net = MaskedMLP.wrap(self.st_net.net)

    def _coupling(self, x, reverse):
        mask = self.mask.to(device=x.device, dtype=x.dtype)
        return affine_coupling_packed(x, self.st_net(x * mask), mask, tanh_scale=True,
                                      reverse=reverse)

    def forward(self, x):
        return self._coupling(x, reverse=False)

    def inverse(self, y):
        return self._coupling(y, reverse=True)


class RealNVP(reference.realnvp2d.RealNVP):
    """The 2-D RealNVP (forward: data -> latent, inverse) from fused CouplingLayers."""

    coupling_layer = CouplingLayer
