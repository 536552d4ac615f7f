"""The MAF (5 blocks of a Gaussian MADE) on scikit-learn's 8×8 digits, dequantized: the
reference and fastflow's drop-in trained from the same weights; a grid of one-pass samples.

    python examples/maf_digits.py               # about a minute on a 2-core CPU
    python examples/maf_digits.py --steps 5000
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

import fastflow
from fastflow import reference

import _common

LEVELS = 17  # the digits' pixels take the values 0..16
ALPHA = 0.05  # logit(ALPHA + (1 − 2·ALPHA)·x): keeps the logits finite


def to_logits(pixels, noise):
    x = (pixels + noise) / LEVELS
    y = ALPHA + (1 - 2 * ALPHA) * x
    return torch.log(y) - torch.log1p(-y)


def to_images(logits):
    return ((torch.sigmoid(logits) - ALPHA) / (1 - 2 * ALPHA)).clamp(0, 1)


def main(argv=None):
    args = _common.parse_args(__doc__.splitlines()[0], steps=2000, argv=argv)
    folder = _common.out_folder(args, "maf_digits")
    pixels = torch.tensor(load_digits().data, dtype=torch.float32, device=args.device)
    torch.manual_seed(0)
    ref = reference.maf.MAF(64, 256, 1, 5).to(args.device)
    fast = fastflow.nn.maf.MAF(64, 256, 1, 5).to(args.device)

    def batch(step):
        generator = torch.Generator().manual_seed(step)
        index = torch.randint(0, len(pixels), (128,), generator=generator)
        noise = torch.rand(128, 64, generator=generator).to(args.device)
        return (to_logits(pixels[index], noise),)

    result = _common.train_both(ref, fast, lambda m, y: -m.log_prob(y).mean(), batch,
                                args.steps, lr=1e-3)
    torch.manual_seed(2)
    samples, _ = fast.sample(64)
    fig, axes = _common.figure(2, "MAF (5 blocks) on dequantized 8×8 digits")
    _common.plot_losses(axes[0], result, "negative log-likelihood of the logits (nats)")
    axes[1].imshow(_common.image_grid(to_images(samples), 8, 8), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("64 samples (fastflow, one pass per block)")
    axes[1].axis("off")
    _common.save(fig, folder / "maf_digits.png")
    _common.finish(result, folder)


if __name__ == "__main__":
    main()
