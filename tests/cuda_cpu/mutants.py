"""Plants one bug at a time in a copy of csrc and checks that the emulated tests fail: a
swapped index, a wrong sign in a gradient, an off-by-one bound, a missing ReLU, a wrong
shuffle offset, a missing __syncthreads (caught by ThreadSanitizer), in every kernel file of
csrc/cuda and in the per-element math it shares with the CPU kernels (csrc/<op>_math.h;
only the emulated build reads the copy, so the CPU kernel the tests compare with keeps the
right formula).

    python tests/cuda_cpu/mutants.py [--only NAME,...] [--list]

Exit status 1 when a mutant survives (its tests pass) or no longer applies (the kernel
changed: update the mutant). The copies build incrementally in build/cuda_emulated/
*-other-csrc, so each mutant recompiles one file."""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# name: (file in csrc, text, replacement, pytest -k selection, sanitizer or None)
MUTANTS = {
    "squeeze-swapped-index": ("cuda/squeeze_2x2.cu", "(2 * i + di) * s2 + (2 * j + dj) * s3",
                              "(2 * i + dj) * s2 + (2 * j + di) * s3", "squeeze", None),
    "squeeze-off-by-one": ("cuda/squeeze_2x2.cu", "idx < total;", "idx < total - 1;", "squeeze", None),
    "affine-gradient-sign": ("affine_coupling_math.h",
                             "grad_s_masked = grad_y * change * x * scale + grad_logdet;",
                             "grad_s_masked = grad_y * change * x * scale - grad_logdet;", "affine", None),
    "affine-off-by-one": ("cuda/affine_coupling.cu", "acc_t sum = 0;\n    for (int64_t d = lane; d < a.dim;",
                          "acc_t sum = 0;\n    for (int64_t d = lane; d < a.dim - 1;", "affine", None),
    "warp-shuffle-offset": ("cuda/dtype.cuh", "for (int offset = 16; offset > 0;",
                            "for (int offset = 8; offset > 0;", "affine", None),
    "block-sum-off-by-one": ("cuda/dtype.cuh", "v = threadIdx.x < kThreads / 32 ? partial",
                             "v = threadIdx.x < kThreads / 32 - 1 ? partial", "image or dequantize", None),
    "image-gradient-sign": ("image_coupling_math.h", "grad_t = grad_y * scale * change;",
                            "grad_t = -grad_y * scale * change;", "image", None),
    "image-swapped-index": ("cuda/image_coupling.cu", "partial[b * g.cond_channels + cc] = kReverse",
                            "partial[cc * g.batch + b] = kReverse", "image", None),
    "dequantize-off-by-one": ("cuda/dequantize_logit.cu", "i < (b + 1) * n;", "i <= (b + 1) * n;",
                              "dequantize", None),
    "masked-linear-staircase-off-by-one": ("cuda/masked_linear.cu", "w.prefix(min64(r0 + kN, rows) - 1);",
                                           "w.prefix(min64(r0 + kN, rows) - 2);", "masked_linear", None),
    "masked-linear-grad-x-search-off-by-one": ("cuda/masked_linear.cu",
                                               "first_above(w.row_prefix, rows, c0);",
                                               "first_above(w.row_prefix, rows, c0 + 1);", "masked_linear",
                                               None),
    "masked-linear-grad-weight-skip-bound": ("cuda/masked_linear.cu", "batch_end = c0 < w.prefix(",
                                             "batch_end = c0 + 1 < w.prefix(", "masked_linear", None),
    "masked-linear-missing-syncthreads": ("cuda/masked_linear.cu",
                                          "__syncthreads();  // the next step overwrites",
                                          "//  the next step overwrites", "masked_linear and float32",
                                          "thread"),
    "made-sample-missing-activation": ("cuda/made_sample.cu",
                                       "from.activated ? round_to<T>(activate<SampleMath>(a.activation, y)) : y",
                                       "y", "made_sample", None),
    "made-sample-missing-skip": ("cuda/made_sample.cu", "a.skip_positions[target.acc_offset + c0 + j]] += y;",
                                 "a.skip_positions[target.acc_offset + c0 + j]] += acc_t(0);",
                                 "made_sample", None),
    "made-sample-inverse-sign": ("made_sample_math.h", "Round::apply(e - mu) * Math::exp(-alpha)",
                                 "Round::apply(e - mu) * Math::exp(alpha)", "made_sample", None),
    "made-sample-off-by-one": ("cuda/made_sample.cu", "t <= steps;", "t < steps;", "made_sample", None),
    "made-sample-swapped-index": ("cuda/made_sample.cu", "out_width + a.out_order[p]]", "out_width + p]",
                                  "made_sample", None),
}


def run(name, workdir):
    file, text, replacement, selection, sanitizer = MUTANTS[name]
    csrc = workdir / "csrc"
    if csrc.exists():
        shutil.rmtree(csrc)
    shutil.copytree(ROOT / "csrc", csrc)
    path = csrc / file
    source = path.read_text()
    if source.count(text) != 1:
        return "does not apply", 0.0
    path.write_text(source.replace(text, replacement))
    env = dict(os.environ, FASTFLOW_EMULATE_CSRC=str(csrc))
    pytest_args = ["tests/test_cuda_emulated.py", "-x", "-q", "-p", "no:cacheprovider", "-k", selection]
    if sanitizer:
        command = [sys.executable, str(HERE / "sanitize.py"), sanitizer, *pytest_args]
    else:
        command = [sys.executable, "-m", "pytest", *pytest_args]
    start = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    output = result.stdout + result.stderr
    if result.returncode == 0:
        return "SURVIVED", seconds
    if "Error building extension" in output:
        return "does not compile", seconds
    if "ThreadSanitizer: data race" in output:
        return "killed (data race)", seconds
    if "FAILED" in output or "Error" in output:
        return "killed", seconds
    return f"killed (exit {result.returncode})", seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated mutant names")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(MUTANTS)
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        parser.error(f"unknown mutants {unknown}; --list shows them")
    if args.list:
        print("\n".join(names))
        return 0
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            verdict, seconds = run(name, Path(tmp))
            bad += verdict in ("SURVIVED", "does not apply", "does not compile")
            print(f"{name:42s} {verdict} ({seconds:.0f} s)", flush=True)
    print(f"{len(names) - bad} of {len(names)} mutants killed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
