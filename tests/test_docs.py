"""The documentation runs: every ```python block of README.md and docs/*.md, and every module's
doctests.

Blocks are executed as-is, each in a fresh namespace with the working directory set to a
temporary folder. A block directly under a ``<!-- not run: REASON -->`` line (a fragment, or one
that needs a process group or trains for minutes) is not executed; the reason must be given.
Doctests run with NORMALIZE_WHITESPACE | ELLIPSIS, one test per module of the ``labelsmooth``
package (``labelsmooth.experiment.cli`` and every ``__main__`` module are left out: they are
command-line entry points). A module that cannot be imported because an optional third-party
dependency is missing is skipped; any other import error fails.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import io
import pkgutil
import re
from pathlib import Path

import pytest

import labelsmooth

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

# ```python ... ``` fences at the start of a line; other languages (bash, text) are not run.
_PYTHON_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_NOT_RUN = re.compile(r"^<!-- not run: (?P<reason>[^\n]*\S[^\n]*) -->[ \t]*\n\Z")

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


def _blocks(page: Path) -> list[tuple[int, str, bool]]:
    """(first line number of the code, code, runs) of every ```python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    found = []
    for m in _PYTHON_FENCE.finditer(text):
        line_start = text.rfind("\n", 0, max(0, m.start() - 1)) + 1
        above = text[line_start : m.start()]
        runs = not _NOT_RUN.match(above)
        found.append((text.count("\n", 0, m.start(1)) + 1, m.group(1), runs))
    return found


def _block_id(page: Path, lineno: int, code: str) -> str:
    first = next((line.strip() for line in code.splitlines() if line.strip()), "<empty>")
    return f"{page.relative_to(ROOT)}:{lineno}-{first[:40]}"


_BLOCKS = [(page, n, code) for page in PAGES for n, code, runs in _blocks(page) if runs]
_NOT_RUN_BLOCKS = [(page, n, code) for page in PAGES for n, code, runs in _blocks(page) if not runs]


def _skip_without_optional(text: str) -> None:
    for marker, module in _OPTIONAL.items():
        if marker in text:
            pytest.importorskip(module)


def test_readme_has_python_blocks():
    readme = [b for b in _BLOCKS if b[0] == README]
    assert len(readme) >= 3, "README.md should show runnable ```python examples"


def test_every_not_run_marker_sits_above_a_python_block():
    """A marker that lost its block (or a misspelt one) would silently stop nothing."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in re.finditer(r"^<!-- not run.*$", text, re.MULTILINE):
            after = text[m.end() + 1 :]
            lineno = text.count("\n", 0, m.start()) + 1
            assert _NOT_RUN.match(m.group(0) + "\n"), f"{page.name}:{lineno}: no reason given"
            assert after.startswith("```python"), f"{page.name}:{lineno}: no ```python block below"


@pytest.mark.parametrize(
    "page, lineno, code",
    _NOT_RUN_BLOCKS,
    ids=[_block_id(p, n, code) for p, n, code in _NOT_RUN_BLOCKS],
)
def test_blocks_not_run_parse_and_import(page, lineno, code, monkeypatch, tmp_path):
    """A block that is not run is still valid Python, and its imports exist."""
    tree = ast.parse("\n" * (lineno - 1) + code, str(page))
    imports = ast.Module(
        body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[]
    )
    _skip_without_optional(code)
    monkeypatch.chdir(tmp_path)
    exec(compile(imports, str(page), "exec"), {"__name__": "__docs__"})


def test_readme_fits_on_a_page():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def test_readme_lists_every_docs_page():
    text = README.read_text(encoding="utf-8")
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in text, f"README.md does not link docs/{page.name}"


_DOTTED = re.compile(r"\blabelsmooth(?:\.[A-Za-z_]\w*)+")


def _resolves(name: str) -> bool:
    """``name`` is an importable module, or an attribute reached from the longest one."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as err:
            if err.name is not None and not ".".join(parts[:i]).startswith(err.name):
                raise  # a module that exists but imports something missing
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_every_dotted_name_in_the_docs_exists():
    """``labelsmooth.x.y`` in README.md and docs/*.md names a module or object that exists
    (old names are allowed only in a paragraph that says they moved)."""
    missing = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for paragraph in re.split(r"\n\s*\n", text):
            if "moved" in paragraph:
                continue
            for name in sorted(set(_DOTTED.findall(paragraph))):
                if "integrations" in name and importlib.util.find_spec("transformers") is None:
                    continue  # an optional dependency's adapter
                if not _resolves(name):
                    missing.append(f"{page.relative_to(ROOT)}: {name}")
    assert not missing, "names in the docs that do not exist:\n" + "\n".join(missing)


def test_every_relative_link_in_the_docs_exists():
    """``[text](path)`` and ``[text](path#anchor)`` point to files (and headings) that exist."""
    broken = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", file.read_text(encoding="utf-8"), re.M)
                slugs = {
                    re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings
                }
                if anchor not in slugs:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    "page, lineno, code", _BLOCKS, ids=[_block_id(p, n, code) for p, n, code in _BLOCKS]
)
def test_docs_python_block(page, lineno, code, tmp_path, monkeypatch):
    _skip_without_optional(code)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    # padded so that tracebacks show the page's own line numbers
    exec(compile("\n" * (lineno - 1) + code, str(page), "exec"), namespace)


def _module_names() -> list[str]:
    """labelsmooth and all its submodules, found without importing more than walk_packages must.

    A package that fails to import is still listed (its test then reports the error); its own
    submodules cannot be discovered without importing it.
    """
    names = {"labelsmooth"}
    for info in pkgutil.walk_packages(labelsmooth.__path__, "labelsmooth.", onerror=names.add):
        names.add(info.name)
    return sorted(n for n in names if n not in _SKIP_MODULES and not n.endswith(".__main__"))


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
