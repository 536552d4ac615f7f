"""The seed notebooks' models in pure PyTorch: the references fastflow is checked against.
Needs only torch and numpy.

Submodules, one per seed (names repeat across seeds: three RealNVPs, two MADEs):
  made         seed 000: MaskedLinear, MADE (Bernoulli, binarized MNIST), generate_samples,
               log_likelihood
  mlp_realnvp  seed 000: AffineCoupling, RealNVP (MLP couplings)
  multiscale   seed 001: squeeze_2x2, MaskType, checkerboard_mask, Rescale, WNConv2d,
               ResidualBlock, ResNet, CouplingLayer, _RealNVP, RealNVP (multi-scale),
               RealNVPLoss, bits_per_dim
  glow         seed 002: AffineCoupling, RealNVP, Invertible1x1Conv, ActNorm, GlowBlock,
               Glow, MADE, MAF
  maf          seed 003: MaskedLinear, PermuteLayer, MADE (Gaussian), MAF
  realnvp2d    seed 004: ScaleTranslateNet, CouplingLayer, RealNVP (2-D data)

Each model has the seed's class name, constructor arguments, state_dict keys (buffers
registered, or plain attributes, as the seed has them), math, and order of RNG draws at
construction, so that one seed builds the same weights and masks as the seed's code.
Plotting, training loops and data loading are left out. Differences from the seeds (each
also named in its docstring):
  * no device is hard-coded: seed 000's RealNVP.sample, seed 001's RealNVP (which picks
    CUDA at construction) and seed 003's MAF.sample use the parameters' or the input's
    device;
  * additions that make results reproducible: made.generate_samples(..., uniforms),
    multiscale.RealNVP._pre_process(x, noise) and .sample(n, z), maf.MAF.sample(n, z);
    maf.MAF.log_prob (per sample; the seed's log_probs is its mean);
  * sampling functions return tensors instead of plotting them (seeds 000, 001) or
    returning numpy (seed 003);
  * seed 000's RealNVP.log_prob, a TODO in the seed, is log_prior + the log-dets;
  * multiscale.squeeze_2x2 also raises a ValueError for an x that is not 4-D, and seed
    001's view is reshape where channels-last tensors can arrive;
  * fixes where a seed cannot run: seed 003's MAF stacks log-dets of shapes [B] and
    [B, 1] (flattened here); seed 002 uses torch.qr (removed; torch.linalg.qr here) and
    torch.lu (deprecated; torch.linalg.lu_factor), and its MAF's reverse branch reads an
    undefined name;
  * seed 002's other defects are kept and named: its MADE is not autoregressive, its MAF
    samples through made_layers[0] only, its ActNorm initialisation does not zero the mean;
  * seed 003's MADE constructor and masks, which the seed does not show, follow the
    Stanford CS236 homework it comes from (see maf's module docstring).

Re-exported here: the names that are unambiguous across the seeds, and AffineCoupling,
MaskedLinear and MADE of seed 000, MAF of seed 003.
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
