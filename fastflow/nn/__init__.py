"""Drop-in modules on fastflow's fused kernels, one submodule per seed as in
fastflow.reference: the same constructor arguments, state_dict keys and results, so a
trained reference model loads with load_state_dict(strict=True).

  made         seed 000: MaskedLinear, MADE
  mlp_realnvp  seed 000: AffineCoupling, RealNVP
  maf          seed 003: MaskedLinear, MADE (Gaussian), MAF
  multiscale   seed 001: CouplingLayer, RealNVP (multi-scale), RealNVPLoss, bits_per_dim
  realnvp2d    seed 004: CouplingLayer, RealNVP
"""

from . import made, maf, mlp_realnvp, multiscale, realnvp2d
from .made import MADE, MaskedLinear
from .mlp_realnvp import AffineCoupling

__all__ = ["made", "maf", "mlp_realnvp", "multiscale", "realnvp2d", "AffineCoupling", "MADE",
           "MaskedLinear"]
