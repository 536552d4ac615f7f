"""The MLP RealNVP on the fused vector coupling: drop-ins for
fastflow.reference.mlp_realnvp.AffineCoupling and RealNVP (same constructor arguments,
state_dict keys and results)."""

from .. import reference
from ..ops.affine_coupling import affine_coupling


class AffineCoupling(reference.mlp_realnvp.AffineCoupling):
    """The MLP RealNVP's AffineCoupling; the masking, exp, affine map and log-det sum run
    as one fused kernel. forward(x) -> (y, log_det); forward(x, reverse=True) -> y, as the
    reference."""

    def forward(self, x, reverse=False):
        x_masked = x * self.mask
        y, log_det = affine_coupling(x, self.s_net(x_masked), self.t_net(x_masked), self.mask,
                                     reverse=reverse)
        return y if reverse else (y, log_det)


class RealNVP(reference.mlp_realnvp.RealNVP):
    """The MLP RealNVP (log_prob, sample) built from fused AffineCoupling layers."""

    coupling_layer = AffineCoupling
