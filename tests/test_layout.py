"""Layout rules of the source tree, read from the files (stdlib ``ast``, nothing runs).

* A source file under ``src/`` holds at most 500 lines, unless one of its first lines (a
  comment or a line of the module docstring) starts with ``Long file:`` and says why.
* A function (or method) holds at most 60 lines of code, unless a comment
  ``# long function: <why>`` sits on its ``def`` line or on the line just above it (above its
  decorators, if any). Lines of code are the lines of the function that are not blank, not
  only a comment and not part of a docstring (its own or a nested function's or class's);
  nested functions count towards the function that holds them and are checked themselves.

Each rule reports every offender in one message. ``test_checker_*`` plant offenders under
``tmp_path`` and show that they are reported, and that the reasons are honoured.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
#: how many lines at the top of a file may hold its "Long file:" reason
HEADER_LINES = 15
_LONG_FILE = re.compile(r'^\s*(#|"""|\'\'\'|r""")?\s*Long file:\s*\S')
_LONG_FUNCTION = re.compile(r"#\s*long function:\s*\S", re.IGNORECASE)


def _docstring_lines(tree: ast.AST) -> set[int]:
    """Line numbers of every docstring (module, classes, functions) in ``tree``."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                end = body[0].end_lineno or body[0].lineno
                lines.update(range(body[0].lineno, end + 1))
    return lines


def long_file_offenders(paths: list[Path], base: Path) -> list[str]:
    """Files over the limit without a ``Long file:`` line near their top."""
    out = []
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) <= MAX_FILE_LINES:
            continue
        if any(_LONG_FILE.match(line) for line in lines[:HEADER_LINES]):
            continue
        out.append(
            f"{path.relative_to(base)}: {len(lines)} lines (> {MAX_FILE_LINES}) and no "
            f"'Long file: <why>' line in its first {HEADER_LINES} lines"
        )
    return out


def code_lines(node: ast.AST, source: list[str], docstrings: set[int]) -> int:
    """Lines of code of a function: not blank, not only a comment, not a docstring."""
    first = node.lineno  # type: ignore[attr-defined]
    last = node.end_lineno or first  # type: ignore[attr-defined]
    count = 0
    for number in range(first, last + 1):
        text = source[number - 1].strip()
        if text and not text.startswith("#") and number not in docstrings:
            count += 1
    return count


def long_function_offenders(paths: list[Path], base: Path) -> list[str]:
    """Functions over the limit without a ``# long function:`` comment at their ``def``."""
    out = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        source = text.splitlines()
        tree = ast.parse(text, filename=str(path))
        docstrings = _docstring_lines(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            n = code_lines(node, source, docstrings)
            if n <= MAX_FUNCTION_LINES:
                continue
            top = min([node.lineno] + [d.lineno for d in node.decorator_list])
            marks = [source[node.lineno - 1], source[top - 2] if top >= 2 else ""]
            if any(_LONG_FUNCTION.search(line) for line in marks):
                continue
            out.append(
                f"{path.relative_to(base)}:{node.lineno}: {node.name} has {n} lines of code "
                f"(> {MAX_FUNCTION_LINES}) and no '# long function: <why>' comment"
            )
    return out


def _sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "egg-info" not in str(p))


def test_no_long_file_without_a_reason() -> None:
    found = long_file_offenders(_sources(SRC), ROOT)
    assert not found, f"{len(found)} long file(s):\n" + "\n".join(found)


def test_no_long_function_without_a_reason() -> None:
    found = long_function_offenders(_sources(SRC), ROOT)
    assert not found, f"{len(found)} long function(s):\n" + "\n".join(found)


# --------------------------------------------------------------------------------------------
# the test of the test
# --------------------------------------------------------------------------------------------


def _function(name: str, lines: int, above: str = "", on: str = "") -> str:
    body = "".join(f"    x{i} = {i}\n" for i in range(lines - 1))
    return f"{above}\ndef {name}():{on}\n{body}"


def test_checker_reports_a_long_file_and_honours_its_reason(tmp_path: Path) -> None:
    plain = tmp_path / "plain.py"
    plain.write_text("x = 1\n" * (MAX_FILE_LINES + 1))
    explained = tmp_path / "explained.py"
    explained.write_text('"""A module.\n\nLong file: one table of pins.\n"""\n' + "x = 1\n" * 600)
    commented = tmp_path / "commented.py"
    commented.write_text("# Long file: generated\n" + "x = 1\n" * 600)
    short = tmp_path / "short.py"
    short.write_text("x = 1\n" * MAX_FILE_LINES)
    found = long_file_offenders([commented, explained, plain, short], tmp_path)
    assert len(found) == 1 and found[0].startswith("plain.py: 501 lines"), found


def test_checker_counts_code_lines_only(tmp_path: Path) -> None:
    padding = '    """Doc.\n\n    More doc.\n    """\n' + "\n    # a comment\n\n" * 30
    path = tmp_path / "m.py"
    path.write_text(_function("f", MAX_FUNCTION_LINES).replace("():\n", "():\n" + padding, 1))
    tree = ast.parse(path.read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    assert code_lines(node, path.read_text().splitlines(), _docstring_lines(tree)) == 60
    assert long_function_offenders([path], tmp_path) == []


def test_checker_reports_a_long_function_and_honours_its_reason(tmp_path: Path) -> None:
    n = MAX_FUNCTION_LINES + 1
    path = tmp_path / "m.py"
    path.write_text(
        _function("plain", n)
        + _function("above", n, above="# long function: one table")
        + _function("on", n, on="  # long function: a state machine")
        + _function("decorated", n, above="# long function: why\n@staticmethod")
        + "class K:\n"
        + textwrap.indent(_function("method", n), "    ")
    )
    found = long_function_offenders([path], tmp_path)
    assert [f.split(": ", 1)[1].split(" has")[0] for f in found] == ["plain", "method"], found
    assert "m.py:2: plain has 61 lines of code" in found[0]
