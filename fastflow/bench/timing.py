"""Timing: repeated calls after warm-up within a time budget, as a list of seconds per call.
On a GPU each call is timed with CUDA events after the L2 cache is flushed (as
triton.testing.do_bench does); on a CPU with time.perf_counter, the providers of one case
in turns (measure_interleaved), so that a change in a shared machine's speed during the
run slows them alike instead of skewing their ratios."""

from __future__ import annotations

import time

import numpy as np
import torch

MIN_REPS = 3
MAX_REPS = 10_000


def summary(times: list[float]) -> dict:
    p20, median, p80 = np.percentile(times, [20, 50, 80])
    return {"median": float(median), "p20": float(p20), "p80": float(p80), "reps": len(times)}


def measure(fn, device: torch.device, budget: float) -> list[float]:
    """Seconds per call of fn(), timed within about `budget` seconds (at least MIN_REPS
    times, however long a call takes)."""
    if device.type == "cuda":
        return _measure_cuda(fn, budget)
    return measure_interleaved([fn], device, budget)[0]


def measure_interleaved(fns, device: torch.device, budget: float) -> list[list[float]]:
    """Seconds per call of each fn(), each given about `budget` seconds. On a GPU, one after
    the other (as measure). On a CPU, in rounds: each round times a run of calls of every fn in
    turn, a run lasting about a tenth of the budget (one call when a call takes longer), and
    records its mean call; rounds repeat until every fn has MIN_REPS times and its budget is
    spent."""
    if device.type == "cuda":
        return [_measure_cuda(fn, budget) for fn in fns]
    calls = []
    for fn in fns:
        fn()  # first-call costs (allocations, plans, lazy initialisation) are not timed
        start, count = time.perf_counter(), 0
        while count == 0 or time.perf_counter() - start < 0.1 * budget:
            fn()
            count += 1
        per_call = (time.perf_counter() - start) / count
        calls.append(max(1, min(int(0.1 * budget / per_call), MAX_REPS)))
    times = [[] for _ in fns]
    spent = [0.0 for _ in fns]
    while any(len(t) < MIN_REPS or (s < budget and len(t) * n < MAX_REPS)
              for t, s, n in zip(times, spent, calls)):
        for i, (fn, n) in enumerate(zip(fns, calls)):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            elapsed = time.perf_counter() - start
            times[i].append(elapsed / n)
            spent[i] += elapsed
    return times


def _measure_cuda(fn, budget: float) -> list[float]:
    # Written over between calls, so that no call finds its inputs in the L2 cache left
    # there by the previous one (larger than any GPU's L2).
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        flush.zero_()
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end) / 5e3, 1e-7)
    for _ in range(int(min(0.1 * budget / estimate, 1000))):
        fn()
    reps = int(min(max(budget / estimate, MIN_REPS), MAX_REPS))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(starts, ends):
        flush.zero_()
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]


def ceilings(device: torch.device, dtype: torch.dtype, budget: float) -> dict:
    """What this device reaches in this run: GB/s of a device copy, TFLOP/s of a dense
    matrix product, in `dtype`."""
    gpu = device.type == "cuda"
    n = (256 if gpu else 16) * 2**20
    src = torch.randn(n, device=device).to(dtype)
    dst = torch.empty_like(src)
    copy = summary(measure(lambda: dst.copy_(src), device, budget))["median"]
    m = 8192 if gpu else 1024
    a = torch.randn(m, m, device=device).to(dtype)
    b = torch.randn(m, m, device=device).to(dtype)
    matmul = summary(measure(lambda: torch.mm(a, b), device, budget))["median"]
    return {"copy_gbs": 2 * src.numel() * src.element_size() / copy / 1e9,
            "matmul_tflops": 2 * m ** 3 / matmul / 1e12,
            "copy_bytes": 2 * src.numel() * src.element_size(), "matmul_n": m}
