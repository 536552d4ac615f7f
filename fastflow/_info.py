"""fastflow.info(): what was built and what can run here."""

from __future__ import annotations

import dataclasses

import torch

from . import autotune
from . import triton as _triton
from ._extension import EXTENSION, Extension
from .backend import BACKENDS, get_backend, resolve, unavailable_reason


@dataclasses.dataclass(frozen=True)
class Info:
    torch_version: str
    torch_cuda: str | None  # CUDA version torch was built with
    extension: Extension
    triton_version: str | None
    triton_interpreted: bool
    gpu: str | None  # name of the current CUDA device
    backend: str  # the current setting
    backends: dict[str, str | None]  # backend -> why unavailable (None: available)
    auto: dict[str, dict[str, str]]  # op -> device type -> what 'auto' picks now
    autotune: dict[str, str]  # measured decisions so far: shape class -> choice (times)

    def __str__(self) -> str:
        ext = self.extension
        if not ext.loaded:
            ext_line = f"not loaded: {ext.error}"
        elif ext.cuda:
            arch = ", ".join(ext.cuda_arch) or "unknown archs"
            ext_line = f"CPU + CUDA {ext.cuda_version} kernels ({arch}), {ext.path}"
        else:
            ext_line = f"CPU kernels only (built without CUDA), {ext.path}"
        triton_line = "not installed" if self.triton_version is None else self.triton_version + (
            " (interpreter: TRITON_INTERPRET=1)" if self.triton_interpreted else "")
        lines = [
            f"torch      {self.torch_version}" + (f" (CUDA {self.torch_cuda})" if self.torch_cuda else " (CPU)"),
            f"extension  {ext_line}",
            f"triton     {triton_line}",
            f"GPU        {self.gpu or 'none visible'}",
            f"backend    {self.backend}",
        ]
        for name, reason in self.backends.items():
            lines.append(f"  {name:<7}  {'available' if reason is None else 'unavailable: ' + reason}")
        lines.append("auto picks")
        for op, per_device in self.auto.items():
            picks = ", ".join(f"{dev} -> {pick}" for dev, pick in per_device.items())
            lines.append(f"  {op}: {picks}")
        lines.append("measured" + ("" if autotune.enabled() else f" (off: {autotune.ENV_VAR}=0)")
                     + ("" if self.autotune else ": none yet"))
        for shape_class, decision in self.autotune.items():
            lines.append(f"  {shape_class}: {decision}")
        return "\n".join(lines)


def info() -> Info:
    """What was built and what is available: the extension (and its CUDA arch list), Triton,
    the GPU, each backend, and what 'auto' picks for each op. `print(fastflow.info())`."""
    from .ops import registry

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None

    def pick(op, dev):
        name = resolve(op.name, op.auto, torch.device(dev), name="auto")
        if name == "torch":
            return name
        if op.measured_sizes is not None:
            return f"{name} (where measured faster than torch, per shape class)"
        dtypes = op.auto_dtypes_text(dev)
        if dtypes is not None:
            return f"{name} for {dtypes}, else torch"
        return name

    auto = {op.name: {dev: pick(op, dev) for dev in ("cpu", "cuda")} for op in registry.ops()}
    return Info(
        torch_version=torch.__version__,
        torch_cuda=torch.version.cuda,
        extension=EXTENSION,
        triton_version=_triton.VERSION,
        triton_interpreted=_triton.INTERPRETED,
        gpu=gpu,
        backend=get_backend(),
        backends={name: unavailable_reason(name) for name in BACKENDS if name != "auto"},
        auto=auto,
        autotune={autotune.describe(key): str(d) for key, d in autotune.decisions().items()},
    )

