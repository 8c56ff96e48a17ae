"""The import rules of the package, read from its syntax trees (stdlib ``ast``, nothing runs).

1. **No import circles.** Every module under ``src/labelsmooth`` is parsed; every ``import`` and
   ``from ... import`` at any depth (module level, inside functions and classes, inside
   ``try``) becomes an edge, relative imports resolved. Two graphs are checked, both must be
   free of circles: the module-level imports (what ``import x`` executes) and all imports (a
   circle through an import inside a function is the usual way a circle hides). Nothing is
   whitelisted. Not counted as edges: imports under ``if TYPE_CHECKING:`` (never executed) and
   the implicit import of a parent package (``import a.b.c`` runs ``a/__init__`` and
   ``a/b/__init__`` first; counting that would put every module in a circle with its
   package's ``__init__``).
2. **No private names across packages.** A private name (``_x``, not a dunder) belongs to a
   package: a private module ``P._m`` to P; a private attribute of module ``P.m`` (or of the
   package ``P`` itself) to P. It may be used by modules of P and of P's subpackages (the
   directory and below), nowhere else. Checked: ``from x import _p``, ``import x._p``, and
   ``alias._p`` where ``alias`` names an imported module. The experiment application
   (``labelsmooth.experiment``) is a layer of its own: it may use no private name of the
   library at all (it is built on the public API). Scripts in ``benchmarks/`` and
   ``examples/`` are outside every package.
3. **The library never imports the application**: no module of ``labelsmooth`` outside
   ``labelsmooth.experiment`` imports from it, except ``labelsmooth/__main__.py``, which is
   the application's entry point (``python -m labelsmooth``), never imported by the library.

Each rule reports every offender in one message (``path:line: what``). ``test_checker_*``
plant violations in a fake package under ``tmp_path`` and show that each is reported.

Also here: the public surface of ``import labelsmooth`` (``dir``, lazy submodules, nothing of
the application or of an optional dependency loaded), each checked in a fresh interpreter.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
SCRIPT_DIRS = (ROOT / "benchmarks", ROOT / "examples")


# --------------------------------------------------------------------------------------------
# the checker
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Use:
    """One import (or private attribute use) found in a file."""

    importer: str  # dotted module name ("" for a script outside the package)
    path: Path
    line: int
    target: str  # the module whose execution the import needs
    private: str | None  # the private name used, as "module.name", or None
    owner: str | None  # the package the private name belongs to
    module_level: bool  # False inside a function (or class body under a def)
    type_only: bool  # under ``if TYPE_CHECKING:``


@dataclasses.dataclass
class Tree:
    """The modules of one top-level package: dotted name -> (file, is a package)."""

    top: str
    modules: dict[str, tuple[Path, bool]]

    @classmethod
    def read(cls, src: Path, top: str) -> Tree:
        modules: dict[str, tuple[Path, bool]] = {}
        for path in sorted((src / top).rglob("*.py")):
            parts = list(path.relative_to(src).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[".".join(parts)] = (path, is_package)
        return cls(top, modules)

    def package_of(self, module: str) -> str:
        """The package (directory) a module lives in; a package's ``__init__`` is its own."""
        if module in self.modules and self.modules[module][1]:
            return module
        return module.rpartition(".")[0]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _inside(package: str, owner: str) -> bool:
    return package == owner or package.startswith(owner + ".")


def _type_checking_test(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "TYPE_CHECKING") or (
        isinstance(node, ast.Attribute) and node.attr == "TYPE_CHECKING"
    )


def _walk(tree: ast.AST) -> Iterable[tuple[ast.AST, bool, bool]]:
    """Every node with (module level?, under ``if TYPE_CHECKING:``?)."""
    stack: list[tuple[ast.AST, bool, bool]] = [(tree, True, False)]
    while stack:
        node, top, typing_only = stack.pop()
        yield node, top, typing_only
        in_def = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            child_typing = typing_only or (
                isinstance(node, ast.If) and _type_checking_test(node.test) and child in node.body
            )
            stack.append((child, top and not in_def, child_typing))


def private_owner(dotted: str, tree: Tree) -> str | None:
    """The package that owns the first private part of ``dotted`` (None if all public).

    ``P._m`` (a module) and ``P._m.name`` belong to P; ``P.m._x`` (an attribute of the module
    ``P.m``) belongs to the package of ``P.m``, i.e. P (or ``P.m`` itself if it is a package).
    """
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if _is_private(part):
            prefix = ".".join(parts[: i + 1])
            if prefix in tree.modules:
                return ".".join(parts[:i])
            return tree.package_of(".".join(parts[:i]))
    return None


def uses_in_file(path: Path, importer: str, tree: Tree) -> list[Use]:
    """The imports of one file that reach ``tree``'s package, and its private names."""
    syntax = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = tree.package_of(importer) if importer else ""
    out: list[Use] = []
    aliases: dict[str, str] = {}  # local name -> imported module

    def known(module: str) -> str | None:
        """``module`` if it is a module of the tree (None: another package, or a missing one)."""
        return module if module in tree.modules else None

    def add(node: ast.AST, top: bool, typing_only: bool, target: str, dotted: str) -> None:
        owner = private_owner(dotted, tree)
        private = dotted if owner is not None else None
        line = getattr(node, "lineno", 0)
        out.append(Use(importer, path, line, target, private, owner, top, typing_only))

    for node, top, typing_only in _walk(syntax):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = known(alias.name)
                if target is not None:
                    add(node, top, typing_only, target, alias.name)
                    if alias.asname:
                        aliases[alias.asname] = target
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:  # relative: from the importer's package, one level up per extra dot
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            if known(source) is None:
                continue
            for alias in node.names:
                dotted = f"{source}.{alias.name}"
                if dotted in tree.modules:  # from P import m: the module m
                    add(node, top, typing_only, dotted, dotted)
                    aliases[alias.asname or alias.name] = dotted
                else:  # from m import name: runs m
                    add(node, top, typing_only, str(known(source)), dotted)
    for node, top, typing_only in _walk(syntax):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and _is_private(node.attr)
        ):
            module = aliases[node.value.id]
            add(node, top, typing_only, module, f"{module}.{node.attr}")
    return out


def read_uses(src: Path, top: str, script_dirs: Iterable[Path] = ()) -> tuple[Tree, list[Use]]:
    """All uses in the package ``src/top`` and in the scripts of ``script_dirs``."""
    tree = Tree.read(src, top)
    uses: list[Use] = []
    for module, (path, _) in tree.modules.items():
        uses += uses_in_file(path, module, tree)
    for folder in script_dirs:
        for path in sorted(folder.rglob("*.py")):
            uses += uses_in_file(path, "", tree)
    return tree, uses


def _where(use: Use, base: Path) -> str:
    try:
        return f"{use.path.relative_to(base)}:{use.line}"
    except ValueError:
        return f"{use.path}:{use.line}"


def find_circles(tree: Tree, uses: list[Use], module_level_only: bool) -> list[list[str]]:
    """Strongly connected components with more than one module (or a self-import), sorted."""
    graph: dict[str, set[str]] = {m: set() for m in tree.modules}
    for use in uses:
        if use.importer and not use.type_only and (use.module_level or not module_level_only):
            graph[use.importer].add(use.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative (no recursion limit)
        nonlocal counter
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(components)


def describe_circles(
    components: list[list[str]], uses: list[Use], module_level_only: bool, base: Path
) -> list[str]:
    """One paragraph per circle: its modules and every import edge inside it, with lines."""
    lines = []
    for component in components:
        members = set(component)
        lines.append(f"circle of {len(component)} modules: {' <-> '.join(component)}")
        seen = set()
        for use in uses:
            if (
                use.importer in members
                and use.target in members
                and not use.type_only
                and (use.module_level or not module_level_only)
            ):
                key = (use.path, use.line, use.target)
                if key not in seen:
                    seen.add(key)
                    level = "module level" if use.module_level else "inside a function"
                    lines.append(
                        f"    {_where(use, base)}: {use.importer} imports {use.target} ({level})"
                    )
    return lines


def private_violations(tree: Tree, uses: list[Use], app: str, base: Path) -> list[str]:
    """Every use of a private name outside the package (tree) that owns it."""
    out = []
    for use in uses:
        if use.private is None or use.owner is None:
            continue
        package = tree.package_of(use.importer) if use.importer else ""
        in_app = _inside(package, app) if package else False
        allowed = bool(package) and _inside(package, use.owner)
        if in_app and not _inside(use.owner, app):
            allowed = False  # the application uses the library's public API only
        if not allowed:
            who = use.importer or "a script"
            out.append(
                f"{_where(use, base)}: {who} uses {use.private}, private to package {use.owner}"
            )
    return sorted(set(out))


def app_violations(tree: Tree, uses: list[Use], app: str, base: Path) -> list[str]:
    """Every import of the application by a library module (``__main__`` excepted)."""
    out = []
    for use in uses:
        if (
            use.importer
            and not _inside(use.importer, app)
            and use.importer != f"{tree.top}.__main__"
            and _inside(use.target, app)
        ):
            out.append(f"{_where(use, base)}: library module {use.importer} imports {use.target}")
    return sorted(set(out))


# --------------------------------------------------------------------------------------------
# the rules on the real package
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package() -> tuple[Tree, list[Use]]:
    return read_uses(SRC, "labelsmooth", SCRIPT_DIRS)


@pytest.mark.parametrize("module_level_only", [True, False], ids=["module-level", "all"])
def test_no_import_circles(package, module_level_only: bool) -> None:
    tree, uses = package
    circles = find_circles(tree, uses, module_level_only)
    report = describe_circles(circles, uses, module_level_only, ROOT)
    assert not circles, f"{len(circles)} import circle(s):\n" + "\n".join(report)


def test_no_private_names_across_packages(package) -> None:
    tree, uses = package
    found = private_violations(tree, uses, "labelsmooth.experiment", ROOT)
    assert not found, f"{len(found)} private name(s) used across packages:\n" + "\n".join(found)


def test_library_never_imports_the_application(package) -> None:
    tree, uses = package
    found = app_violations(tree, uses, "labelsmooth.experiment", ROOT)
    assert not found, "the library imports the application:\n" + "\n".join(found)


# --------------------------------------------------------------------------------------------
# the test of the test: planted violations are reported
# --------------------------------------------------------------------------------------------


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "fake" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    for folder in [root / "fake", *(p for p in (root / "fake").rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return root


_CLEAN = {
    "a.py": "import fake.b\n",
    "b.py": "from fake import c\n",
    "c.py": "X = 1\n",
    "x/_m.py": "def _f():\n    return 1\n",
    "x/n.py": "from fake.x._m import _f\nfrom . import _m\n",
    "x/deep/k.py": "from fake.x import _m\nfrom ..n import _f\n",
    "experiment/app.py": "from fake import c\nfrom fake.experiment import _own\n",
    "experiment/_own.py": "",
}


def test_checker_finds_nothing_in_a_clean_package(tmp_path: Path) -> None:
    tree, uses = read_uses(_fake_package(tmp_path, _CLEAN), "fake")
    assert find_circles(tree, uses, module_level_only=False) == []
    assert private_violations(tree, uses, "fake.experiment", tmp_path) == []
    assert app_violations(tree, uses, "fake.experiment", tmp_path) == []


def test_checker_reports_a_module_level_circle(tmp_path: Path) -> None:
    files = {**_CLEAN, "c.py": "from .a import X\n"}  # a -> b -> c -> a
    tree, uses = read_uses(_fake_package(tmp_path, files), "fake")
    assert find_circles(tree, uses, module_level_only=True) == [["fake.a", "fake.b", "fake.c"]]


def test_checker_reports_a_circle_hidden_in_a_function(tmp_path: Path) -> None:
    files = {**_CLEAN, "c.py": "def late():\n    from fake import a\n"}
    tree, uses = read_uses(_fake_package(tmp_path, files), "fake")
    assert find_circles(tree, uses, module_level_only=True) == []
    assert find_circles(tree, uses, module_level_only=False) == [["fake.a", "fake.b", "fake.c"]]
    report = describe_circles(find_circles(tree, uses, False), uses, False, tmp_path)
    assert any("fake/c.py:2: fake.c imports fake.a (inside a function)" in r for r in report)


def test_checker_ignores_type_checking_imports(tmp_path: Path) -> None:
    files = {
        **_CLEAN,
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fake import a\n",
    }
    tree, uses = read_uses(_fake_package(tmp_path, files), "fake")
    assert find_circles(tree, uses, module_level_only=False) == []


@pytest.mark.parametrize(
    "text",
    [
        "from fake.x._m import _f\n",  # a private function of another package
        "from fake.x import _m\n",  # a private module of another package
        "import fake.x._m\n",
        "from ..x import _m\n",  # relative
        "import fake.x.n as N\nN._f()\n",  # through a module alias
    ],
)
def test_checker_reports_a_private_name_across_packages(tmp_path: Path, text: str) -> None:
    files = {**_CLEAN, "y/z.py": text}
    tree, uses = read_uses(_fake_package(tmp_path, files), "fake")
    found = private_violations(tree, uses, "fake.experiment", tmp_path)
    assert len(found) == 1 and found[0].startswith("fake/y/z.py:"), found
    assert "private to package fake.x" in found[0]


def test_checker_reports_the_application_using_library_private_names(tmp_path: Path) -> None:
    files = {**_CLEAN, "_util.py": "", "experiment/app.py": "from fake import _util\n"}
    tree, uses = read_uses(_fake_package(tmp_path, files), "fake")
    found = private_violations(tree, uses, "fake.experiment", tmp_path)
    assert found == [
        "fake/experiment/app.py:1: fake.experiment.app uses fake._util, private to package fake"
    ]


def test_checker_reports_a_script_using_private_names(tmp_path: Path) -> None:
    _fake_package(tmp_path, _CLEAN)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "run.py").write_text("from fake.experiment._own import thing\n")
    tree, uses = read_uses(tmp_path, "fake", [tmp_path / "bench"])
    assert private_violations(tree, uses, "fake.experiment", tmp_path) == [
        "bench/run.py:1: a script uses fake.experiment._own.thing, private to package "
        "fake.experiment"
    ]


def test_checker_reports_the_library_importing_the_application(tmp_path: Path) -> None:
    files = {**_CLEAN, "c.py": "def run():\n    import fake.experiment.app\n"}
    tree, uses = read_uses(_fake_package(tmp_path, files), "fake")
    assert app_violations(tree, uses, "fake.experiment", tmp_path) == [
        "fake/c.py:2: library module fake.c imports fake.experiment.app"
    ]


# --------------------------------------------------------------------------------------------
# the public surface of ``import labelsmooth`` (each in a fresh interpreter)
# --------------------------------------------------------------------------------------------

_OPTIONAL = ("triton", "matplotlib", "tqdm", "transformers", "accelerate", "lightning", "timm")


def _python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON value as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fresh_import() -> dict:
    """What a fresh ``import labelsmooth`` loads and shows, then what attribute access does."""
    # torch itself imports tqdm (and numpy): only what ``import labelsmooth`` adds counts
    return _python(
        """
        import json, sys
        import torch
        before = set(sys.modules)
        import labelsmooth
        new = sorted(set(sys.modules) - before)
        names = dir(labelsmooth)
        parallel_loaded = "labelsmooth.parallel" in sys.modules
        found = [
            labelsmooth.metrics.CalibrationMeter.__name__,
            labelsmooth.parallel.vocab_parallel_cross_entropy.__name__,
            type(labelsmooth.runtime.config).__name__,
            labelsmooth.integrations.__name__,
        ]
        try:
            labelsmooth.no_such_thing
            missing = "no error"
        except AttributeError as error:
            missing = str(error)
        print(json.dumps({"new": new, "dir": names, "parallel_loaded": parallel_loaded,
                          "found": found, "missing": missing}))
        """
    )


def test_import_loads_no_application_module_and_no_optional_dependency(fresh_import) -> None:
    new = fresh_import["new"]
    assert [m for m in new if m.startswith("labelsmooth.experiment")] == []
    assert [m for m in new if m.split(".")[0] in _OPTIONAL] == []


def test_import_works_with_the_optional_dependencies_missing() -> None:
    blocked = [m for m in _OPTIONAL if m != "tqdm"]  # tqdm: torch's own import
    result = _python(
        f"""
        import json, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {blocked!r}:
                    raise ImportError(f"blocked for the test: {{name}}")
                return None
        sys.meta_path.insert(0, Block())
        import torch, labelsmooth
        x = torch.randn(5, 7, requires_grad=True)
        loss = labelsmooth.cross_entropy(x, torch.arange(5), label_smoothing=0.1)
        loss.backward()
        import labelsmooth.integrations, labelsmooth.metrics, labelsmooth.parallel
        print(json.dumps(bool(torch.isfinite(loss))))
        """
    )
    assert result is True


def test_dir_shows_the_public_api_only(fresh_import) -> None:
    names = fresh_import["dir"]
    leaks = {"_dispatch", "_validate", "_config", "ops", "functional", "modules", "distillation"}
    assert leaks.isdisjoint(names), sorted(leaks & set(names))
    import labelsmooth

    assert set(labelsmooth.__all__) <= set(names)
    assert {"parallel", "metrics", "integrations", "runtime"} <= set(names)
    assert [n for n in names if n.startswith("_") and n != "__version__"] == []


def test_submodules_are_reached_lazily(fresh_import) -> None:
    assert fresh_import["parallel_loaded"] is False
    assert fresh_import["found"] == [
        "CalibrationMeter",
        "vocab_parallel_cross_entropy",
        "RuntimeConfig",
        "labelsmooth.integrations",
    ]
    assert fresh_import["missing"] == "module 'labelsmooth' has no attribute 'no_such_thing'"


def test_private_submodules_stay_importable_by_their_full_names() -> None:
    import labelsmooth.functional
    from labelsmooth import functional

    assert functional is labelsmooth.functional
    assert functional.cross_entropy is labelsmooth.cross_entropy
