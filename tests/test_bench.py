"""The benchmark runner (`python -m fastflow.bench`) on a tiny configuration: its outputs,
the check before timing, --compare, the filters and its argument errors."""

import csv
import json
import os

import pytest
import torch

import fastflow
from fastflow.backend import unavailable_reason
from fastflow.bench import cases, main, runner

pytestmark = pytest.mark.skipif(unavailable_reason("cpu") is not None,
                                reason="needs the C++ CPU kernels")

TINY = ["--device", "cpu", "--ops", "squeeze_2x2", "--providers", "reference,cpu",
        "--budget", "0.01", "--no-progress"]


@pytest.fixture(autouse=True)
def tiny_squeeze(monkeypatch):
    """One small squeeze case, so that a run takes well under a second."""
    monkeypatch.setitem(cases.OPS, "squeeze_2x2",
                        lambda full: [cases._squeeze((2, 3, 8, 8), "", (cases.FWD,))])


def run(tmp_path, *extra):
    code = main(TINY + ["--out", str(tmp_path), *extra])
    rows = json.loads((tmp_path / "quick.json").read_text())
    return code, rows


def test_outputs(tmp_path, capsys):
    code, data = run(tmp_path)
    assert code == 0
    rows = data["rows"]
    assert [(r["op"], r["provider"], r["status"]) for r in rows] == [
        ("squeeze_2x2", "reference", "ok"), ("squeeze_2x2", "cpu", "ok")]
    for row in rows:
        assert row["p20_s"] <= row["median_s"] <= row["p80_s"]
        assert row["reps"] >= 3 and "times_s" not in row
        assert row["throughput_unit"] == "GB/s" and row["throughput"] > 0
        assert row["shape"] == [2, 3, 8, 8] and row["dtype"] == "float32" and row["mode"] == "fwd"
    assert rows[0]["speedup_vs_eager"] == 1.0 and rows[1]["speedup_vs_compile"] is None
    meta = data["meta"]
    assert set(meta) == {"device", "torch", "triton", "cuda", "git_commit", "time"}
    assert data["ceilings"]["float32"]["copy_gbs"] > 0 and data["ceilings"]["float32"]["matmul_tflops"] > 0
    with open(tmp_path / "quick.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["provider"] for r in table] == ["reference", "cpu"]
    assert table[1]["shape"] == "2x3x8x8" and float(table[1]["median_s"]) == rows[1]["median_s"]
    assert table[1]["torch"] == meta["torch"]
    out = capsys.readouterr().out
    assert "squeeze_2x2" in out and "% ceiling" in out
    assert (tmp_path / "quick.md").read_text() in out
    try:
        import matplotlib  # noqa: F401
        assert (tmp_path / "quick-squeeze_2x2.png").is_file()
    except ImportError:
        assert "plots skipped: matplotlib is not installed" in out


def test_wrong_provider_is_failed_and_not_timed(tmp_path, monkeypatch, capsys):
    calls = []

    def wrong(x, reverse=False, alt_order=False):
        calls.append(1)
        return fastflow.ops.squeeze_2x2(x, reverse=reverse, alt_order=alt_order) + 1

    monkeypatch.setattr(fastflow, "squeeze_2x2", wrong)
    code, data = run(tmp_path)
    assert code == 1
    cpu = data["rows"][1]
    assert cpu["provider"] == "cpu" and cpu["status"] == "FAILED" and "output 0" in cpu["reason"]
    assert cpu["median_s"] is None and cpu["reps"] == 0
    assert len(calls) == 1  # the check only
    assert "FAILED" in capsys.readouterr().out


def test_dense_is_timed_unchecked(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cases.OPS, "masked_linear", lambda full: [
        cases._masked_linear("masked_linear", 2, 784, 512, 784)])
    code = main(["--device", "cpu", "--ops", "masked_linear,squeeze_2x2", "--providers", "reference,dense",
                 "--budget", "0.01", "--no-progress", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "quick.json").read_text())["rows"]
    assert code == 0
    # dense only where the case has a dense counterpart
    assert [(r["op"], r["mode"], r["provider"], r["checked"]) for r in rows] == [
        ("squeeze_2x2", "fwd", "reference", True),
        ("masked_linear", "fwd", "reference", True), ("masked_linear", "fwd", "dense", False),
        ("masked_linear", "fwd+bwd", "reference", True), ("masked_linear", "fwd+bwd", "dense", False)]
    assert all(r["status"] == "ok" and r["median_s"] for r in rows)
    out = capsys.readouterr().out
    assert "dense (not checked)" in out
    assert out.count("- dense: a different function: not checked") == 1


def test_compare_marks_regressions(tmp_path, capsys):
    run(tmp_path / "before")
    stored = tmp_path / "before" / "quick.json"
    data = json.loads(stored.read_text())
    data["rows"][0]["median_s"] *= 100  # the stored reference was much slower: no regression
    data["rows"][1]["median_s"] /= 100  # the stored cpu run was much faster
    stored.write_text(json.dumps(data))
    _, after = run(tmp_path / "after", "--compare", str(stored))
    ref, cpu = after["rows"]
    assert cpu["regressed"] and cpu["vs_stored"] > 1.1
    assert not ref["regressed"]
    assert "REGRESSED" in capsys.readouterr().out


def test_filters(tmp_path):
    _, data = run(tmp_path, "--providers", "cpu")
    assert [r["provider"] for r in data["rows"]] == ["cpu"]
    assert data["config"]["ops"] == ["squeeze_2x2"]


@pytest.mark.parametrize("argv, message", [
    (["--ops", "nope"], "unknown op 'nope'"),
    (["--providers", "reference,gpu"], "unknown provider 'gpu'"),
    (["--dtypes", "int8"], "unknown dtype 'int8'"),
    (["--compare", "missing.json"], "no such file"),
    (["--budget", "0"], "--budget must be positive"),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cpu"] + argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unavailable_provider_is_an_error(capsys):
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--providers", "cuda"])
    assert "provider 'cuda' is unavailable" in capsys.readouterr().err


def test_every_case_builds():
    """Each op's quick and full cases define a size and make inputs on the CPU (the full
    sizes are built without running them)."""
    for full in (False, True):
        selected = cases.cases(cases.OPS, full)
        assert {case.op for case in selected} == set(cases.OPS)
        assert len({(c.op, c.label) for c in selected}) == len(selected)
    small = [c for c in cases.cases(cases.OPS, False) if c.op in ("affine_coupling", "made_sample")]
    for case in small:
        setup = case.make(torch.device("cpu"), torch.float32, case.modes[0])
        assert setup.inputs and (setup.nbytes or setup.flops or case.op == "made_sample")


def _sloppy_case(reference_error, provider_error, zero_grad=False):
    """A case whose float32 reference is off by `reference_error` (relative) and whose fused
    function is off by `provider_error`; both exact in float64. With zero_grad, the second
    input gets no gradient in float64 (as a conv bias before a train-mode BatchNorm)."""
    def off(x, error):
        return x * (1 + error) if x.dtype != torch.float64 else x

    def make(device, dtype, mode):
        x = cases._randn((64, 16), device, dtype, mode) + 3.0
        b = cases._randn((16,), device, dtype, mode)

        def ref(x, b):
            return off(x, reference_error) + 0 * b

        def fused(x, b):
            with_b = x + (0 * b if not zero_grad else b * 1e-9 * (x.dtype != torch.float64))
            return off(with_b, provider_error)
        return cases._op_setup((x, b), ref, fused, mode)
    return cases.Case("squeeze_2x2", "sloppy", (64, 16), 1024, make, dtypes=(torch.float32,),
                      modes=(cases.FWD, cases.FWD_BWD))


@pytest.mark.parametrize("reference_error, provider_error, passes", [
    (1e-3, 0.0, True),      # more accurate than the reference: passes (judged against float64)
    (1e-3, 1.9e-3, True),   # within 2x the reference's own error
    (1e-3, 2.2e-3, False),  # beyond it
    (0.0, 5e-6, True),      # within float32's tolerance
    (0.0, 5e-5, False),     # beyond it
])
def test_check_against_float64(tmp_path, monkeypatch, reference_error, provider_error, passes):
    monkeypatch.setitem(cases.OPS, "squeeze_2x2", lambda full: [_sloppy_case(reference_error, provider_error)])
    code, data = run(tmp_path)
    cpu = data["rows"][1]
    assert (cpu["status"] == "ok") == passes, cpu["reason"]
    assert code == (0 if passes else 1)
    if not passes:
        assert "against float64" in cpu["reason"]


def test_zero_float64_gradient_judged_against_the_models_scale(tmp_path, monkeypatch):
    """b's float64 gradient is exactly zero; the provider's 1e-9-scale gradient there is
    judged against the largest gradient (x's), not against zero."""
    monkeypatch.setitem(cases.OPS, "squeeze_2x2", lambda full: [_sloppy_case(0.0, 0.0, zero_grad=True)])
    _, data = run(tmp_path)
    rows = [r for r in data["rows"] if r["mode"] == "fwd+bwd"]
    assert rows and all(r["status"] == "ok" for r in rows), rows


def test_auto_provider_and_summary(tmp_path, capsys):
    code = main(TINY[:-3] + ["--providers", "reference,auto", "--budget", "0.01", "--no-progress",
                             "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "quick.json").read_text())["rows"]
    assert code == 0 and [r["provider"] for r in rows] == ["reference", "auto"]
    assert rows[1]["status"] == "ok" and rows[1]["speedup_vs_eager"] > 0
    out = capsys.readouterr().out
    assert "  squeeze_2x2: vs eager" in out


def test_every_quick_case_has_a_float64_truth():
    """Each quick case's reference runs again in float64 (the truth providers are judged
    against) in each of its modes, and agrees with its float32 run."""
    from fastflow.accuracy import relative_error
    from fastflow.bench.runner import Task
    for case in cases.cases(cases.OPS, False):
        for mode in case.modes:
            task = Task(case, torch.device("cpu"), torch.float32, mode)
            if task.setup.check is not None:
                continue  # sampling: checked against the reference loop itself
            for expected, truth in zip(task.expected, task.truth):
                assert truth.dtype in (torch.float64, torch.int64, torch.bool), (case.label, truth.dtype)
                assert relative_error(expected, truth) < 1e-2, (case.op, case.label, mode)


def test_autotune_choices_are_reported(tmp_path, capsys, monkeypatch):
    """The run lists what `auto` measured and picked for each shape class it met."""
    monkeypatch.delenv(fastflow.autotune.ENV_VAR, raising=False)
    fastflow.autotune.clear()
    code = main(["--device", "cpu", "--ops", "degree_masked_linear", "--providers", "reference,auto",
                 "--budget", "0.01", "--no-progress", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    if fastflow.info().extension.loaded:
        assert "auto's measured choices" in out
        assert "degree_masked_linear cpu float32 b<=256 512->512" in out
        assert "auto's measured choices" in (tmp_path / "quick.md").read_text()
    fastflow.autotune.clear()


def test_every_registered_op_is_benchmarked():
    from fastflow.bench.cases import OPS
    from fastflow.ops import registry

    for op in registry.ops():
        assert op.bench in OPS, f"{op.name}: no benchmark cases under {op.bench!r}"
        assert OPS[op.bench](False), f"{op.name}: {op.bench!r} has no quick cases"


def test_cpu_timing_takes_turns():
    """On a CPU the providers of a case are timed in rounds, each a run of calls of every
    provider in turn: a fast and a slow function both get MIN_REPS times or more, runs of
    about a tenth of the budget, and their calls alternate after warm-up."""
    import time

    from fastflow.bench import timing
    calls = []

    def fast():
        calls.append("fast")

    def slow():
        calls.append("slow")
        time.sleep(0.004)
    budget = 0.02
    fast_times, slow_times = timing.measure_interleaved([fast, slow], torch.device("cpu"), budget)
    assert len(fast_times) >= timing.MIN_REPS and len(slow_times) >= timing.MIN_REPS
    assert len(fast_times) == len(slow_times)  # one time each per round
    assert min(slow_times) >= 0.004 and max(fast_times) < 0.004
    timed = calls[calls.index("slow", calls.index("slow") + 1):]  # after slow's warm-up
    timed = timed[timed.index("fast"):]
    switches = sum(a != b for a, b in zip(timed, timed[1:]))
    assert switches >= 2 * timing.MIN_REPS - 2
    # a run of slow is one call (a call exceeds a tenth of the budget)
    assert all(a != b for a, b in zip(timed, timed[1:]) if a == "slow")


class _Kink(torch.nn.Module):
    """relu(x·w − 1) + 2·x·w, its input on the ReLU's kink (x = w = 1)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(256))

    def forward(self, x):
        return torch.relu(x * self.w - 1) + 2 * x * self.w


class _HalfKink(_Kink):
    """The same values; its ReLU's derivative at the kink is 1/2 instead of 0."""

    def forward(self, x):
        z = x * self.w - 1
        return 0.5 * (z + z.abs()) + 2 * x * self.w


def _kink_case():
    def make(device, dtype, mode):
        ref, fast = _Kink().to(device, dtype), _HalfKink().to(device, dtype)
        return cases._model_setup(ref, fast, lambda model, x: model(x),
                                  torch.ones(256, device=device, dtype=dtype), mode)
    return cases.Case("squeeze_2x2", "kink", (256,), 256, make, dtypes=(torch.float32,),
                      modes=(cases.FWD_BWD,))


@pytest.mark.parametrize("perturbed", [True, False])
def test_gradient_jump_at_a_relu_kink_is_the_references_error_too(tmp_path, monkeypatch, perturbed):
    """A model's input on a ReLU's kink: the reference's gradient there jumps under a
    rounding-sized change of its inputs, so a provider on the kink's other side (25% off)
    passes, judged against the reference's runs on perturbed inputs (about 50% off); judged
    against its single exact run it would fail."""
    from fastflow.bench.runner import Task
    monkeypatch.setitem(cases.OPS, "squeeze_2x2", lambda full: [_kink_case()])
    if not perturbed:
        monkeypatch.setattr(Task, "_perturbed_reference_grads", lambda self: [])
    code, data = run(tmp_path)
    cpu = data["rows"][1]
    assert (cpu["status"] == "ok") == perturbed, cpu["reason"]
    assert code == (0 if perturbed else 1)


def test_cpu_name_has_family_model_and_vector_extensions(tmp_path, monkeypatch):
    """The stored runs' header names the CPU with its x86 family and model (a VM may call Zen
    4 and Zen 5 both "AMD EPYC") and the vector extensions that pick its kernels; /proc/cpuinfo
    fields are matched whole ("model" is not "model name")."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
                       "flags\t\t: fpu sse avx2 fma avx512f\n")
    assert runner._cpuinfo("model", str(cpuinfo)) == "2"
    assert runner._cpuinfo("model name", str(cpuinfo)) == "AMD EPYC"
    assert runner._cpuinfo("stepping", str(cpuinfo)) is None
    read = runner._cpuinfo
    monkeypatch.setattr(runner, "_cpuinfo", lambda field: read(field, str(cpuinfo)))
    assert runner.device_name(torch.device("cpu")) == (
        f"AMD EPYC (family 26 model 2; {os.cpu_count()} cores; avx2 fma avx512f)")
    # and the default results folder tells them apart too
    assert runner.device_slug(torch.device("cpu")) == f"cpu-amd-epyc-family26-model2-{os.cpu_count()}core"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor @ 2.1GHz\n")
    assert runner.device_slug(torch.device("cpu")) == f"cpu-intel-xeon-{os.cpu_count()}core"


def test_cpu_speedups_pair_the_rounds():
    """On a CPU a speedup is the median over rounds of the reference's time over the
    provider's in the same round: a slow moment that hit only some rounds does not skew it,
    where the ratio of the medians (3.0 / 0.8 here) would."""
    rows = [{"provider": "reference"}, {"provider": "cpu"}]
    runner.add_round_speedups(rows, [[1.0, 3.0, 3.0], [0.8, 0.8, 2.4]])
    assert rows[0]["speedup_vs_eager"] == 1.0
    assert rows[1]["speedup_vs_eager"] == pytest.approx(1.25)
    assert "speedup_vs_compile" not in rows[1]
