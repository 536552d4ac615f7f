"""A short benchmark table for squeeze_2x2: every provider against the seed reference, with
the device-copy bandwidth measured in the same run as the ceiling.

    python benchmarks/table.py          # CPU here, or the GPU when there is one

Each provider's output is checked against the reference before it is timed; one that
disagrees is shown as FAILED and not timed. Times are medians.
"""

import functools
import statistics
import time

import torch

import fastflow
from fastflow import reference
from fastflow.backend import unavailable_reason

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def median_ms(fn, *args):
    """Median time of fn(*args) in ms: triton.testing.do_bench on a GPU, perf_counter on the CPU."""
    if DEVICE == "cuda":
        import triton.testing
        return triton.testing.do_bench(lambda: fn(*args), warmup=25, rep=200, return_mode="median")
    fn(*args)
    times, deadline = [], time.perf_counter() + 0.5
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 200):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def providers():
    names = ("cuda", "triton") if DEVICE == "cuda" else ("cpu",)
    found = {"reference": reference.squeeze_2x2,
             "reference-compile": torch.compile(reference.squeeze_2x2)}
    for name in names:
        if unavailable_reason(name) is None:
            found[name] = functools.partial(_on, name)
    return found


def _on(name, x, reverse, alt_order):
    with fastflow.backend(name):
        return fastflow.squeeze_2x2(x, reverse=reverse, alt_order=alt_order)


def main():
    shapes = [(128, 1, 14, 14), (64, 3, 32, 32)]
    shapes.append((64, 16, 256, 256) if DEVICE == "cuda" else (16, 16, 128, 128))
    modes = {"fwd": (False, False), "fwd-alt": (False, True), "rev": (True, False), "rev-alt": (True, True)}
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU"
    print(f"squeeze_2x2 on {name}; torch {torch.__version__}; median times")
    print(f"{'shape':<20}{'mode':<9}{'provider':<19}{'ms':>10}{'GB/s':>9}{'% copy':>8}{'vs ref':>8}")
    for shape in shapes:
        b, c, h, w = shape
        for mode, (reverse, alt_order) in modes.items():
            x = torch.randn((b, 4 * c, h // 2, w // 2) if reverse else shape, device=DEVICE)
            nbytes = 2 * x.numel() * x.element_size()
            copy_gbs = nbytes / median_ms(torch.clone, x) / 1e6
            expected = reference.squeeze_2x2(x.cpu(), reverse=reverse, alt_order=alt_order)
            torch._dynamo.reset()  # a fresh compile per case, not the recompile limit
            ref_ms = None
            for provider, fn in providers().items():
                label = f"{str(shape):<20}{mode:<9}{provider:<19}"
                if not torch.equal(fn(x, reverse, alt_order).cpu(), expected):
                    print(label + f"{'FAILED':>10}")
                    continue
                ms = median_ms(fn, x, reverse, alt_order)
                ref_ms = ms if provider == "reference" else ref_ms
                gbs = nbytes / ms / 1e6
                print(label + f"{ms:>10.4f}{gbs:>9.1f}{100 * gbs / copy_gbs:>7.0f}%{ref_ms / ms:>7.2f}x")


if __name__ == "__main__":
    main()
