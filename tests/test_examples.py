"""examples/: each example runs with --smoke (a few steps, its PNGs still written), and the
reference's and fastflow's losses agree over those steps: to float32 rounding at the first
(the same weights and batch), within 1% after (Adam's steps turn rounding differences in
the gradients into slowly growing ones)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["realnvp_moons", "made_digits", "maf_digits", "realnvp_digits"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_smoke(name, tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), "--smoke",
                             "--out", str(tmp_path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / f"{name}.png").stat().st_size > 1000, "its PNG is missing or empty"
    assert str(tmp_path) in result.stdout  # it says where the PNGs are
    summary = json.loads((tmp_path / "losses.json").read_text())
    reference, fast = summary["reference"]["losses"], summary["fastflow"]["losses"]
    assert len(reference) == len(fast) == 5
    assert abs(fast[0] - reference[0]) <= 1e-5 * abs(reference[0])
    for step, (r, f) in enumerate(zip(reference, fast)):
        assert abs(f - r) <= 1e-2 * abs(r), f"step {step}: fastflow {f}, reference {r}"
    assert reference[-1] < reference[0], "five steps of Adam should lower the loss"
