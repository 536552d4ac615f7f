"""Drop-in modules on fastflow's fused kernels, one submodule per reference model, named as
in fastflow.reference: the same constructor arguments, state_dict keys and results, so a
trained reference model loads with load_state_dict(strict=True).

  made         the MADE: MaskedLinear, MADE
  mlp_realnvp  the MLP RealNVP: AffineCoupling, RealNVP
  maf          the MAF: MaskedLinear, PermuteLayer, MADE (Gaussian), MAF
  multiscale   the multi-scale RealNVP: CouplingLayer, RealNVP, RealNVPLoss, bits_per_dim
  realnvp2d    the 2-D RealNVP: CouplingLayer, RealNVP
"""

from . import made, maf, mlp_realnvp, multiscale, realnvp2d
from .made import MADE, MaskedLinear
from .mlp_realnvp import AffineCoupling

__all__ = ["made", "maf", "mlp_realnvp", "multiscale", "realnvp2d", "AffineCoupling", "MADE",
           "MaskedLinear"]
