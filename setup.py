"""Builds fastflow and its extension fastflow._C.

The C++ CPU kernels are always built. The CUDA kernels are built when a CUDA build of torch
and nvcc are present, with or without a GPU (cross-compilation). Environment:

  FASTFLOW_CUDA=0|1        force the CUDA kernels off, or on (an error if they can't build)
  TORCH_CUDA_ARCH_LIST     architectures, e.g. "9.0" or "8.0;9.0+PTX"; default: the visible
                           GPUs' own, or DEFAULT_CUDA_ARCH_LIST when none is visible
  MAX_JOBS                 parallel compile jobs (ninja)
  CUDA_HOME                the CUDA toolkit (default: found from nvcc or /usr/local/cuda)
"""

import glob
import importlib.util
import os
import shutil

from setuptools import setup

DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"
ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    # Relative paths: setuptools refuses absolute ones.
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _find_cuda_home():
    """The CUDA toolkit: CUDA_HOME or CUDA_PATH if set, else the toolkit of the nvcc on PATH
    or /usr/local/cuda. torch guesses it from the nvcc on PATH alone, which is wrong when
    that nvcc is a wrapper script outside the toolkit."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    candidates = ["/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in candidates:
        if (os.path.exists(os.path.join(home, "bin", "nvcc"))
                and os.path.exists(os.path.join(home, "include", "cuda_runtime_api.h"))):
            return home
    return None


# Before torch.utils.cpp_extension is imported: it reads CUDA_HOME once, on import.
_CUDA_HOME = _find_cuda_home()
if _CUDA_HOME is not None:
    os.environ["CUDA_HOME"] = _CUDA_HOME


def _cuda_wanted():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    switch = os.environ.get("FASTFLOW_CUDA", "").strip().lower()
    if switch in ("0", "off", "false", "no"):
        return False
    missing = []
    if torch.version.cuda is None:
        missing.append("a CUDA build of torch (this one is CPU-only)")
    if CUDA_HOME is None or not os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        missing.append("nvcc (set CUDA_HOME to the CUDA toolkit)")
    if switch in ("1", "on", "true", "yes") and missing:
        raise RuntimeError("FASTFLOW_CUDA=1 but the CUDA kernels can't be built: missing "
                           + " and ".join(missing))
    if missing:
        print("fastflow: building without CUDA kernels: missing " + " and ".join(missing))
    return not missing


def _nvidia_wheels():
    path = os.path.join(ROOT, "csrc", "nvidia_wheels.py")
    spec = importlib.util.spec_from_file_location("nvidia_wheels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _extension():
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = _sources("csrc/registration.cpp") + _sources("csrc/cpu/*.cpp")
    # -fopenmp: at::parallel_for is inline OpenMP in torch's headers (torch's own libgomp
    # serves it at run time); without it the CPU kernels run on one thread.
    # -fno-trapping-math: lets the row loops of the CPU kernels vectorize their float selects.
    # -std=c++20: the C++ sources need it (std::bit_cast). torch 2.14 passes it itself; torch
    # 2.11 passes -std=c++17 unless the "cxx" flags have a -std. nvcc keeps torch's own -std.
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-fno-trapping-math"]
    link_flags = ["-fopenmp"]
    if not _cuda_wanted():
        return CppExtension("fastflow._C", sources, extra_compile_args={"cxx": cxx_flags},
                            extra_link_args=link_flags)

    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCH_LIST
    print("fastflow: building CUDA kernels for TORCH_CUDA_ARCH_LIST="
          + os.environ.get("TORCH_CUDA_ARCH_LIST", "(the visible GPUs)"))
    # -idirafter: the toolkit's own headers win; the wheels only fill what it lacks.
    for include in _nvidia_wheels().include_dirs():
        cxx_flags += ["-idirafter", include]
    return CUDAExtension(
        "fastflow._C",
        sources + _sources("csrc/cuda/*.cpp") + _sources("csrc/cuda/*.cu"),
        define_macros=[("FASTFLOW_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
        extra_link_args=link_flags,
    )


def _build_ext():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(no_python_abi_suffix=False)


setup(ext_modules=[_extension()], cmdclass={"build_ext": _build_ext()})
