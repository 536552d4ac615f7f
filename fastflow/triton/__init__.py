"""Triton kernels, one file per op. Importable without triton installed.

TRITON_INTERPRET=1, set before fastflow is imported, runs them on the CPU (Triton's
interpreter: slow, for tests on machines without a GPU).
"""

import os

try:
    import triton as _triton_package
except ImportError:
    _triton_package = None

VERSION: str | None = getattr(_triton_package, "__version__", None)
# Read once: Triton decides between compiling and interpreting when a kernel is defined.
INTERPRETED: bool = os.environ.get("TRITON_INTERPRET") == "1"
