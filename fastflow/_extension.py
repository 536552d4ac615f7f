"""Finds and loads the compiled extension, and reads what it was built with.

The extension is the shared library `fastflow/_C*.so` that setup.py builds, or the library
named by the environment variable FASTFLOW_LIBRARY (for example the CMake build,
build/libfastflow_C.so). Loading it registers the `torch.ops.fastflow.*` kernels. If there
is none, or it fails to load, fastflow still works on its other backends.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import os
import warnings

import torch


@dataclasses.dataclass(frozen=True)
class Extension:
    path: str | None = None  # the library loaded, None when none was
    cuda: bool = False  # built with CUDA kernels
    cuda_version: str | None = None  # toolkit that compiled them, e.g. "13.0"
    cuda_arch: tuple[str, ...] = ()  # e.g. ("sm_80", "sm_90")
    error: str | None = None  # why no library was loaded

    @property
    def loaded(self) -> bool:
        return self.path is not None


def _find_library() -> str | None:
    override = os.environ.get("FASTFLOW_LIBRARY")
    if override:
        return override
    spec = importlib.util.find_spec("fastflow._C")
    return spec.origin if spec is not None else None


def _parse_build_info(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(";") if "=" in item)


def load() -> Extension:
    path = _find_library()
    if path is None:
        return Extension(error="not built (fastflow/_C is missing: pip install --no-build-isolation -e .)")
    try:
        torch.ops.load_library(path)
        library = ctypes.CDLL(path)
        library.fastflow_build_info.restype = ctypes.c_char_p
        info = _parse_build_info(library.fastflow_build_info().decode())
    except (OSError, RuntimeError, AttributeError) as exc:
        warnings.warn(f"fastflow: the extension {path} failed to load ({exc}); "
                      "using the other backends", RuntimeWarning, stacklevel=3)
        return Extension(error=f"failed to load {path}: {exc}")
    arch = tuple(f"sm_{int(a) // 10}" for a in info.get("cuda_arch", "").split(",") if a.strip())
    return Extension(path=path, cuda=info.get("cuda") == "1",
                     cuda_version=info.get("cuda_version"), cuda_arch=arch)


EXTENSION = load()
