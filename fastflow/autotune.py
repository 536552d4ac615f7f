"""'auto' by measurement, where the faster path depends on the machine.

Whether a fused CPU kernel beats the reference can depend on the CPU (its BLAS and vector
width), the thread count and the sizes: the masked linear's staircase saves matrix-product
work that the gathers around it may cost back. For such ops 'auto' times the candidates on
the first call of each shape class, keeps the faster, and reuses that choice, the way
torch.backends.cudnn.benchmark does.

A shape class is the op, device type, dtype, thread count, whether gradients are needed,
and the op's sizes, with the batch rounded up to a power of 2. The reference (the first
candidate) is kept unless another is at least MARGIN faster, by the median over interleaved
rounds of the two calls' time ratio: a tie stays on the reference.

FASTFLOW_AUTOTUNE=0 (set before the first call) turns the measuring off: 'auto' then runs
the reference wherever it would measure, the same choice on every run. Under torch.compile
nothing is measured; a class without a decision runs the reference. `decisions()` and
fastflow.info() list the decisions made so far.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable

import torch

ENV_VAR = "FASTFLOW_AUTOTUNE"
MARGIN = 0.05  # a candidate must take at most 95% of the reference's time
WARMUPS = 3  # untimed calls of each candidate first, interleaved (see decide)
REPEATS = 5  # timed rounds, each candidate called once per round
CLOSE = 0.15  # a candidate within 15% of the reference's time: CLOSE_REPEATS more rounds
CLOSE_REPEATS = 15
LONG_CALL_S = 0.05  # a warm-up call longer than this: one timed round (large inputs)


@dataclasses.dataclass(frozen=True)
class Decision:
    choice: str
    seconds: dict[str, float]  # candidate -> its fastest timed call
    ratios: dict[str, float] = dataclasses.field(default_factory=dict)
    # candidate -> the median over rounds of its time over the reference's in the same round

    def __str__(self) -> str:
        if not self.seconds:
            return self.choice
        times = ", ".join(f"{name} {s * 1e6:.0f} us" for name, s in self.seconds.items())
        ratios = "".join(f"; {name} {r:.2f}x the reference per round" for name, r in self.ratios.items())
        return f"{self.choice} ({times}{ratios})"


_decisions: dict[tuple, Decision] = {}


def enabled() -> bool:
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "off", "false", "no")


def shape_class(op: str, x: torch.Tensor, *sizes, grad: bool) -> tuple:
    """The key of x's call of `op`: batch (x.shape[0]) rounded up to a power of 2, then
    `sizes` (the op's other dimensions, as numbers or labels) and the machine state the
    speed depends on."""
    batch = x.shape[0]
    bucket = 1 << (batch - 1).bit_length() if batch > 0 else 0
    return (op, x.device.type, x.dtype, torch.get_num_threads(), grad, bucket, *sizes)


def decide(key: tuple, candidates: Callable[[], dict[str, Callable[[], object]]]) -> str:
    """The candidate to run for shape class `key`.

    `candidates()` gives name -> a call to time, the reference first; it is called only
    when the class has no decision yet. Each call is made WARMUPS times to warm up, then
    timed in REPEATS rounds, each call once per round (one round, when a warm-up call took
    over LONG_CALL_S), and CLOSE_REPEATS rounds more where a candidate came within CLOSE of
    the reference. A candidate wins with the median over rounds of its time over the
    reference's in the same round at most 1 - MARGIN.

    Why (2-core AMD EPYC, a shared VM): with one warm-up, the first calls of a fused kernel
    still page-faulted in its new buffers, and the 784-[512, 512]-784 MADE at batch 16, 1.4x
    the reference once warm, was timed slower than it (2.5 against 2.2 ms fwd+bwd). With
    three, its forward was still timed only 3-11% faster in three processes of six (a few
    calls land on a slow moment), one of them under the 5% margin. Ratios within a round
    compare calls made moments apart, where the fastest call of each (the rule before)
    compared calls from different moments: the 2-D RealNVP's MLP forward+backward at batch
    1024, 8% faster fused call by call (Zen 5), was timed 0.95x in one process (the reference
    kept) and 0.57-0.85x in six others.
    """
    decision = _decisions.get(key)
    if decision is not None:
        return decision.choice
    calls = candidates()
    reference = next(iter(calls))
    if not enabled() or torch.compiler.is_compiling():
        return reference
    longest = 0.0
    for _ in range(WARMUPS):
        for call in calls.values():
            start = time.perf_counter()
            call()
            longest = max(longest, time.perf_counter() - start)
        if longest > LONG_CALL_S:
            break
    times = {name: [] for name in calls}

    def time_rounds(rounds):
        for _ in range(rounds):
            # the order alternates: the call made second in a round ran ~1% slower
            order = list(calls) if len(times[reference]) % 2 == 0 else list(reversed(calls))
            for name in order:
                start = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - start)

    def ratios():
        return {name: statistics.median(t / r for t, r in zip(times[name], times[reference]))
                for name in calls if name != reference}

    time_rounds(1 if longest > LONG_CALL_S else REPEATS)
    if longest <= LONG_CALL_S and any(abs(r - 1) < CLOSE for r in ratios().values()):
        time_rounds(CLOSE_REPEATS)
    measured = ratios()
    fastest = min(measured, key=measured.get, default=reference)
    choice = fastest if fastest != reference and measured[fastest] <= 1 - MARGIN else reference
    _decisions[key] = Decision(choice, {name: min(t) for name, t in times.items()}, measured)
    return choice


def wants_grad(args) -> bool:
    """Whether autograd will need a backward for these arguments (tensors, lists of tensors
    and anything else)."""
    return torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad
        for a in args for t in (a if isinstance(a, (list, tuple)) else (a,)))


def timed_call(fn: Callable, args: tuple, grad: bool) -> Callable[[], None]:
    """A call of fn(*args) for decide() to time: forward, and backward too when gradients
    are needed, on fresh leaves (the caller's tensors, also those in lists, are untouched)."""
    def leaf(a):
        if isinstance(a, torch.Tensor):
            return a.detach().requires_grad_(grad and a.requires_grad)
        if isinstance(a, (list, tuple)):
            return type(a)(leaf(t) for t in a)
        return a

    def call():
        with torch.enable_grad() if grad else torch.no_grad():
            out = fn(*(leaf(a) for a in args))
            if grad:
                flat = out if isinstance(out, (tuple, list)) else (out,)
                outs = [o for o in flat if isinstance(o, torch.Tensor) and o.requires_grad]
                torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    return call


def describe(key: tuple) -> str:
    """A shape class as text: op, device, dtype, batch bucket, sizes, threads, mode."""
    op, device, dtype, threads, grad, batch, *sizes = key
    dims = " ".join(map(str, sizes))
    return (f"{op} {device} {str(dtype).removeprefix('torch.')} b<={batch} {dims} "
            f"{threads} threads{' fwd+bwd' if grad else ' fwd'}")


def decisions() -> dict[tuple, Decision]:
    """The decisions made so far in this process: shape class -> Decision."""
    return dict(_decisions)


def clear() -> None:
    """Forgets every decision (the next call of each class measures again)."""
    _decisions.clear()
