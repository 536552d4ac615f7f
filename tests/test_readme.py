"""README.md as written: every ```python block runs, each on its own in a fresh interpreter on
the CPU, and every dotted `fastflow.…` name in its prose resolves."""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
# The README has (at least) these many ```python blocks and dotted fastflow names in its
# prose; fewer means the parsing broke, and the tests below would pass on nothing.
MIN_PYTHON_BLOCKS = 3
MIN_DOTTED_NAMES = 5

FENCE = re.compile(r"^```[ \t]*(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`]+)`")
# fastflow.a.b, not part of a longer name (torch.ops.fastflow_emulated) or of a file path
# (fastflow/ops/, src/fastflow.py).
DOTTED_NAME = re.compile(r"(?<![\w./-])fastflow(?:\.[A-Za-z_]\w*)+(?![\w/])")


def python_blocks(text):
    """(line of the block's first code line in README.md, code) of each ```python block, in
    order."""
    return [(text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in FENCE.finditer(text)
            if m.group(1) in ("python", "py", "python3")]


def dotted_names(text):
    """The distinct `fastflow.…` names inside inline code spans of the prose (fenced blocks
    left out), in order of first mention."""
    prose = FENCE.sub("", text)
    names = []
    for span in INLINE_CODE.findall(prose):
        for name in DOTTED_NAME.findall(span):
            if name not in names:
                names.append(name)
    return names


README_TEXT = README.read_text(encoding="utf-8")
BLOCKS = python_blocks(README_TEXT)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= MIN_PYTHON_BLOCKS, (
        f"found {len(BLOCKS)} ```python blocks in {README}, expected at least {MIN_PYTHON_BLOCKS}")


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(index, tmp_path):
    """Runs the block as a script in a fresh interpreter, as a reader on a CPU machine
    would: no GPU visible, no Triton interpreter, the default backend. The script is padded
    so that its line numbers (and so its traceback) are README.md's."""
    line, code = BLOCKS[index]
    first_line = next((s for s in code.splitlines() if s.strip()), "")
    script = tmp_path / f"readme_block{index}.py"
    script.write_text("\n" * (line - 1) + code, encoding="utf-8")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    for key in ("TRITON_INTERPRET", "FASTFLOW_BACKEND"):
        env.pop(key, None)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"README.md python block {index} (line {line}: {first_line!r}) failed with "
                    f"exit status {result.returncode}:\n{result.stderr[-4000:]}", pytrace=False)


def resolve(name):
    """The object a reader gets for `name` after `import <its longest module prefix>`: the
    attributes are looked up from the top-level package down, as Python evaluates the dotted
    name, so a package attribute that shadows a submodule (fastflow.ops.masked_linear, the
    function) is what is found."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        module = ".".join(parts[:end])
        try:
            importlib.import_module(module)
            break
        except ModuleNotFoundError as error:
            if error.name != module:  # a real import error inside an existing module
                raise
    obj = importlib.import_module(parts[0])
    for i, attr in enumerate(parts[1:], start=1):
        if not hasattr(obj, attr):
            raise AttributeError(f"{'.'.join(parts[:i])} ({type(obj).__name__}) has no "
                                 f"attribute {attr!r}")
        obj = getattr(obj, attr)
    return obj


def test_readme_dotted_names_resolve():
    names = dotted_names(README_TEXT)
    assert len(names) >= MIN_DOTTED_NAMES, f"found only {names} in {README}"
    unresolved = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as error:
            unresolved.append(f"`{name}`: {type(error).__name__}: {error}")
    assert not unresolved, "README.md names what does not exist:\n" + "\n".join(unresolved)


def test_resolve_sees_shadowed_submodules():
    """The check above would have caught the README's former
    `fastflow.ops.masked_linear.degrees_from_mask`: the submodule imports, but the attribute
    fastflow.ops.masked_linear is the op function."""
    with pytest.raises(AttributeError, match="degrees_from_mask"):
        resolve("fastflow.ops.masked_linear.degrees_from_mask")
    from fastflow.ops.masked_linear import degrees_from_mask
    assert resolve("fastflow.ops.degrees_from_mask") is degrees_from_mask
    text = ("`fastflow/ops/` `torch.ops.fastflow_emulated.<op>` `python -m fastflow.bench`\n"
            "```python\nfastflow.nowhere\n```\n")
    assert dotted_names(text) == ["fastflow.bench"]


def test_ops_table_is_the_registry():
    """The README's ops table is fastflow.ops.registry's, row for row (regenerate it with
    `python -c "from fastflow.ops import registry; print(registry.ops_table())"`)."""
    from fastflow.ops import registry

    table = registry.ops_table()
    assert len(table.splitlines()) == 2 + len(registry.ops())
    assert table in README.read_text(), "README's ops table differs from:\n" + table
