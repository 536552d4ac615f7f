"""The runner's outputs: the terminal table, the long-format CSV, the JSON file, the PNG
plots, and the comparison with a stored run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .. import autotune

CSV_FIELDS = ["op", "case", "series", "shape", "mode", "dtype", "provider", "status", "reason", "checked",
              "median_s", "p20_s", "p80_s", "reps", "compile_s", "speedup_vs_eager", "speedup_vs_compile",
              "throughput", "throughput_unit", "ceiling_pct", "vs_stored", "regressed",
              "device", "torch", "triton", "cuda", "git_commit", "time"]


def row_key(row) -> tuple:
    return row["op"], row["case"], row["mode"], row["dtype"], row["provider"]


# Each speedup column and the provider it is measured against.
SPEEDUP_BASELINES = (("speedup_vs_eager", "reference"), ("speedup_vs_compile", "reference-compile"))


def add_speedups(rows) -> None:
    """Each row's speedup against the reference eager and against torch.compile of the
    reference on the same case, both timed in this run: the ratio of the medians, where the
    rows have no speedup from rounds (fastflow.bench.runner.add_round_speedups, on a CPU)."""
    medians = {row_key(r): r["median_s"] for r in rows if r["median_s"] is not None}
    for row in rows:
        for column, baseline in SPEEDUP_BASELINES:
            if row.get(column) is not None:
                continue
            base = medians.get(row_key(row)[:4] + (baseline,))
            row[column] = base / row["median_s"] if base and row["median_s"] else None


def compare(rows, stored_path: Path, threshold: float) -> int:
    """Marks each row whose median is slower than in the stored run (a JSON file of this
    runner) by more than `threshold` (0.1: 10%) as regressed. Returns how many were."""
    stored = json.loads(Path(stored_path).read_text())
    before = {row_key(r): r["median_s"] for r in stored["rows"] if r.get("median_s")}
    regressed = 0
    for row in rows:
        old = before.get(row_key(row))
        if old and row["median_s"]:
            row["vs_stored"] = row["median_s"] / old
            row["regressed"] = row["vs_stored"] > 1 + threshold
            regressed += row["regressed"]
    return regressed


def _time(seconds):
    if seconds is None:
        return ""
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _ratio(value):
    return "" if value is None else f"{value:.2f}x"


def table(rows, meta, ceilings) -> str:
    """The results as a Markdown table (readable in a terminal and pasteable into a README),
    under a header naming the device, the versions and the ceilings."""
    lines = [f"fastflow.bench on {meta['device']}; torch {meta['torch']}, triton {meta['triton']}, "
             f"CUDA {meta['cuda']}; commit {meta['git_commit']}; {meta['time']}"]
    for dtype, c in ceilings.items():
        lines.append(f"ceilings ({dtype}): device copy {c['copy_gbs']:.1f} GB/s, "
                     f"{c['matmul_n']}^3 matmul {c['matmul_tflops']:.3g} TFLOP/s")
    lines.append("median (p20-p80) per call; speedups from this run: on a CPU the median over "
                 "rounds of the baseline's time over the provider's in the same round, on a GPU "
                 "the ratio of medians; compile: torch.compile's first calls (compiling), not in "
                 "its median")
    stored = any("vs_stored" in r for r in rows)
    header = ["op", "case", "mode", "dtype", "provider", "median", "p20-p80", "vs eager",
              "vs compile", "throughput", "% ceiling", "compile"] + (["vs stored"] if stored else [])
    body = []
    for r in rows:
        compiling = _time(r.get("compile_s"))
        if r["median_s"] is None:
            timing = [r["status"], "", "", "", "", "", compiling]
        else:
            throughput = "" if r["throughput"] is None else f"{r['throughput']:.3g} {r['throughput_unit']}"
            timing = [_time(r["median_s"]), f"{_time(r['p20_s'])}-{_time(r['p80_s'])}",
                      _ratio(r["speedup_vs_eager"]), _ratio(r["speedup_vs_compile"]), throughput,
                      "" if r["ceiling_pct"] is None else f"{r['ceiling_pct']:.0f}%", compiling]
        if stored:
            mark = _ratio(r.get("vs_stored")) + (" REGRESSED" if r.get("regressed") else "")
            timing.append(mark)
        provider = r["provider"] + {"ok": "", "inexact": " (inexact)"}.get(r["status"], "")
        provider += "" if r["checked"] else " (not checked)"
        body.append([r["op"], r["case"], r["mode"], r["dtype"], provider] + timing)
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body)]

    def fmt(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    lines += ["", fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(cells) for cells in body]
    # An unchecked provider's note is the same on every row: it is given once.
    notes = list(dict.fromkeys(
        f"- {r['provider']}: {r['reason']}" if not r["checked"] else
        f"- {r['op']} {r['case']} {r['mode']} {r['dtype']} {r['provider']}: {r['status']}: {r['reason']}"
        for r in rows if r["reason"]))
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def summary(rows) -> str:
    """One line per op: `auto` (what a user gets by default) against the reference eager and
    against torch.compile of it: the geometric mean of its speedups over the op's timed
    cases, modes and dtypes, with their range."""
    lines = ["", "auto (fastflow's default) against the reference, geometric mean (range) over each op's rows:"]
    for op in dict.fromkeys(r["op"] for r in rows):
        auto = [r for r in rows if r["op"] == op and r["provider"] == "auto"]
        if not auto:
            continue
        parts = []
        for column, name in (("speedup_vs_eager", "eager"), ("speedup_vs_compile", "torch.compile")):
            values = [r[column] for r in auto if r[column]]
            if values:
                mean = math.exp(sum(map(math.log, values)) / len(values))
                parts.append(f"vs {name} {mean:.2f}x ({min(values):.2f}-{max(values):.2f}x, {len(values)} rows)")
        failed = sum(r["status"] == "FAILED" for r in auto)
        parts += [f"{failed} FAILED"] if failed else []
        lines.append(f"  {op}: " + ("; ".join(parts) or "not timed"))
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def autotune_decisions() -> str:
    """What `auto` measured and picked in this run, per shape class (fastflow.autotune)."""
    decisions = autotune.decisions()
    if not decisions:
        return ""
    lines = ["", "auto's measured choices (fastflow.autotune; fastest timed call of each candidate, "
             "and the median over rounds of its time over the reference's, which decides):"]
    lines += [f"  {autotune.describe(key)}: {decision}" for key, decision in decisions.items()]
    return "\n".join(lines) + "\n"


def write_csv(rows, meta, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **meta, "shape": "x".join(map(str, row["shape"]))})


def write_json(rows, meta, ceilings, config, path: Path) -> None:
    """The run as one JSON document: summaries per row, no per-call times (small enough to
    commit)."""
    path.write_text(json.dumps({"meta": meta, "config": config, "ceilings": ceilings, "rows": rows},
                               separators=(",", ":")) + "\n")


def plot(rows, out_dir: Path, prefix: str) -> list[Path]:
    """One PNG per op: speedup against the reference eager over input size, one line per
    provider (and series, mode and dtype where the op has several)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    written = []
    for op in dict.fromkeys(r["op"] for r in rows):
        lines = {}
        for r in rows:
            if r["op"] == op and r["provider"] != "reference" and r["speedup_vs_eager"]:
                lines.setdefault((r["provider"], r["series"], r["mode"], r["dtype"]), []).append(
                    (r["size"], r["speedup_vs_eager"]))
        if not lines:
            continue
        # A label names the provider and whichever of series, mode and dtype vary in this plot.
        varying = [i for i in range(1, 4) if len({key[i] for key in lines}) > 1]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key, points in lines.items():
            points.sort()
            ax.plot(*zip(*points), marker="o", label=" ".join([key[0]] + [key[i] for i in varying]))
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("input elements")
        ax.set_ylabel("speedup against the reference eager")
        ax.set_title(f"{op} ({rows[0]['device']})")
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = out_dir / f"{prefix}-{op}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
