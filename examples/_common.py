"""What every example shares: its command line, the training of the reference model and of
fastflow's drop-in from the same initial weights on the same batches, the loss-curve plot
and the summary it writes (losses.json, read by tests/test_examples.py)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import torch

SMOKE_STEPS = 5


def parse_args(description: str, steps: int, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps, help=f"training steps (default {steps})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--smoke", action="store_true",
                        help=f"{SMOKE_STEPS} steps and small plots: a check that it runs")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of the PNGs (default: examples/out/<example>)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps = SMOKE_STEPS
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    args.device = torch.device(args.device)
    return args


def out_folder(args, name: str) -> Path:
    folder = args.out or Path(__file__).resolve().parent / "out" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def train(model: torch.nn.Module, loss: Callable, batches: Callable, steps: int,
          lr: float) -> tuple[list[float], float]:
    """(the loss of every step, steps per second) of Adam on `loss(model, *batches(step))`.
    The rate leaves out the first step, which pays one-time costs (allocations, autotuning,
    the first calls of each kernel)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        if step == 1:
            start = time.perf_counter()
        optimizer.zero_grad()
        value = loss(model, *batches(step))
        value.backward()
        optimizer.step()
        losses.append(value.item())
    return losses, max(steps - 1, 1) / (time.perf_counter() - start)


def train_both(reference: torch.nn.Module, fast: torch.nn.Module, loss: Callable,
               batches: Callable, steps: int, lr: float) -> dict:
    """Trains the reference and the drop-in (its weights loaded from the reference's first)
    on the same batches; returns their losses and steps per second."""
    fast.load_state_dict(reference.state_dict())
    result = {}
    for name, model in (("reference", reference), ("fastflow", fast)):
        losses, rate = train(model, loss, batches, steps, lr)
        result[name] = {"losses": losses, "steps_per_second": rate}
        print(f"{name:>9}: loss {losses[0]:.4f} -> {losses[-1]:.4f}, {rate:.1f} steps/s")
    return result


def figure(panels: int, title: str):
    """(figure, axes) of one row of square-ish panels, matplotlib without a display."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4))
    fig.suptitle(title)
    return fig, axes


def plot_losses(ax, result: dict, ylabel: str) -> None:
    """Both models' losses on one panel, with their steps per second."""
    for name, style in (("reference", "-"), ("fastflow", "--")):
        rate = result[name]["steps_per_second"]
        ax.plot(result[name]["losses"], style, label=f"{name} ({rate:.1f} steps/s)")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title("training loss")
    ax.legend()


def image_grid(images, rows: int, side: int):
    """[rows², side, side] (or [rows², side·side]) images in [0, 1] as one picture, a
    mid-gray line between them."""
    images = images.detach().reshape(rows * rows, side, side).cpu()
    framed = torch.nn.functional.pad(images, (0, 1, 0, 1), value=0.5)
    cell = side + 1
    return framed.reshape(rows, rows, cell, cell).permute(0, 2, 1, 3).reshape(rows * cell, -1)


def save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    import matplotlib.pyplot as plt
    plt.close(fig)


def finish(result: dict, folder: Path, extra: dict | None = None) -> None:
    """Writes losses.json (the test reads it) and says where the PNGs are."""
    (folder / "losses.json").write_text(json.dumps({**result, **(extra or {})}, indent=1))
    print(f"wrote {', '.join(sorted(p.name for p in folder.glob('*.png')))} to {folder}")
