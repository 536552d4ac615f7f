"""The 2-D RealNVP on scikit-learn's two moons: the reference and fastflow's drop-in trained
from the same weights; plots of the samples over the data and of the learned density.

    python examples/realnvp_moons.py            # about a minute on a 2-core CPU
    python examples/realnvp_moons.py --steps 3000
"""

from __future__ import annotations

import math

import torch
from sklearn.datasets import make_moons

import fastflow
from fastflow import reference

import _common


def log_prob(model, x):
    z, log_det = model(x)
    return -0.5 * (z ** 2).sum(1) - math.log(2 * math.pi) + log_det


def main(argv=None):
    args = _common.parse_args(__doc__.splitlines()[0], steps=3000, argv=argv)
    folder = _common.out_folder(args, "realnvp_moons")
    data = torch.tensor(make_moons(4096, noise=0.05, random_state=0)[0], dtype=torch.float32)
    data = ((data - data.mean(0)) / data.std(0)).to(args.device)
    torch.manual_seed(0)
    ref = reference.realnvp2d.RealNVP(2, 128, 6).to(args.device)
    fast = fastflow.nn.realnvp2d.RealNVP(2, 128, 6).to(args.device)
    generator = torch.Generator().manual_seed(1)
    order = [torch.randint(0, len(data), (256,), generator=generator) for _ in range(args.steps)]
    result = _common.train_both(ref, fast, lambda m, x: -log_prob(m, x).mean(),
                                lambda step: (data[order[step]],), args.steps, lr=1e-3)
    with torch.no_grad():
        samples, _ = fast.inverse(torch.randn(1000, 2, device=args.device))
        grid = torch.linspace(-3, 3, 60 if args.smoke else 200, device=args.device)
        xx, yy = torch.meshgrid(grid, grid, indexing="xy")
        density = log_prob(fast, torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).exp()
    fig, axes = _common.figure(3, "2-D RealNVP on two moons")
    _common.plot_losses(axes[0], result, "negative log-likelihood (nats)")
    axes[1].scatter(*data[:1000].cpu().T, s=3, alpha=0.4, label="data")
    axes[1].scatter(*samples.cpu().T, s=3, alpha=0.4, label="fastflow samples")
    axes[1].legend(loc="upper right")
    axes[1].set_title("samples over the data")
    axes[2].contourf(xx.cpu(), yy.cpu(), density.reshape(xx.shape).cpu(), levels=30)
    axes[2].set_title("learned density")
    for ax in axes[1:]:
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
    _common.save(fig, folder / "realnvp_moons.png")
    _common.finish(result, folder)


if __name__ == "__main__":
    main()
