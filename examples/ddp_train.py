"""Trains a fastflow drop-in under torch.distributed's DistributedDataParallel.

    torchrun --nproc_per_node 2 examples/ddp_train.py --model made --steps 200
    torchrun --nproc_per_node 2 examples/ddp_train.py --model realnvp --device cuda

Each process trains the same model (same seed, so the same initial weights) on its own
shard of every batch; DistributedDataParallel averages the gradients, so every step equals
one process's step on the whole batch (tests/test_ddp.py checks this). The data are random
binary images (MADE) or random images in [0, 1] (RealNVP): this script shows the setup, not
a model worth keeping. Backend: gloo on the CPU, nccl on GPUs.
"""

from __future__ import annotations

import argparse
import os
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import fastflow
from fastflow import reference

IMAGE = 8  # side of the images: D = 64


def build(name: str, seed: int = 0) -> torch.nn.Module:
    """The drop-in, the same on every process (seeded: torch and numpy draw its weights and
    MADE degrees). The RealNVP's BatchNorms run in eval mode: in train mode each process
    would normalise with its own shard's statistics, which is no longer the whole batch's
    step (torch.nn.SyncBatchNorm syncs them, on GPUs only)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    if name == "made":
        return fastflow.nn.MADE(IMAGE * IMAGE, [128, 128], IMAGE * IMAGE)
    model = fastflow.nn.multiscale.RealNVP(
        IMAGE, 1, SimpleNamespace(num_scales=2, mid_channels=16, num_blocks=1))
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


def batch(name: str, step: int, size: int) -> tuple[torch.Tensor, ...]:
    """The whole batch of a step (the same on every process, from the step's seed)."""
    generator = torch.Generator().manual_seed(1000 + step)
    if name == "made":
        return ((torch.rand(size, IMAGE * IMAGE, generator=generator) < 0.3).float(),)
    x = torch.rand(size, 1, IMAGE, IMAGE, generator=generator)
    return x, torch.rand(size, 1, IMAGE, IMAGE, generator=generator)  # images, dequantization


class NegativeLogLikelihood(torch.nn.Module):
    """The model's mean negative log-likelihood of a batch (per dimension for the MADE), as
    a module: DistributedDataParallel wraps a module whose forward runs the whole loss."""

    def __init__(self, name: str, model: torch.nn.Module):
        super().__init__()
        self.name, self.model = name, model

    def forward(self, *data: torch.Tensor) -> torch.Tensor:
        if self.name == "made":
            x, = data
            return F.binary_cross_entropy_with_logits(self.model(x), x)
        x, noise = data
        z, sldj = self.model.flows(*self.model._pre_process(x, noise=noise), reverse=False)
        return reference.multiscale.RealNVPLoss()(z, sldj)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("made", "realnvp"), default="made")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64, help="whole batch, over all processes")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)

    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch % world:
        parser.error(f"--batch {args.batch} must be a multiple of the {world} processes")
    device = torch.device(args.device, int(os.environ.get("LOCAL_RANK", 0))) \
        if args.device == "cuda" else torch.device("cpu")
    model = NegativeLogLikelihood(args.model, build(args.model).to(device))
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    shard = args.batch // world
    start = time.perf_counter()
    for step in range(args.steps):
        data = [t[rank * shard:(rank + 1) * shard].to(device) for t in batch(args.model, step, args.batch)]
        optimizer.zero_grad()
        value = ddp(*data)
        value.backward()
        optimizer.step()
        if rank == 0 and (step % 50 == 0 or step == args.steps - 1):
            print(f"step {step}: loss {value.item():.4f}", flush=True)
    if rank == 0:
        print(f"{args.steps} steps on {world} processes in {time.perf_counter() - start:.1f} s")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
