"""Where the pip `nvidia` wheels keep their headers and libraries.

A pip-installed CUDA build of torch brings cuBLAS, cuSPARSE, NVRTC, ... as `nvidia` wheels;
torch's CUDA headers include them and its CMake package links NVRTC, while a bare CUDA
toolkit may lack them. Used by setup.py (imported) and CMakeLists.txt (run: prints the
include directories, then the NVRTC library, one line each).
"""

import glob
import importlib.util
import os


def _roots():
    spec = importlib.util.find_spec("nvidia")
    return list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []


def include_dirs():
    """nvidia/cu13/include (CUDA 13 wheels) or nvidia/<library>/include (CUDA 12 wheels)."""
    return [d for root in _roots() for d in sorted(glob.glob(os.path.join(root, "*", "include")))]


def library(name):
    """The path of lib<name>.so[.N] in the wheels, or None."""
    for root in _roots():
        found = sorted(glob.glob(os.path.join(root, "*", "lib", f"lib{name}.so*")))
        found = [f for f in found if ".alt." not in f and "builtins" not in f]
        if found:
            return found[0]
    return None


if __name__ == "__main__":
    print(",".join(include_dirs()))
    print(library("nvrtc") or "")
