"""One small call of each fastflow CUDA kernel, forward and backward where there is one,
for compute-sanitizer (benchmarks/gpu_check.sh runs it under memcheck and racecheck):

    compute-sanitizer --tool memcheck --error-exitcode 1 python benchmarks/gpu_sanitizer_cases.py
    compute-sanitizer --tool racecheck --error-exitcode 1 python benchmarks/gpu_sanitizer_cases.py
    python benchmarks/gpu_sanitizer_cases.py --ops squeeze_2x2,made_sample
    python benchmarks/gpu_sanitizer_cases.py --list

Runs on the 'cuda' backend (fastflow.set_backend("cuda")) on small inputs (at most a few
thousand elements a tensor, but for made_sample_scratch's one wide hidden layer), sized to
cross each kernel's tile, warp and block edges: the sanitizers slow kernels down 10-100x. Inputs are made on the CPU
from a fixed seed and copied over, so that few other kernels run. Each case is
synchronized and its outputs (and gradients) checked to be finite; samples to be 0 or 1.

Exit status: 0 when every case ran and gave finite outputs, 1 when a case failed (each is
reported), 2 when the backend cannot run here (no CUDA GPU, no CUDA build) or on bad
arguments. `--device cpu` (not listed in --help) runs the same cases on the 'cpu' backend,
to check this script on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

CASES = {}  # name -> (function(device, dtype), what it runs)


def case(name, what):
    def register(fn):
        CASES[name] = (fn, what)
        return fn
    return register


def _args(argv):
    parser = argparse.ArgumentParser(
        prog="python benchmarks/gpu_sanitizer_cases.py",
        description="One small call of each fastflow CUDA kernel (forward and backward) on the "
                    "'cuda' backend, for compute-sanitizer. Exit status 0: all finite; 1: a case "
                    "failed; 2: the backend is unavailable here.")
    parser.add_argument("--ops", default=None,
                        help="comma-separated cases to run (default: all): " + ", ".join(CASES))
    parser.add_argument("--dtypes", default="float32",
                        help="comma-separated dtypes (default: float32): float32, float64, "
                             "float16, bfloat16 (made_sample_scratch sizes itself per dtype)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    # Hidden: run the same cases elsewhere, to check this script without a GPU.
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help=argparse.SUPPRESS)
    parser.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = list(CASES) if args.ops is None else [n.strip() for n in args.ops.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        parser.error(f"--ops: unknown case(s) {', '.join(unknown) or '(none given)'}; "
                     f"expected some of: {', '.join(CASES)}")
    args.ops = names
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in args.dtypes if d not in ("float32", "float64", "float16", "bfloat16")]
    if bad or not args.dtypes:
        parser.error(f"--dtypes: unknown dtype(s) {', '.join(bad) or '(none given)'}")
    if args.backend is None:
        args.backend = "cuda" if args.device == "cuda" else "cpu"
    return args


# ---------------------------------------------------------------------------------------
# Helpers (torch is imported in main, after the arguments are read).

torch = None
fastflow = None


def rand(*shape, device, dtype, low=-1.0, high=1.0, grad=False):
    """Uniform values made on the CPU (fixed seed) and copied to `device`."""
    t = (torch.rand(*shape, dtype=torch.float64) * (high - low) + low).to(device=device, dtype=dtype)
    return t.requires_grad_(grad)


def backward(outputs, inputs):
    """Gradients of `outputs` for `inputs`, with random output gradients."""
    outputs = [o for o in outputs if o.requires_grad]
    grads = [rand(*o.shape, device=o.device, dtype=o.dtype) for o in outputs]
    return torch.autograd.grad(outputs, inputs, grads, allow_unused=True)


def check_finite(label, *tensors):
    for i, t in enumerate(tensors):
        if t is None:
            continue
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise AssertionError(f"{label}: output {i} {tuple(t.shape)} has {bad} non-finite values")


# ---------------------------------------------------------------------------------------
# The cases. Sizes cross the kernels' edges: affine coupling runs a warp per row and 8 rows
# per block (9 rows, 70 columns); masked linear tiles are 64 (32 for float64) with k-steps of
# 16 (70 x 75 -> 67); made_sample runs 8 samples per block (9 samples).

@case("squeeze_2x2", "squeeze_2x2 forward, reverse and alt_order, and the backward of each")
def _squeeze(device, dtype):
    x = rand(3, 8, 6, 10, device=device, dtype=dtype, grad=True)
    for alt in (False, True):
        y = fastflow.squeeze_2x2(x, alt_order=alt)
        back = fastflow.squeeze_2x2(y, reverse=True, alt_order=alt)
        (gx,) = backward([back], [x])
        check_finite(f"squeeze_2x2 alt_order={alt}", y, back, gx)
        if not torch.equal(back.detach(), x.detach()):
            raise AssertionError(f"squeeze_2x2 alt_order={alt}: reverse(forward(x)) != x")


@case("affine_coupling", "affine_coupling forward and backward (s, t strided halves of one tensor)")
def _affine(device, dtype):
    B, D = 9, 70
    x = rand(B, D, device=device, dtype=dtype, grad=True)
    st = rand(B, 2 * D, device=device, dtype=dtype, grad=True)
    mask = (torch.arange(D) % 2).to(device=device, dtype=dtype)
    for tanh_scale, reverse in ((False, False), (True, True)):
        s, t = st.chunk(2, dim=1)
        y, logdet = fastflow.ops.affine_coupling(x, s, t, mask, tanh_scale=tanh_scale, reverse=reverse)
        grads = backward([y, logdet], [x, st])
        check_finite(f"affine_coupling tanh={tanh_scale} reverse={reverse}", y, logdet, *grads)


@case("affine_coupling_packed", "affine_coupling_packed forward and backward")
def _affine_packed(device, dtype):
    B, D = 9, 70
    x = rand(B, D, device=device, dtype=dtype, grad=True)
    st = rand(B, 2 * D, device=device, dtype=dtype, grad=True)
    mask = (torch.arange(D) % 2 == 0).to(device=device, dtype=dtype)
    for tanh_scale, reverse in ((True, False), (False, True)):
        y, logdet = fastflow.ops.affine_coupling_packed(x, st, mask, tanh_scale=tanh_scale,
                                                        reverse=reverse)
        grads = backward([y, logdet], [x, st])
        check_finite(f"affine_coupling_packed tanh={tanh_scale} reverse={reverse}", y, logdet, *grads)


@case("image_coupling", "image_coupling forward and backward, checkerboard and channel-wise")
def _image(device, dtype):
    B, C, H, W = 3, 4, 6, 10
    for channel_wise, reverse_mask, reverse in ((False, False, False), (True, True, True)):
        cc = C // 2 if channel_wise else C
        x = rand(B, C, H, W, device=device, dtype=dtype, grad=True)
        st = rand(B, 2 * cc, H, W, device=device, dtype=dtype, grad=True)
        rescale = rand(cc, 1, 1, device=device, dtype=dtype, low=0.5, high=1.5, grad=True)
        y, logdet = fastflow.ops.image_coupling(x, st, rescale, channel_wise=channel_wise,
                                                reverse_mask=reverse_mask, reverse=reverse)
        grads = backward([y, logdet], [x, st, rescale])
        check_finite(f"image_coupling channel_wise={channel_wise} reverse={reverse}", y, logdet, *grads)


@case("dequantize_logit", "dequantize_logit forward (its backward is a PyTorch formula)")
def _dequantize(device, dtype):
    x = rand(3, 3, 5, 7, device=device, dtype=dtype, low=0.0, high=1.0)
    noise = rand(3, 3, 5, 7, device=device, dtype=dtype, low=0.0, high=0.999)
    constraint = torch.tensor(0.9, dtype=dtype).to(device)
    y, sldj = fastflow.ops.dequantize_logit(x, noise, constraint)
    check_finite("dequantize_logit", y, sldj)


@case("masked_linear", "masked_linear forward and backward (0/1 mask, bias)")
def _masked_linear(device, dtype):
    B, K, N = 70, 75, 67
    x = rand(B, K, device=device, dtype=dtype, grad=True)
    weight = rand(N, K, device=device, dtype=dtype, grad=True)
    bias = rand(N, device=device, dtype=dtype, grad=True)
    mask = (torch.rand(N, K) < 0.5).to(device=device, dtype=dtype)
    y = fastflow.ops.masked_linear(x, weight, mask, bias)
    grads = backward([y], [x, weight, bias])
    check_finite("masked_linear", y, *grads)


@case("degree_masked_linear", "degree_masked_linear forward and backward, degrees unsorted, "
                              "strict and not")
def _degree_masked_linear(device, dtype):
    B, K, N = 70, 75, 67
    x = rand(B, K, device=device, dtype=dtype, grad=True)
    weight = rand(N, K, device=device, dtype=dtype, grad=True)
    bias = rand(N, device=device, dtype=dtype, grad=True)
    in_degrees = torch.randint(1, 11, (K,)).to(device)
    out_degrees = torch.randint(1, 11, (N,)).to(device)
    for strict in (False, True):
        y = fastflow.ops.degree_masked_linear(x, weight, in_degrees, out_degrees, bias, strict=strict)
        grads = backward([y], [x, weight, bias])
        check_finite(f"degree_masked_linear strict={strict}", y, *grads)


def _bernoulli_made(dims, hidden, device, dtype):
    import numpy as np
    np.random.seed(0)
    torch.manual_seed(0)
    return fastflow.nn.MADE(dims, hidden, dims).to(device=device, dtype=dtype)


def _check_samples(label, made, samples, log_p):
    check_finite(label, samples, log_p)
    if not bool(((samples == 0) | (samples == 1)).all()):
        raise AssertionError(f"{label}: samples other than 0 and 1")
    if samples.shape != (9, made.input_dim) or log_p.shape != (9,):
        raise AssertionError(f"{label}: shapes {tuple(samples.shape)}, {tuple(log_p.shape)}")


@case("made_sample", "made_sample on a small MADE (accumulators in shared memory), with logits")
def _made_sample(device, dtype):
    made = _bernoulli_made(10, [32, 24], device, dtype)
    uniforms = rand(9, 10, device=device, dtype=dtype, low=0.0, high=1.0)
    with torch.no_grad():
        samples, log_p, logits = fastflow.made_sample(made, 9, uniforms=uniforms, return_logits=True)
    _check_samples("made_sample", made, samples, log_p)
    check_finite("made_sample logits", logits)


@case("made_sample_scratch", "made_sample on a MADE whose accumulators do not fit in shared "
                             "memory (the global-scratch path)")
def _made_sample_scratch(device, dtype):
    # 8 samples per block, one accumulator per hidden and output unit, in float32 (float64
    # for float64): one hidden layer wider than the opt-in shared memory holds.
    optin = 232448  # the H100's and H200's 227 KiB
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        optin = getattr(props, "shared_memory_per_block_optin", optin) or optin
    acc_size = 8 if dtype == torch.float64 else 4
    hidden = -(-(optin // (8 * acc_size) + 64) // 32) * 32
    made = _bernoulli_made(8, [hidden], device, dtype)
    uniforms = rand(9, 8, device=device, dtype=dtype, low=0.0, high=1.0)
    with torch.no_grad():
        samples, log_p = fastflow.made_sample(made, 9, uniforms=uniforms)
    _check_samples(f"made_sample_scratch (hidden {hidden})", made, samples, log_p)


@case("gaussian_made_sample", "gaussian_made_sample and iaf_inverse (the same kernel's other "
                              "rules) on a small Gaussian MADE (fastflow.nn.maf.MADE)")
def _gaussian(device, dtype):
    torch.manual_seed(0)
    made = fastflow.nn.maf.MADE(10, 24, 1).to(device=device, dtype=dtype)
    z = rand(9, 10, device=device, dtype=dtype)
    with torch.no_grad():
        x, log_det = fastflow.gaussian_made_sample(made, z)
        z_back, log_det_back = fastflow.iaf_inverse(made, x)
    check_finite("gaussian_made_sample / iaf_inverse", x, log_det, z_back, log_det_back)


# ---------------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = _args(argv)
    if args.list:
        for name, (_, what) in CASES.items():
            print(f"{name:22} {what}")
        return 0
    if args.device == "cpu" and args.backend == "triton":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before fastflow defines its kernels

    global torch, fastflow
    import torch as _torch
    torch = _torch
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_sanitizer_cases: no CUDA GPU is visible to torch; these cases are for a GPU "
              "machine (--help)", file=sys.stderr)
        return 2
    import fastflow as _fastflow
    fastflow = _fastflow
    try:
        fastflow.set_backend(args.backend)
    except (fastflow.BackendUnavailableError, ValueError) as error:
        print(f"gpu_sanitizer_cases: {error}", file=sys.stderr)
        return 2

    device = torch.device(args.device)
    dtypes = [getattr(torch, name) for name in args.dtypes]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_sanitizer_cases: backend {args.backend} on {where}; torch {torch.__version__}; "
          f"{len(args.ops)} case(s) x {', '.join(args.dtypes)}", flush=True)
    failed, start = [], time.perf_counter()
    for name in args.ops:
        fn, _ = CASES[name]
        for dtype in dtypes:
            label = f"{name} [{str(dtype).removeprefix('torch.')}]"
            torch.manual_seed(0)
            t0 = time.perf_counter()
            try:
                fn(device, dtype)
                if device.type == "cuda":
                    torch.cuda.synchronize()  # a kernel's fault surfaces here, with its case
            except Exception as error:  # noqa: BLE001 - every case is reported, then the next runs
                failed.append(label)
                message = str(error).strip().splitlines()
                print(f"  FAILED {label}: {type(error).__name__}: {message[0] if message else ''}",
                      flush=True)
                continue
            print(f"  ok     {label}  {1e3 * (time.perf_counter() - t0):.0f} ms", flush=True)
    if device.type == "cuda":
        try:
            torch.cuda.synchronize()
        except Exception as error:  # noqa: BLE001
            failed.append(f"final synchronize: {error}")
    total = len(args.ops) * len(dtypes)
    print(f"gpu_sanitizer_cases: {total - len(failed)} ok, {len(failed)} failed "
          f"in {time.perf_counter() - start:.1f} s" + (f": {', '.join(failed)}" if failed else ""),
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
