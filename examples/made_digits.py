"""The MADE on scikit-learn's 8×8 digits, binarized (D = 64): the reference and fastflow's
drop-in trained from the same weights; a grid of one-pass samples, and the sampling time of
the reference's loop (64 network passes) against fastflow.made_sample (one).

    python examples/made_digits.py              # about a minute on a 2-core CPU
    python examples/made_digits.py --steps 5000
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import fastflow
from fastflow import reference

import _common


def nll(model, x):
    """Negative log-likelihood per image, in nats."""
    return F.binary_cross_entropy_with_logits(model(x), x, reduction="sum") / len(x)


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    args = _common.parse_args(__doc__.splitlines()[0], steps=5000, argv=argv)
    folder = _common.out_folder(args, "made_digits")
    data = torch.tensor(load_digits().data > 8, dtype=torch.float32, device=args.device)
    np.random.seed(0)  # the MADE draws its hidden degrees from numpy
    torch.manual_seed(0)
    ref = reference.made.MADE(64, [256, 256], 64).to(args.device)
    fast = fastflow.nn.MADE(64, [256, 256], 64).to(args.device)
    generator = torch.Generator().manual_seed(1)
    order = [torch.randint(0, len(data), (128,), generator=generator) for _ in range(args.steps)]
    result = _common.train_both(ref, fast, nll, lambda step: (data[order[step]],), args.steps,
                                lr=1e-3)
    samples = 64
    with torch.no_grad():
        images, _ = fastflow.made_sample(fast, samples)
        repeats = 1 if args.smoke else 3
        reference_s = best_time(lambda: reference.made.generate_samples(ref, samples), repeats)
        fastflow_s = best_time(lambda: fastflow.made_sample(fast, samples), repeats)
    print(f"sampling {samples} images: reference loop {reference_s * 1e3:.1f} ms, "
          f"fastflow.made_sample {fastflow_s * 1e3:.1f} ms ({reference_s / fastflow_s:.0f}×)")

    fig, axes = _common.figure(3, "MADE on binarized 8×8 digits")
    _common.plot_losses(axes[0], result, "negative log-likelihood (nats per image)")
    axes[1].imshow(_common.image_grid(images, 8, 8), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("64 one-pass samples (fastflow)")
    axes[1].axis("off")
    axes[2].bar(["reference loop", "fastflow"], [reference_s * 1e3, fastflow_s * 1e3],
                color=["tab:blue", "tab:orange"])
    axes[2].set_ylabel("ms for 64 samples")
    axes[2].set_title(f"sampling time ({reference_s / fastflow_s:.0f}× faster)")
    _common.save(fig, folder / "made_digits.png")
    _common.finish(result, folder, {"sampling_ms": {"reference": reference_s * 1e3,
                                                    "fastflow": fastflow_s * 1e3}})


if __name__ == "__main__":
    main()
