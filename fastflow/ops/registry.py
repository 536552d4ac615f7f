"""The ops: one entry each, and the one function that runs any of them on a backend.

An entry (Op) says what the op is, its reference (the 'torch' backend), its kernels
(torch.ops.fastflow.<name>: the C++ CPU and CUDA kernels; <name>_triton: Triton), the
argument checks of its Python-side paths, the backends 'auto' may pick per device type, and
where the benchmark measures it. Every public op function ends in `call(op, ...)`; fastflow.info() and the README's ops table
are generated from REGISTRY. Adding an op: docs/design.md, "Adding an op".

Arguments are checked once per call, by the code that runs them: the C++ op checks its own
(csrc/<op>.h), the Triton custom op and the reference path run the entry's `check`. The
messages are the same words on every backend (each op's tests check them on each).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch

from .. import autotune
from .. import triton as _triton
from .._extension import EXTENSION
from ..backend import get_backend, resolve
from ._checks import require_tensors


@dataclasses.dataclass(frozen=True)
class Op:
    name: str                      # custom-op name: torch.ops.fastflow.<name>[_triton]
    functions: tuple[str, ...]     # the public functions in fastflow.ops that run it
    summary: str                   # what it computes, for which models (the README's table)
    reference: Callable            # the 'torch' backend: reference(*args), the kernels' args
    reference_source: str          # where the reference comes from (the README's table)
    check: Callable                # check(*args): TypeError/ValueError naming the argument
    tensors: tuple[str, ...]       # the leading arguments that must be tensors, by name
    auto: dict[str, tuple[str, ...]]  # device type -> backends 'auto' may pick, fastest first
    bench: str                     # its cases in the benchmark: a key of fastflow.bench.cases.OPS
    # Where the faster path depends on the machine: 'auto' times its pick against the
    # reference per shape class (fastflow.autotune). sizes(*args) names the op's sizes in
    # the shape class (the batch is added); None: no measuring.
    measured_sizes: Callable | None = None
    # The backends with a kernel for it (an op without one on a device runs its reference).
    kernels: tuple[str, ...] = ("cpu", "cuda", "triton")
    # Device type -> the dtypes whose tensors 'auto' gives its pick for that device type;
    # tensors of other dtypes run the reference (where the kernel was measured slower).
    # A device type not listed: every dtype.
    auto_dtypes: dict[str, tuple[torch.dtype, ...]] = dataclasses.field(default_factory=dict)

    def auto_allows(self, device_type: str, dtype: torch.dtype) -> bool:
        """Whether 'auto' may run its pick for this device type on tensors of `dtype`."""
        allowed = self.auto_dtypes.get(device_type)
        return allowed is None or dtype in allowed

    def auto_dtypes_text(self, device_type: str) -> str | None:
        """The dtypes 'auto' gives its pick for on that device type, in words; None: all."""
        allowed = self.auto_dtypes.get(device_type)
        return None if allowed is None else ", ".join(str(d).removeprefix("torch.") for d in allowed)

    def auto_text(self, device_type: str) -> str:
        """What 'auto' runs on that device type, in words (before availability)."""
        first = (self.auto.get(device_type) or ("torch",))[0]
        if self.measured_sizes is not None and first != "torch":
            return f"measured per shape class: `{first}` where faster, else `torch`"
        dtypes = self.auto_dtypes_text(device_type)
        if dtypes is not None and first != "torch":
            return f"`{first}` for {dtypes}, else `torch`"
        return f"`{first}`"


REGISTRY: dict[str, Op] = {}


def register(op: Op) -> Op:
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} is registered twice")
    REGISTRY[op.name] = op
    return op


# The kernels that exist in this process, as custom-op name suffixes: fastflow::<op> from
# the extension, fastflow::<op>_triton where Triton is installed.
KERNEL_SUFFIXES = ([""] if EXTENSION.loaded else []) + (["_triton"] if _triton.VERSION is not None else [])


def run(op: Op, backend: str, args: tuple):
    """op on `backend` (a resolved name: torch, cpu, cuda or triton)."""
    if backend != "torch" and backend not in op.kernels:
        kernels = ", ".join(f"'{k}'" for k in op.kernels)
        raise ValueError(f"{op.name}: fastflow backend {backend!r} has no kernel for it; use "
                         f"'auto', 'torch' or {kernels}")
    if backend == "torch":
        op.check(*args)
        return op.reference(*args)
    return getattr(torch.ops.fastflow, op.name + ("_triton" if backend == "triton" else ""))(*args)


def _run_leaves(op: Op, backend: str, *args):
    return run(op, backend, args)


def choose(op: Op, args: tuple) -> str:
    """The backend that runs op on `args` now (their tensors already checked to be tensors;
    under 'auto' with measured sizes, measured on the first call of the shape class)."""
    x = args[0]
    name = resolve(op.name, op.auto, x.device)
    if get_backend() != "auto" or name == "torch":
        return name
    if not op.auto_allows(x.device.type, x.dtype):
        return "torch"
    if op.measured_sizes is None:
        return name
    if torch.compiler.is_compiling():  # nothing measured while tracing
        return "torch"
    grad = autotune.wants_grad(args)
    key = autotune.shape_class(op.name, x, *op.measured_sizes(*args), grad=grad)
    return autotune.decide(key, lambda: {
        candidate: autotune.timed_call(functools.partial(_run_leaves, op, candidate), args, grad)
        for candidate in ("torch", name)})


def call(op: Op, *args):
    """Runs op on the backend chosen for its arguments: the one dispatch of every public
    op function."""
    for name, value in zip(op.tensors, args):
        if not isinstance(value, torch.Tensor):
            require_tensors(op.name, **{name: value})  # the TypeError that names it
    return run(op, choose(op, args), args)


@functools.cache
def _import_ops() -> None:
    from .. import ops  # noqa: F401  (importing the op modules registers them)


def ops() -> list[Op]:
    """Every registered op."""
    _import_ops()
    return list(REGISTRY.values())


def ops_table() -> str:
    """The README's ops table (Markdown), from the registry."""
    rows = ["| op (`fastflow.ops`) | what | reference | `auto` on CPU | `auto` on GPU |",
            "|---|---|---|---|---|"]
    for op in ops():
        functions = ", ".join(f"`{f}`" for f in op.functions)
        rows.append(f"| {functions} | {op.summary} | {op.reference_source} | "
                    f"{op.auto_text('cpu')} | {op.auto_text('cuda')} |")
    return "\n".join(rows)
