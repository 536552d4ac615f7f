"""fastflow's CUDA kernels, run on the CPU for the tests.

`load()` compiles the real csrc/cuda sources (kernels, launchers and the bindings around
them) as C++ against a small CUDA emulation (include/, runtime.cpp) and loads the result:
`torch.ops.fastflow_emulated.<op>` then takes CPU tensors and runs the op exactly as the
CUDA binding does (same argument checks, layouts, launches), its kernels' threads running as
OS threads. The build lives in build/cuda_emulated/<variant>/ with a hash of every file it
reads (and of the compiler, torch and flags): a run whose hash matches loads the library as
it is; any edit rebuilds what changed, so an edit to a kernel is what the next run checks.
FASTFLOW_EMULATE_CSRC=<dir> builds another copy of csrc/ instead (tests/cuda_cpu/mutants.py
plants bugs in one).

The kernel files are rewritten for a C++ compiler, line for line (#line keeps diagnostics
and sanitizer reports on the original lines); see include/cuda_cpu_device.h for the rules.

FASTFLOW_EMULATE_SANITIZE=address,undefined or =thread builds with AddressSanitizer and
UndefinedBehaviorSanitizer, or ThreadSanitizer; the process must have the sanitizer's
runtime preloaded, which `python tests/cuda_cpu/sanitize.py` arranges.
"""

import contextlib
import ctypes
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CSRC = ROOT / "csrc"
BUILD = ROOT / "build" / "cuda_emulated"
LIBRARY = "fastflow_emulated"

# Sanitizer settings: compiler flags, and the runtime the process must have preloaded.
SANITIZERS = {
    "": {"flags": ["-O2"], "runtime": None},
    "address,undefined": {
        "flags": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                  "-fno-sanitize-recover=undefined"],
        "runtime": "libasan.so",
    },
    "thread": {"flags": ["-O1", "-g", "-fsanitize=thread"], "runtime": "libtsan.so"},
}

# cudaDeviceAttr values the tests change.
ATTR_MULTIPROCESSOR_COUNT = 16
ATTR_MAX_SHARED_PER_BLOCK_OPTIN = 97
ATTR_MAX_BLOCKS_PER_MULTIPROCESSOR = 106

# Not kernels: the toolkit version nvcc compiled with.
NOT_EMULATED = {"build_info.cu"}


class EmulationUnavailable(RuntimeError):
    pass


def sanitize_setting():
    value = os.environ.get("FASTFLOW_EMULATE_SANITIZE", "").replace(" ", "").lower()
    aliases = {"": "", "address": "address,undefined", "address,undefined": "address,undefined",
               "undefined,address": "address,undefined", "thread": "thread"}
    if value not in aliases:
        raise ValueError(f"FASTFLOW_EMULATE_SANITIZE={value!r}: expected 'address,undefined' or "
                         "'thread' (or unset)")
    return aliases[value]


# ---------------------------------------------------------------------------------------------
# The rewrite of a .cu / .cuh file into C++.

_LAUNCH = re.compile(r"<<<(.*?)>>>", re.S)
_DYNAMIC_SHARED = re.compile(
    r"extern\s+__shared__\s+(?P<type>[^;]*?)\s*\b(?P<name>\w+)\s*\[\s*\]\s*;")
_STATIC_SHARED = re.compile(
    r"__shared__\s+(?P<type>[^;]*?)\s*\b(?P<name>\w+)\s*(?P<dims>(?:\[[^\]]*\]\s*)*);")
_ALIGN = re.compile(r"__align__\s*\(\s*\d+\s*\)\s*")


def _balanced(text, open_index):
    """Index just past the parenthesis that closes the one at open_index."""
    depth = 0
    for i in range(open_index, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError("unbalanced parentheses")


def _instrument_kernels(text):
    """Makes each __global__ function's body start with enter_kernel(name, bounds)."""
    out, pos = [], 0
    for match in re.finditer(r"\b__global__\b", text):
        if match.start() < pos:
            continue
        # The signature runs to the first '{' (a definition) or ';' (a declaration) at depth 0.
        i, depth = match.end(), 0
        while i < len(text) and not (depth == 0 and text[i] in "{;"):
            depth += text[i] == "("
            depth -= text[i] == ")"
            i += 1
        if i == len(text) or text[i] == ";":
            continue
        signature = text[match.end():i]
        bounds = "1024"
        lb = re.search(r"__launch_bounds__\s*\(", signature)
        if lb:
            start = match.end() + lb.end() - 1
            args = text[start + 1:_balanced(text, start) - 1]
            bounds = args.split(",")[0].strip()
        out.append(text[pos:i + 1])
        out.append(f" ::cuda_emu::enter_kernel(__PRETTY_FUNCTION__, ({bounds}));")
        pos = i + 1
    out.append(text[pos:])
    return "".join(out)


def rewrite(text, origin, device_header):
    """The C++ form of a CUDA source file; every line stays on its line."""
    def dynamic(m):
        kind = _ALIGN.sub("", m["type"]).strip()
        return f"{kind}* {m['name']} = ::cuda_emu::dynamic_shared<{kind}>();"

    def static(m):
        kind = _ALIGN.sub("", m["type"]).strip()
        dims = re.sub(r"\s+", "", m["dims"])
        return (f"static char {m['name']}__key; "
                f"auto& {m['name']} = ::cuda_emu::block_shared<{kind}{dims}>(&{m['name']}__key);")

    text = _DYNAMIC_SHARED.sub(dynamic, text)
    text = _STATIC_SHARED.sub(static, text)
    text = _LAUNCH.sub(lambda m: f" | ::cuda_emu::config({m[1]})", text)
    text = _instrument_kernels(text)
    head = "#include <cuda_cpu_device.h>\n" if device_header else ""
    return f'{head}#line 1 "{origin}"\n{text}'


# ---------------------------------------------------------------------------------------------
# The build.

def _csrc():
    return Path(os.environ.get("FASTFLOW_EMULATE_CSRC", CSRC)).resolve()


def _inputs(csrc):
    files = sorted(p for p in csrc.rglob("*") if p.is_file())
    files += sorted(p for p in HERE.rglob("*") if p.is_file() and p.suffix in {".h", ".cpp", ".cu", ".py"})
    return files


def _key(csrc, flags):
    digest = hashlib.sha256()
    compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout
    digest.update(f"{flags}|{torch.__version__}|{compiler}".encode())
    for path in _inputs(csrc):
        digest.update(str(path).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _write_if_changed(path, text):
    """Keeps the file's time stamp when its text is the same, so ninja rebuilds only what changed."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _mirror(csrc, src_root):
    """csrc copied under src_root, its CUDA files rewritten; returns the sources to build."""
    sources = []
    for path in sorted(csrc.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(csrc)
        target = src_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text()
        origin = f"csrc/{relative.as_posix()}"
        if path.suffix == ".cu":
            if path.name in NOT_EMULATED:
                continue
            target = target.with_name(path.name + ".cpp")
            _write_if_changed(target, rewrite(text, origin, device_header=True))
            sources.append(target)
        elif path.suffix == ".cuh":
            _write_if_changed(target, rewrite(text, origin, device_header=False))
        else:
            _write_if_changed(target, text)
            if relative.parent.name == "cuda" and path.name.endswith("_binding.cpp"):
                sources.append(target)
    return sources


def _preloaded(runtime):
    with open("/proc/self/maps") as maps:
        return runtime.split(".")[0] in maps.read()


class Emulator:
    """The loaded emulation: its ops, and the controls of its runtime."""

    def __init__(self, path, sanitize):
        self.path = path
        self.sanitize = sanitize
        self.ops = getattr(torch.ops, LIBRARY)
        lib = ctypes.CDLL(str(path))
        lib.cuda_emu_set_device_attribute.restype = ctypes.c_int
        lib.cuda_emu_set_device_attribute.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.cuda_emu_set_max_blocks.restype = ctypes.c_uint
        lib.cuda_emu_set_max_blocks.argtypes = [ctypes.c_uint]
        lib.cuda_emu_take_launch_log.restype = ctypes.c_char_p
        lib.probe_error_string.restype = ctypes.c_char_p
        self._lib = lib
        self.probes = lib  # the probe_* functions of probes.cu

    def error_string(self, error):
        return self.probes.probe_error_string(error).decode()

    def take_launches(self):
        """The launches since the last call: kernel, grid, blocks_run, block, dynamic_shared,
        static_shared, failed."""
        text = self._lib.cuda_emu_take_launch_log().decode()
        return [json.loads(line) for line in text.splitlines() if line]

    @contextlib.contextmanager
    def device_attribute(self, attr, value):
        previous = self._lib.cuda_emu_set_device_attribute(attr, value)
        try:
            yield
        finally:
            self._lib.cuda_emu_set_device_attribute(attr, previous)

    @contextlib.contextmanager
    def max_blocks(self, blocks):
        """Launches run at most `blocks` blocks along x, as if the launcher had asked for that
        many: for grid-stride kernels only."""
        previous = self._lib.cuda_emu_set_max_blocks(blocks)
        try:
            yield
        finally:
            self._lib.cuda_emu_set_max_blocks(previous)


_LOADED = {}


def load(sanitize=None):
    """Builds (or finds in the cache) and loads the emulation; one per process and setting."""
    sanitize = sanitize_setting() if sanitize is None else sanitize
    if sanitize in _LOADED:
        return _LOADED[sanitize]
    runtime = SANITIZERS[sanitize]["runtime"]
    if runtime is not None and not _preloaded(runtime):
        raise EmulationUnavailable(
            f"FASTFLOW_EMULATE_SANITIZE={sanitize} needs the sanitizer runtime loaded first: run "
            "the tests through `python tests/cuda_cpu/sanitize.py`")
    if _LOADED:
        raise EmulationUnavailable("one emulation per process: its ops share one library name")
    from torch.utils import cpp_extension

    csrc = _csrc()
    variant = (sanitize.replace(",", "-") or "plain") + ("" if csrc == CSRC else "-other-csrc")
    name = f"fastflow_emulated_{variant.replace('-', '_')}"
    directory = BUILD / variant
    built = directory / f"{name}.so"
    flags = ["-std=c++20", "-ffp-contract=off", "-pthread",
             f"-DFASTFLOW_CUDA_LIBRARY={LIBRARY}", "-DFASTFLOW_CUDA_KEY=CPU",
             *SANITIZERS[sanitize]["flags"]]
    key = _key(csrc, flags)
    stamp = directory / "inputs.sha256"
    if built.exists() and stamp.exists() and stamp.read_text() == key:
        torch.ops.load_library(str(built))
    else:
        directory.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        src_root = directory / "src"
        sources = _mirror(csrc, src_root / "csrc")
        probes = src_root / "probes.cu.cpp"
        _write_if_changed(probes, rewrite((HERE / "probes.cu").read_text(), "tests/cuda_cpu/probes.cu",
                                          device_header=True))
        sources.append(probes)
        ldflags = ["-pthread", *[f for f in flags if f.startswith("-fsanitize")]]
        os.environ.setdefault("MAX_JOBS", "2")
        cpp_extension.load(
            name=name,
            sources=[str(s) for s in sources] + [str(HERE / "runtime.cpp"), str(HERE / "library.cpp")],
            extra_include_paths=[str(HERE / "include"), str(src_root / "csrc")],
            extra_cflags=flags,
            extra_ldflags=ldflags,
            build_directory=str(directory),
            is_python_module=False,
            verbose=False,
        )
        stamp.write_text(key)
    emulator = Emulator(built, sanitize)
    _LOADED[sanitize] = emulator
    return emulator
