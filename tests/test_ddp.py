"""fastflow's drop-ins under torch.distributed: 2 processes (gloo, on the CPU) train a MADE
and a multi-scale RealNVP under DistributedDataParallel, each on half of every batch; after
each step the gradients and the weights equal those of one process trained on the whole
batch, to float32 tolerance. And examples/ddp_train.py runs under torchrun."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import ddp_train  # noqa: E402

from utils import assert_matches_float64  # noqa: E402

STEPS, BATCH, WORLD = 3, 8, 2
# SGD's step per model: its NLL's gradients differ in scale by orders of magnitude.
LR = {"made": 0.05, "realnvp": 1e-4}

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(name, module, rank, shards, dtype=torch.float32):
    """[(gradients, weights)] after each step of SGD on `module` (DDP-wrapped or not), this
    rank's shard of each step's batch, in `dtype`."""
    optimizer = torch.optim.SGD(module.parameters(), lr=LR[name])
    record = []
    shard = BATCH // shards
    for step in range(STEPS):
        data = [t[rank * shard:(rank + 1) * shard].to(dtype)
                for t in ddp_train.batch(name, step, BATCH)]
        optimizer.zero_grad()
        module(*data).backward()
        grads = [p.grad.detach().clone() for p in module.parameters()]
        optimizer.step()
        record.append((grads, [p.detach().clone() for p in module.parameters()]))
    return record


def worker(rank, name, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = ddp_train.NegativeLogLikelihood(name, ddp_train.build(name))
        record = train(name, DistributedDataParallel(model), rank, WORLD)
        if rank == 0:
            torch.save(record, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["made", "realnvp"])
def test_ddp_equals_one_process_on_the_whole_batch(name, tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(name, free_port(), str(out)), nprocs=WORLD, join=True)
    distributed = torch.load(out)
    single = train(name, ddp_train.NegativeLogLikelihood(name, ddp_train.build(name)), 0, 1)
    truth = train(name, ddp_train.NegativeLogLikelihood(name, ddp_train.build(name).double()),
                  0, 1, torch.float64)
    assert len(distributed) == len(single) == len(truth) == STEPS
    # Judged as every fastflow result: against the float64 run, allowing twice the single
    # process's own float32 error (the shards' sums run in another order).
    for step, (ddp_step, single_step, truth_step) in enumerate(zip(distributed, single, truth)):
        for kind, got, reference, exact in zip(("gradient", "weight"), ddp_step, single_step,
                                                truth_step):
            assert any(t.abs().max() > 0 for t in exact), f"step {step}: all {kind}s zero"
            scale = max(float(t.abs().max()) for t in exact)
            for i, (g, r, t) in enumerate(zip(got, reference, exact)):
                assert_matches_float64(g, t, f"step {step}, {kind} {i}", reference=r,
                                       dtype=torch.float32, scale=scale)


def test_example_runs_under_torchrun(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port()), str(ROOT / "examples" / "ddp_train.py"),
         "--model", "realnvp", "--steps", "3", "--batch", "8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 steps on 2 processes" in result.stdout
