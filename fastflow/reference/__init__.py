"""The seed notebooks' models in pure PyTorch: the references fastflow is checked against.

Submodules, one per seed (names repeat across seeds, e.g. three RealNVPs):
  made         seed 000: MaskedLinear, MADE, generate_samples, log_likelihood
  mlp_realnvp  seed 000: AffineCoupling, RealNVP
  multiscale   seed 001: squeeze_2x2, MaskType, checkerboard_mask, Rescale, WNConv2d,
               ResidualBlock, ResNet, CouplingLayer, RealNVP (multi-scale), RealNVPLoss,
               bits_per_dim
  glow         seed 002: AffineCoupling, RealNVP, Invertible1x1Conv, ActNorm, GlowBlock,
               Glow, MADE, MAF
  maf          seed 003: MaskedLinear, PermuteLayer, MADE (Gaussian), MAF
  realnvp2d    seed 004: ScaleTranslateNet, CouplingLayer, RealNVP

Same constructor arguments, state_dict keys and math as the seeds. Where a seed is broken
or hard-codes a device the difference is named in the docstring: seed 002's MADE output
mask uses <= (not autoregressive) and its MAF samples through made_layers[0] only (both
kept); seed 000's RealNVP.log_prob is a TODO (here log_prior + the log-dets); seed 001's
RealNVP picks its device at construction (here it follows its parameters).
"""

from . import glow, made, maf, mlp_realnvp, multiscale, realnvp2d
from .glow import ActNorm, Glow, GlowBlock, Invertible1x1Conv
from .made import MADE, MaskedLinear
from .maf import MAF, PermuteLayer
from .mlp_realnvp import AffineCoupling
from .multiscale import (MaskType, RealNVPLoss, ResidualBlock, ResNet, Rescale, WNConv2d,
                         bits_per_dim, checkerboard_mask, squeeze_2x2)

__all__ = [
    "glow", "made", "maf", "mlp_realnvp", "multiscale", "realnvp2d",
    "ActNorm", "AffineCoupling", "Glow", "GlowBlock", "Invertible1x1Conv", "MADE", "MAF",
    "MaskType", "MaskedLinear", "PermuteLayer", "RealNVPLoss", "ResidualBlock", "ResNet",
    "Rescale", "WNConv2d", "bits_per_dim", "checkerboard_mask", "squeeze_2x2",
]
