"""Runs pytest on the CUDA emulation built with sanitizers, the sanitizer's runtime preloaded:

    python tests/cuda_cpu/sanitize.py address,undefined [pytest arguments]
    python tests/cuda_cpu/sanitize.py thread [pytest arguments]

Without pytest arguments it runs the emulated tests (`tests -m cuda_emulated`). A report from
the sanitizer fails the run (halt_on_error). It execs the Python interpreter itself, not a
wrapper script: ThreadSanitizer preloaded into a shell crashes it."""

import os
import subprocess
import sys

SETTINGS = {
    "address,undefined": ("libasan.so", {
        "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=0",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    }),
    # Only the emulation is instrumented. OpenMP's threads (the C++ CPU kernels the tests
    # compare with) synchronise in code TSan does not see: one thread, so that what TSan
    # reports are races between the emulated kernels' threads.
    "thread": ("libtsan.so", {"TSAN_OPTIONS": "halt_on_error=1:report_signal_unsafe=0",
                              "OMP_NUM_THREADS": "1"}),
}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in SETTINGS:
        sys.exit(f"usage: {sys.argv[0]} {{{' | '.join(SETTINGS)}}} [pytest arguments]")
    setting = sys.argv[1]
    library, options = SETTINGS[setting]
    runtime = subprocess.run([os.environ.get("CXX", "c++"), f"-print-file-name={library}"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if not os.path.isabs(runtime):
        sys.exit(f"the compiler has no {library}: install the sanitizer runtime (libasan / libtsan)")
    # libstdc++ too: ASan intercepts C++ throws only if it is loaded when ASan starts.
    cxx_runtime = subprocess.run([os.environ.get("CXX", "c++"), "-print-file-name=libstdc++.so"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    env = dict(os.environ, FASTFLOW_EMULATE_SANITIZE=setting, LD_PRELOAD=f"{runtime} {cxx_runtime}",
               **options)
    args = sys.argv[2:] or ["tests", "-m", "cuda_emulated"]
    # --capture=sys: a sanitizer writes its report to file descriptor 2 and exits; pytest's
    # default capture of that descriptor would swallow the report.
    os.execve(sys.executable, [sys.executable, "-m", "pytest", "--capture=sys", *args], env)


if __name__ == "__main__":
    main()
