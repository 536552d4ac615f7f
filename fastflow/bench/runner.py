"""`python -m fastflow.bench`: every op and model against the reference, on each provider
that can run here, checked before it is timed. See `python -m fastflow.bench --help`."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

import fastflow
from fastflow import triton as _triton
from fastflow.backend import BackendUnavailableError, unavailable_reason

from . import report, timing
from .cases import FWD_BWD, OPS, cases

PROVIDERS = ("reference", "reference-compile", "dense", "cpu", "cuda", "triton")
# Providers timed without the check, and the note the table gives them.
UNCHECKED = {"dense": "a different function: not checked"}
DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "float16": torch.float16, "bfloat16": torch.bfloat16}
# Seconds of repeated calls per measurement, per configuration.
BUDGETS = {"quick": 0.2, "full": 1.0}


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
                        help="the full configuration (GPU sizes); default: quick (a few minutes on a small CPU)")
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
                        help="seconds of timed calls per measurement (default: 0.2 quick, 1.0 full)")
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
    available = ["reference", "reference-compile", "dense"] + fastflow_providers(args.device)
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
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({os.cpu_count()} cores)"


def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return f"cpu-{platform.machine().lower()}-{os.cpu_count()}core"


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


def _mismatch(got, expected, tolerances) -> str | None:
    got, expected = _tuple(got), _tuple(expected)
    if len(got) != len(expected):
        return f"{len(got)} outputs, the reference has {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        rtol, atol = tolerances[e.dtype] if e.dtype in tolerances else tolerances[torch.float32]
        try:
            torch.testing.assert_close(g, e, rtol=rtol, atol=atol)
        except AssertionError as error:
            return f"output {i}: " + " ".join(str(error).split())[:200]
    return None


def _grad_mismatch(got, expected, tolerances) -> str | None:
    """Gradients sum over the batch in an order each provider picks: each is compared with
    a tolerance relative to its tensor's largest value, ten times the outputs' tolerance."""
    for i, (g, e) in enumerate(zip(got, expected)):
        rtol, atol = tolerances[e.dtype] if e.dtype in tolerances else tolerances[torch.float32]
        scale = float(e.abs().max()) if e.numel() else 0.0
        error = float((g - e).abs().max()) if e.numel() else 0.0
        if not error <= 10 * (atol + rtol * scale):  # also catches NaN
            return f"gradient {i}: largest difference {error:.3g}, largest value {scale:.3g}"
    return None


class Task:
    """One case at one dtype and mode: its inputs, the reference's results, and the step
    each provider times."""

    def __init__(self, case, device, dtype, mode):
        self.case, self.dtype, self.mode = case, dtype, mode
        self.setup = case.make(device, dtype, mode)
        if mode == FWD_BWD:
            outputs = self.setup.reference(*self.setup.inputs)
            diff = _differentiable(outputs)
            self.grad_outputs = [torch.randn_like(o) for o in diff]
            self.expected_grads = torch.autograd.grad(diff, self.setup.reference_leaves, self.grad_outputs)
        else:
            with torch.no_grad():
                outputs = self.setup.reference(*self.setup.inputs)
        self.expected = tuple(o.detach() for o in _tuple(outputs))

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
        """Why fn's outputs (and gradients, for fwd+bwd) are not the reference's, or None."""
        s = self.setup
        if self.mode == FWD_BWD:
            got = fn(*s.inputs)
            grads = torch.autograd.grad(_differentiable(got), leaves, self.grad_outputs)
        else:
            with torch.no_grad():
                got = fn(*s.inputs)
        got = tuple(o.detach() for o in _tuple(got))
        reason = (s.check(*got, *self.expected) if s.check else
                  _mismatch(got, self.expected, self.case.tolerances))
        if reason is None and self.mode == FWD_BWD:
            reason = _grad_mismatch(grads, self.expected_grads, self.case.tolerances)
        return reason


def checked_provider(task, provider) -> tuple:
    """(fn, leaves, status, reason): the provider's function and the tensors it
    differentiates, after its check against the reference. status is "ok" (reason: empty,
    or the note of a provider timed unchecked), "n/a" (it cannot run here: why) or "FAILED"
    (how it differs; it must not be timed)."""
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
    return fn, leaves, ("FAILED" if reason else "ok"), reason or ""


def run_task(task, provider, device, budget, meta, ceilings) -> dict:
    case, setup = task.case, task.setup
    row = {"op": case.op, "case": case.label, "series": case.series, "shape": list(case.shape),
           "size": case.size,
           "mode": task.mode, "dtype": str(task.dtype).removeprefix("torch."), "provider": provider,
           "status": "ok", "reason": "", "checked": provider not in UNCHECKED,
           "median_s": None, "p20_s": None, "p80_s": None, "reps": 0,
           "times_s": [], "throughput": None, "throughput_unit": "", "ceiling_pct": None,
           "regressed": False, **meta}
    fn, leaves, status, reason = checked_provider(task, provider)
    row.update(status=status, reason=reason)
    if status != "ok":
        return row
    times = timing.measure(task.step(fn, leaves), device, budget)
    stats = timing.summary(times)
    row.update(median_s=stats["median"], p20_s=stats["p20"], p80_s=stats["p80"], reps=stats["reps"],
               times_s=times)
    ceiling = ceilings[row["dtype"]]
    if setup.nbytes:
        row.update(throughput=setup.nbytes / stats["median"] / 1e9, throughput_unit="GB/s")
        row["ceiling_pct"] = 100 * row["throughput"] / ceiling["copy_gbs"]
    elif setup.flops:
        row.update(throughput=setup.flops / stats["median"] / 1e12, throughput_unit="TFLOP/s")
        row["ceiling_pct"] = 100 * row["throughput"] / ceiling["matmul_tflops"]
    return row


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
        for provider in case_providers(case, args.providers):
            progress.step(f"{case.op} {case.label} {mode} {provider}")
            rows.append(run_task(task, provider, device, args.budget, meta, ceilings))
    progress.close()

    report.add_speedups(rows)
    regressed = report.compare(rows, args.compare, args.threshold) if args.compare else 0
    text = report.table(rows, meta, ceilings)
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
