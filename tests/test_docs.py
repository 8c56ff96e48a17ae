"""The documentation runs: every ```python block of README.md and every module's doctests.

README blocks are executed as-is, each in a fresh namespace with the working directory set to a
temporary folder. Doctests run with NORMALIZE_WHITESPACE | ELLIPSIS, one test per module of the
``labelsmooth`` package (``labelsmooth.experiment.cli`` and ``labelsmooth.__main__`` are left out:
they are
command-line entry points). A module that cannot be imported because an optional third-party
dependency is missing is skipped; any other import error fails.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
import re
from pathlib import Path

import pytest

import labelsmooth

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# ```python ... ``` fences at the start of a line; other languages (bash, text) are not run.
_PYTHON_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)

# A README block or module that uses one of these needs the optional dependency named.
_OPTIONAL = {
    "labelsmooth.experiment.plotting": "matplotlib",
    "matplotlib": "matplotlib",
    "import transformers": "transformers",
    "labelsmooth.integrations.transformers": "transformers",
    "lightning": "lightning",
}

_SKIP_MODULES = {"labelsmooth.experiment.cli", "labelsmooth.__main__"}
_DOCTEST_FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _readme_blocks() -> list[tuple[int, str]]:
    """(first line number of the code in README.md, code) of every ```python block."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _PYTHON_FENCE.finditer(text)]


def _block_id(index: int, lineno: int, code: str) -> str:
    first = next((line.strip() for line in code.splitlines() if line.strip()), "<empty>")
    return f"{index}-line{lineno}-{first[:50]}"


_BLOCKS = _readme_blocks()


def _skip_without_optional(text: str) -> None:
    for marker, module in _OPTIONAL.items():
        if marker in text:
            pytest.importorskip(module)


def test_readme_has_python_blocks():
    assert len(_BLOCKS) >= 3, "README.md should show runnable ```python examples"


@pytest.mark.parametrize(
    "lineno, code", _BLOCKS, ids=[_block_id(i, n, code) for i, (n, code) in enumerate(_BLOCKS)]
)
def test_readme_python_block(lineno, code, tmp_path, monkeypatch):
    _skip_without_optional(code)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    # padded so that tracebacks show README.md's own line numbers
    exec(compile("\n" * (lineno - 1) + code, str(README), "exec"), namespace)


def _module_names() -> list[str]:
    """labelsmooth and all its submodules, found without importing more than walk_packages must.

    A package that fails to import is still listed (its test then reports the error); its own
    submodules cannot be discovered without importing it.
    """
    names = {"labelsmooth"}
    for info in pkgutil.walk_packages(labelsmooth.__path__, "labelsmooth.", onerror=names.add):
        names.add(info.name)
    return sorted(n for n in names if n not in _SKIP_MODULES)


def _import_or_skip(name: str):
    """Import ``name``; skip if a third-party (optional) dependency is missing, else raise."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        missing = err.name or ""
        if missing and missing.split(".")[0] != "labelsmooth":
            pytest.skip(f"{name} needs the optional dependency {missing!r}")
        raise


@pytest.mark.parametrize("name", _module_names())
def test_doctests(name, tmp_path, monkeypatch):
    module = _import_or_skip(name)
    _skip_without_optional(name)
    monkeypatch.chdir(tmp_path)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=_DOCTEST_FLAGS, verbose=False)
    report = io.StringIO()
    for test in sorted(finder.find(module, name), key=lambda t: t.name):
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    if result.failed:
        pytest.fail(
            f"{result.failed} of {result.attempted} doctest examples failed in {name}:\n"
            f"{report.getvalue()}",
            pytrace=False,
        )
