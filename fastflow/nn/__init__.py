"""Drop-in modules on fastflow's fused kernels, one submodule per seed as in
fastflow.reference: the same constructor arguments, state_dict keys and results, so a
trained reference model loads with load_state_dict(strict=True).

  mlp_realnvp  seed 000: AffineCoupling, RealNVP
  multiscale   seed 001: CouplingLayer, RealNVP (multi-scale), RealNVPLoss, bits_per_dim
  realnvp2d    seed 004: CouplingLayer, RealNVP
"""

from . import mlp_realnvp, multiscale, realnvp2d
from .mlp_realnvp import AffineCoupling

__all__ = ["mlp_realnvp", "multiscale", "realnvp2d", "AffineCoupling"]
