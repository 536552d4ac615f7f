"""The multi-scale RealNVP on scikit-learn's digits upsampled to 16×16: the reference and
fastflow's drop-in trained from the same weights, in bits per dimension; a grid of samples.

    python examples/realnvp_digits.py           # about two minutes on a 2-core CPU
    python examples/realnvp_digits.py --steps 3000 --device cuda
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import fastflow
from fastflow import reference

import _common

SIDE = 16
CONFIG = SimpleNamespace(num_scales=2, mid_channels=32, num_blocks=2)


def bits_per_dim(model, x, noise):
    """The RealNVP loss (NLL of 256-level images, nats per image) in bits per dimension, on
    the given dequantization noise (the same for both models)."""
    z, sldj = model.flows(*model._pre_process(x, noise=noise), reverse=False)
    return reference.multiscale.RealNVPLoss()(z, sldj) / (x[0].numel() * math.log(2))


def main(argv=None):
    args = _common.parse_args(__doc__.splitlines()[0], steps=200, argv=argv)
    folder = _common.out_folder(args, "realnvp_digits")
    digits = torch.tensor(load_digits().data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    # 256 levels, as the model's loss counts them.
    images = (F.interpolate(digits, size=SIDE, mode="bilinear", align_corners=False) * 255).round() / 255
    images = images.to(args.device)
    torch.manual_seed(0)
    ref = reference.multiscale.RealNVP(SIDE, 1, CONFIG).to(args.device)
    fast = fastflow.nn.multiscale.RealNVP(SIDE, 1, CONFIG).to(args.device)

    def batch(step):
        generator = torch.Generator().manual_seed(step)
        index = torch.randint(0, len(images), (32,), generator=generator)
        return images[index], torch.rand(32, 1, SIDE, SIDE, generator=generator).to(args.device)

    result = _common.train_both(ref, fast, bits_per_dim, batch, args.steps, lr=1e-3)
    torch.manual_seed(2)
    samples = fast.sample(36)  # puts the model in eval mode
    fig, axes = _common.figure(2, "multi-scale RealNVP, digits upsampled to 16×16")
    _common.plot_losses(axes[0], result, "bits per dimension")
    axes[1].imshow(_common.image_grid(samples, 6, SIDE), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    final = result["fastflow"]["losses"][-1]
    axes[1].set_title(f"36 samples (fastflow, {final:.2f} bits/dim)")
    axes[1].axis("off")
    _common.save(fig, folder / "realnvp_digits.png")
    _common.finish(result, folder)


if __name__ == "__main__":
    main()
