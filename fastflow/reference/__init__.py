"""The reference models fastflow is checked against, in pure PyTorch (torch and numpy only).

The models are ported from the notebooks the project started from, which are not included in
this repository; "the original" below and in the submodules means the notebook code a model
was ported from. Submodules (made and mlp_realnvp come from one notebook, every other module
from its own; class names repeat across modules: four RealNVPs, three MADEs):
  made         the MADE (Bernoulli, binarized MNIST): MaskedLinear, MADE, generate_samples,
               log_likelihood
  mlp_realnvp  the MLP RealNVP: AffineCoupling, RealNVP (MLP couplings)
  multiscale   the multi-scale RealNVP: squeeze_2x2, MaskType, checkerboard_mask, Rescale,
               WNConv2d, ResidualBlock, ResNet, CouplingLayer, _RealNVP, RealNVP,
               RealNVPLoss, bits_per_dim
  glow         the vector Glow module: AffineCoupling, RealNVP, Invertible1x1Conv, ActNorm,
               GlowBlock, Glow, MADE, MAF
  maf          the MAF and the Gaussian MADE: MaskedLinear, PermuteLayer, MADE, MAF
  realnvp2d    the 2-D RealNVP: ScaleTranslateNet, CouplingLayer, RealNVP

Each model has the original's class name, constructor arguments, state_dict keys (buffers
registered, or plain attributes, as the original has them), math, and order of RNG draws at
construction, so that one RNG seed builds the same weights and masks as the original code.
Plotting, training loops and data loading are left out. Differences from the originals (each
also named in its docstring):
  * no device is hard-coded: the MLP RealNVP's sample, the multi-scale RealNVP (which picks
    CUDA at construction) and the MAF's sample use the parameters' or the input's device;
  * additions that make results reproducible: made.generate_samples(..., uniforms),
    multiscale.RealNVP._pre_process(x, noise) and .sample(n, z), maf.MAF.sample(n, z);
    maf.MAF.log_prob (per sample; the original's log_probs is its mean);
  * sampling functions return tensors instead of plotting them (the MADE, the multi-scale
    RealNVP) or returning numpy (the MAF);
  * the MLP RealNVP's log_prob, a TODO in the original, is log_prior + the log-dets;
  * multiscale.squeeze_2x2 also raises a ValueError for an x that is not 4-D, and the
    multi-scale RealNVP's view is reshape where channels-last tensors can arrive;
  * fixes where an original cannot run: the MAF stacks log-dets of shapes [B] and [B, 1]
    (flattened here); the vector Glow module uses torch.qr (removed; torch.linalg.qr here)
    and torch.lu (deprecated; torch.linalg.lu_factor), and its MAF's reverse branch reads an
    undefined name;
  * the vector Glow module's other defects are kept and named: its MADE is not
    autoregressive, its MAF samples through made_layers[0] only, its ActNorm initialisation
    does not zero the mean;
  * the Gaussian MADE's constructor and masks, which its notebook does not show, follow the
    Stanford CS236 homework it comes from (see maf's module docstring).

Re-exported here: the names that are unambiguous across the modules, and AffineCoupling of
mlp_realnvp, MaskedLinear and MADE of made, MAF of maf.
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
