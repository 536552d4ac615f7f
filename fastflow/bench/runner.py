"""`python -m fastflow.bench`: every op and model against the reference, on each provider
that can run here, checked before it is timed. See `python -m fastflow.bench --help`."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import fastflow
from fastflow import accuracy
from fastflow import triton as _triton
from fastflow.backend import BackendUnavailableError, unavailable_reason

from . import report, timing
from .cases import FWD_BWD, OPS, cases

# `auto`: what a user gets by default (fastflow's own choice of backend per op and call).
PROVIDERS = ("reference", "reference-compile", "dense", "auto", "cpu", "cuda", "triton")
# Providers timed without the check, and the note the table gives them.
UNCHECKED = {"dense": "a different function: not checked"}
DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "float16": torch.float16, "bfloat16": torch.bfloat16}
# Seconds of repeated calls per measurement, per configuration.
BUDGETS = {"quick": 0.1, "full": 1.0}


def fastflow_providers(device: torch.device) -> list[str]:
    """The fastflow backends with compiled kernels for `device` (Triton's CPU interpreter
    is for tests, not timing)."""
    names = ("cuda", "triton") if device.type == "cuda" else ("cpu",)
    return [name for name in names if unavailable_reason(name) is None]


def case_providers(case, requested) -> list[str]:
    """The requested providers that apply to `case`: torch.compile of the reference where
    it compiles, `dense` where the case has a dense counterpart."""
    return [p for p in requested
            if (p != "reference-compile" or case.compiles) and (p != "dense" or case.dense)]


def _csv_list(known, what):
    def parse(text):
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"choose from {', '.join(known)}")
        return names
    return parse


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m fastflow.bench",
        description="Benchmarks every fastflow op and model against the reference (eager and "
                    "torch.compile) on each fastflow backend available here. Each provider's "
                    "output is checked against the reference before it is timed.")
    parser.add_argument("--full", action="store_true",
                        help="the full configuration (GPU sizes); default: quick (under 3 minutes on a 2-core CPU)")
    parser.add_argument("--ops", type=_csv_list(list(OPS), "op"), default=list(OPS),
                        help="comma-separated ops to run (default: all): " + ", ".join(OPS))
    parser.add_argument("--providers", type=_csv_list(PROVIDERS, "provider"),
                        help="comma-separated providers (default: all available here): " + ", ".join(PROVIDERS))
    parser.add_argument("--dtypes", type=_csv_list(list(DTYPES), "dtype"), default=["float32"],
                        help="comma-separated dtypes (default: float32): " + ", ".join(DTYPES))
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where to run (default: the GPU when there is one)")
    parser.add_argument("--budget", type=float,
                        help="seconds of timed calls per measurement (default: 0.1 quick, 1.0 full)")
    parser.add_argument("--out", type=Path,
                        help="output folder (default: benchmarks/results/<device> when ./benchmarks "
                             "exists, else fastflow-bench/<device>)")
    parser.add_argument("--compare", type=Path, metavar="FILE",
                        help="a JSON file of an earlier run: marks rows whose median got slower as REGRESSED")
    parser.add_argument("--threshold", type=float, default=0.10,
                        help="slowdown against --compare that counts as a regression (default: 0.10 = 10%%)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)

    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch")
    available = ["reference", "reference-compile", "dense", "auto"] + fastflow_providers(args.device)
    if args.providers is None:
        args.providers = available
    for name in args.providers:
        if name not in available:
            reason = unavailable_reason(name) or f"it does not run on {args.device.type} tensors here"
            parser.error(f"provider {name!r} is unavailable: {reason}")
    if args.compare is not None and not args.compare.is_file():
        parser.error(f"--compare: no such file: {args.compare}")
    if args.budget is not None and args.budget <= 0:
        parser.error("--budget must be positive")
    args.config = "full" if args.full else "quick"
    args.budget = args.budget or BUDGETS[args.config]
    return args


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = _cpuinfo("model name") or platform.processor() or platform.machine()
    # x86 family and model tell apart CPUs that a VM names alike ("AMD EPYC": Zen 4 is
    # family 25, Zen 5 family 26).
    family, number = _cpuinfo("cpu family"), _cpuinfo("model")
    generation = f"family {family} model {number}; " if family and number else ""
    return f"{model} ({generation}{os.cpu_count()} cores; {cpu_vector_extensions()})"


def _cpuinfo(field: str, path: str = "/proc/cpuinfo") -> str | None:
    """The first value of `field` in /proc/cpuinfo (None where there is none)."""
    try:
        with open(path) as f:
            return next(value.strip() for key, _, value in (line.partition(":") for line in f)
                        if key.strip() == field)
    except (OSError, StopIteration):
        return None


def cpu_vector_extensions() -> str:
    """The CPU's vector extensions that decide which kernels are fast (from /proc/cpuinfo),
    e.g. "avx2 fma avx512f amx_tile"; the machine's architecture where that is unknown."""
    flags = (_cpuinfo("flags") or "").split()
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "asimd", "sve")
    return " ".join(f for f in wanted if f in flags) or platform.machine()


def device_slug(device: torch.device) -> str:
    """The results folder's name: the GPU's name, or the CPU's model, its x86 family and
    model numbers where known (a VM names Zen 4 and Zen 5 alike "AMD EPYC"), and its core
    count."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        model = _cpuinfo("model name") or platform.machine()
        family, number = _cpuinfo("cpu family"), _cpuinfo("model")
        generation = f"family{family} model{number}" if family and number else ""
        model = re.sub(r"[(]r[)]|[(]tm[)]|cpu|processor|@.*", "", model.lower())
        name = f"cpu {model} {generation} {os.cpu_count()}core"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def git_commit() -> str | None:
    """The commit of the fastflow source tree being measured (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"],
                             cwd=Path(fastflow.__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done = total, 0
        self.enabled = enabled and sys.stderr.isatty()

    def step(self, label: str) -> None:
        if self.enabled:
            width = 30
            filled = width * self.done // max(self.total, 1)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                             f"{label[:60]:<60}")
            sys.stderr.flush()
        self.done += 1

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def _tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _differentiable(outputs):
    return [o for o in _tuple(outputs) if isinstance(o, torch.Tensor) and o.requires_grad]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def _mismatch(got, truth, reference, dtype, exact, what, scale=None) -> str | None:
    """Why the provider's tensors `got` fail fastflow.accuracy's rule against the float64
    `truth` (the reference's own `reference` widening it), or are not identical to
    `reference` when `exact`; None when they pass. scale: the scale of the whole (the
    largest of all the truths), for a truth that is zero but for rounding."""
    if len(got) != len(truth):
        return f"{len(got)} {what}s, the reference has {len(truth)}"
    for i, (g, t, r) in enumerate(zip(got, truth, reference)):
        if exact:
            if g.shape != r.shape or not torch.equal(g, r):
                return f"{what} {i}: not identical to the reference"
            continue
        reason = accuracy.mismatch(g, t, reference=r, dtype=dtype, scale=scale)
        if reason:
            return f"{what} {i}: {reason}"
    return None


class Task:
    """One case at one dtype and mode: its inputs, the reference's results in that dtype
    and in float64 (the truth a provider is judged against), and the step each provider
    times."""

    def __init__(self, case, device, dtype, mode):
        self.case, self.dtype, self.mode = case, dtype, mode
        self.setup = case.make(device, dtype, mode)
        s = self.setup
        self.expected, self.expected_grads = self._run(s.reference, s.inputs, s.reference_leaves)
        self.truth, self.truth_grads = self.expected, self.expected_grads
        if s.check is None and dtype != torch.float64:
            inputs = tuple(accuracy.float64_copy(v) for v in s.inputs)
            if s.reference64 is not None:
                fn, leaves = s.reference64, s.reference64_leaves
            else:  # an op: the same function on float64 copies of its inputs
                fn = s.reference
                leaves = [inputs[i] for i, v in enumerate(s.inputs)
                          if any(v is leaf for leaf in s.reference_leaves)]
            self.truth, self.truth_grads = self._run(fn, inputs, leaves)
        self.reference_grads = [self.expected_grads]
        if self.mode == FWD_BWD and s.reference64 is not None:
            self.reference_grads += self._perturbed_reference_grads()

    grad_outputs = None  # fwd+bwd: drawn by the first run (the reference's), then reused

    def _run(self, fn, inputs, leaves):
        """fn's outputs on inputs, and for fwd+bwd the gradients of leaves (for the output
        gradients grad_outputs, in each output's dtype)."""
        if self.mode != FWD_BWD:
            with torch.no_grad():
                return tuple(o.detach() for o in _tuple(fn(*inputs))), None
        outputs = fn(*inputs)
        diff = _differentiable(outputs)
        if self.grad_outputs is None:
            self.grad_outputs = [torch.randn_like(o) for o in diff]
        grads = torch.autograd.grad(diff, leaves, [g.to(o.dtype) for g, o in zip(self.grad_outputs, diff)])
        return tuple(o.detach() for o in _tuple(outputs)), grads

    def _perturbed_reference_grads(self, runs=4):
        """The reference model's gradients on its inputs moved by about one rounding
        (x·(1 + ε·N(0, 1)), ε the dtype's), `runs` times. A model's gradients jump where a
        ReLU's input lies within rounding of zero (the multi-scale RealNVP has millions of
        them: a few flip in every float32 run, each moving some gradients by up to 1% of the
        largest), so the reference's error on one run is a lottery ticket; its largest over
        these runs measures what rounding alone does to it."""
        generator = torch.Generator().manual_seed(0)
        return [self._run(self.setup.reference, accuracy.perturbed(self.setup.inputs, generator),
                          self.setup.reference_leaves)[1] for _ in range(runs)]

    def provider_fn(self, provider):
        """(fn, leaves) of a provider: the function it runs on the inputs and the tensors
        whose gradients it computes in fwd+bwd."""
        s = self.setup
        if provider == "reference":
            return s.reference, s.reference_leaves
        if provider == "reference-compile":
            return torch.compile(s.reference), s.reference_leaves
        if provider == "dense":
            return self.case.dense, s.reference_leaves

        if provider == "auto" and fastflow.get_backend() == "auto":
            # What a user gets by default: no backend switch around each call (entering
            # one costs about 2 us, 3% of a small MADE's forward).
            return s.fused, s.fused_leaves

        def fused(*inputs):
            with fastflow.backend(provider):
                return s.fused(*inputs)
        return fused, s.fused_leaves

    def step(self, fn, leaves):
        inputs = self.setup.inputs
        if self.mode != FWD_BWD:
            def forward():
                with torch.no_grad():
                    return fn(*inputs)
            return forward

        def forward_backward():
            outputs = fn(*inputs)
            torch.autograd.grad(_differentiable(outputs), leaves, self.grad_outputs)
            return outputs
        return forward_backward

    def check(self, fn, leaves) -> str | None:
        """Why fn's outputs (and gradients, for fwd+bwd) fail their check, or None: the
        case's own check, else fastflow.accuracy's rule against the float64 reference (or
        identity with the reference, for a case that only moves values)."""
        s = self.setup
        if self.mode == FWD_BWD:
            got = fn(*s.inputs)
            grads = torch.autograd.grad(_differentiable(got), leaves, self.grad_outputs)
        else:
            with torch.no_grad():
                got = fn(*s.inputs)
        got = tuple(o.detach() for o in _tuple(got))
        if s.check:
            return s.check(*got, *self.expected)
        exact = self.case.exact
        reason = _mismatch(got, self.truth, self.expected, self.dtype, exact, "output")
        if reason is None and self.mode == FWD_BWD:
            # A gradient that is zero in float64 (but for rounding) is judged against the
            # largest of all.
            largest = max((float(t.abs().max()) for t in self.truth_grads if t.numel()), default=0.0)
            # Per gradient, the reference run furthest from float64 (see reference_grads).
            worst = [accuracy.least_accurate(runs, t, largest)
                     for t, runs in zip(self.truth_grads, zip(*self.reference_grads))]
            reason = _mismatch(grads, self.truth_grads, worst, self.dtype, exact,
                               "gradient", largest)
        return reason


def checked_provider(task, provider) -> tuple:
    """(fn, leaves, status, reason): the provider's function and the tensors it
    differentiates, after its check against the reference. status is "ok" (reason: empty,
    or the note of a provider timed unchecked), "n/a" (it cannot run here: why), "FAILED"
    (how it differs; it must not be timed) or, for torch.compile of the reference only,
    "inexact" (how it differs; timed all the same). For torch.compile the check's first
    call is the compilation, which the timing that follows leaves out."""
    fn, leaves = task.provider_fn(provider)
    if provider == "reference":
        return fn, leaves, "ok", ""
    if provider in UNCHECKED:
        return fn, leaves, "ok", UNCHECKED[provider]
    try:
        reason = task.check(fn, leaves)
    except BackendUnavailableError as error:
        return fn, leaves, "n/a", _first_line(error)
    except Exception as error:  # noqa: BLE001 - any failure of a provider is reported, not raised
        if provider == "reference-compile":
            return fn, leaves, "n/a", "torch.compile failed: " + _first_line(error)
        return fn, leaves, "FAILED", _first_line(error)
    if reason and provider == "reference-compile":
        # The reference's own compiled form, further from float64 than twice eager's error
        # (its fused reductions sum in another order): shown and timed, but not a failure.
        return fn, leaves, "inexact", reason
    return fn, leaves, ("FAILED" if reason else "ok"), reason or ""


def checked_row(task, provider, meta) -> tuple[dict, object]:
    """The provider's table row after its check (status and reason, torch.compile's compile
    time) and the step to time: None when it must not be timed."""
    case = task.case
    row = {"op": case.op, "case": case.label, "series": case.series, "shape": list(case.shape),
           "size": case.size,
           "mode": task.mode, "dtype": str(task.dtype).removeprefix("torch."), "provider": provider,
           "status": "ok", "reason": "", "checked": provider not in UNCHECKED,
           "median_s": None, "p20_s": None, "p80_s": None, "reps": 0,
           "compile_s": None, "throughput": None, "throughput_unit": "", "ceiling_pct": None,
           "regressed": False, **meta}
    start = time.perf_counter()
    fn, leaves, status, reason = checked_provider(task, provider)
    if provider == "reference-compile":
        row["compile_s"] = time.perf_counter() - start  # the check's calls: compiling, mostly
    row.update(status=status, reason=reason)
    return row, (task.step(fn, leaves) if status in ("ok", "inexact") else None)


def add_timing(row, times, setup, ceilings) -> None:
    """The row's times (seconds per call) summarised, and its throughput against the ceiling."""
    stats = timing.summary(times)
    row.update(median_s=stats["median"], p20_s=stats["p20"], p80_s=stats["p80"], reps=stats["reps"])
    ceiling = ceilings[row["dtype"]]
    if setup.nbytes:
        row.update(throughput=setup.nbytes / stats["median"] / 1e9, throughput_unit="GB/s")
        row["ceiling_pct"] = 100 * row["throughput"] / ceiling["copy_gbs"]
    elif setup.flops:
        row.update(throughput=setup.flops / stats["median"] / 1e12, throughput_unit="TFLOP/s")
        row["ceiling_pct"] = 100 * row["throughput"] / ceiling["matmul_tflops"]


def add_round_speedups(rows, all_times) -> None:
    """Each row's speedups against the reference eager and against torch.compile of it from
    times taken in rounds (timing.measure_interleaved on a CPU: round i timed every provider
    in turn): the median over rounds of the baseline's time over the row's. A shared
    machine's speed moves within seconds; within a round it slows both alike, where a ratio
    of the two medians mixes rounds of different speeds (on a 2-core AMD EPYC, Zen 4, the
    2-D RealNVP's forward+backward came out at 0.89x and 1.03x in two quick runs, and at
    1.17x with the two alternating call by call)."""
    by_provider = {row["provider"]: times for row, times in zip(rows, all_times)}
    for row, times in zip(rows, all_times):
        for column, baseline in report.SPEEDUP_BASELINES:
            base = by_provider.get(baseline)
            if base is not None and len(base) == len(times):
                row[column] = statistics.median(b / t for b, t in zip(base, times))


def run_task(task, providers, device, budget, meta, ceilings, progress) -> list[dict]:
    """The rows of one case, dtype and mode: every provider checked, then the checked ones
    timed together (timing.measure_interleaved: in turns on a CPU)."""
    rows, steps = [], []
    for provider in providers:
        progress.step(f"{task.case.op} {task.case.label} {task.mode} {provider}")
        row, step = checked_row(task, provider, meta)
        rows.append(row)
        steps.append(step)
    timed = [(row, step) for row, step in zip(rows, steps) if step is not None]
    all_times = timing.measure_interleaved([step for _, step in timed], device, budget)
    if device.type == "cpu":
        add_round_speedups([row for row, _ in timed], all_times)
    for (row, _), times in zip(timed, all_times):
        add_timing(row, times, task.setup, ceilings)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    device = args.device
    dtypes = [DTYPES[name] for name in args.dtypes]
    meta = {"device": device_name(device), "torch": torch.__version__, "triton": _triton.VERSION,
            "cuda": torch.version.cuda, "git_commit": git_commit(),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    selected = cases(args.ops, args.full)
    plan = [(case, dtype, mode) for case in selected for dtype in dtypes if dtype in case.dtypes
            for mode in case.modes]
    progress = Progress(len(dtypes) + sum(len(case_providers(case, args.providers)) for case, _, _ in plan),
                        not args.no_progress)

    ceilings = {}
    for dtype in dtypes:
        name = str(dtype).removeprefix("torch.")
        progress.step(f"ceilings {name}")
        ceilings[name] = timing.ceilings(device, dtype, args.budget)

    rows = []
    for case, dtype, mode in plan:
        torch._dynamo.reset()  # a fresh compile per case, not dynamo's recompile limit
        task = Task(case, device, dtype, mode)
        rows += run_task(task, case_providers(case, args.providers), device, args.budget, meta,
                         ceilings, progress)
    progress.close()

    report.add_speedups(rows)
    regressed = report.compare(rows, args.compare, args.threshold) if args.compare else 0
    text = report.table(rows, meta, ceilings) + report.summary(rows) + report.autotune_decisions()
    print(text, end="")

    out = args.out or (Path("benchmarks/results") if Path("benchmarks").is_dir()
                       else Path("fastflow-bench")) / device_slug(device)
    out.mkdir(parents=True, exist_ok=True)
    prefix = args.config
    (out / f"{prefix}.md").write_text(text)
    report.write_csv(rows, meta, out / f"{prefix}.csv")
    config = {"config": args.config, "budget_s": args.budget, "ops": args.ops,
              "providers": args.providers, "dtypes": args.dtypes, "device_type": device.type}
    report.write_json(rows, meta, ceilings, config, out / f"{prefix}.json")
    try:
        plots = report.plot(rows, out, prefix)
    except ImportError:
        plots = []
        print("plots skipped: matplotlib is not installed (pip install matplotlib)")
    print(f"wrote {out / prefix}.{{md,csv,json}}" + (f" and {len(plots)} plots" if plots else ""))
    failed = sum(r["status"] == "FAILED" for r in rows)
    # torch.compile disagreeing with eager is shown, but only fastflow's own providers fail the run.
    failed_fastflow = sum(r["status"] == "FAILED" and not r["provider"].startswith("reference") for r in rows)
    if regressed:
        print(f"{regressed} rows REGRESSED against {args.compare} (slower by more than {args.threshold:.0%})")
    if failed:
        print(f"{failed} rows FAILED their check against the reference (not timed)")
    return 1 if failed_fastflow else 0
