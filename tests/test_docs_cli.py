"""The docs quote the command line as it is: every default, choice and option they name.

Each subcommand's ``--help`` (run through the public entry point
``labelsmooth.experiment.cli.main``, as a user sees it) is parsed into its options, their
choices and their "(default: X)". Then README.md and docs/*.md are read for what they claim:

* option tables under a heading naming a subcommand (``| `--opt ARG` | default | meaning |``):
  the option exists there, its default and choices are the parser's;
* prose such as ``` `--seq-len L` (context in characters, default 128) ```: the default is the
  parser's, in the subcommand of the section (or in every subcommand that has the option);
* every ``labelsmooth SUB ...`` command line in a code span or a bash/text block: each option
  exists in SUB, and a value given to an option with choices is one of them.

A mismatch fails with the page, line and both values. A default written as prose that cannot
be compared must be listed in ``_PROSE`` with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: subcommand -> its argv prefix
SUBCOMMANDS = {
    "train": ["train"],
    "compare": ["compare"],
    "distill": ["distill"],
    "data fetch": ["data", "fetch"],
    "bench": ["bench"],
}
#: (subcommand, option) -> why the docs' default is prose the test cannot compare
_PROSE = {
    ("compare", "--hflip"): "it depends on the regime (fitted: off), which --help cannot show",
}


@dataclass
class Option:
    """One entry of a --help listing."""

    flags: tuple[str, ...]
    takes_value: bool
    choices: tuple[str, ...] | None = None
    default: str | None = None
    help: str = ""


@dataclass
class Parser:
    """The options of one subcommand, by flag, and its positional choices."""

    options: dict[str, Option] = field(default_factory=dict)
    positional_choices: set[str] = field(default_factory=set)


def _default_of(text: str) -> str | None:
    """The X of the last "default: X" in a help text, up to its closing parenthesis."""
    start = text.rfind("default: ")
    if start < 0:
        return None
    depth, end = 0, len(text)
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            if depth == 0:
                end = i
                break
            depth -= 1
    return text[start + len("default: ") : end].strip()


def parse_help(text: str) -> Parser:
    """Options, choices and defaults from argparse's --help output (one entry per option)."""
    parser = Parser()
    entries: list[list[str]] = []
    section = ""
    for line in text.splitlines():
        if line and not line.startswith(" "):
            section = line.rstrip(":")
            continue
        if re.match(r"^  \S", line):
            entries.append([section, line.strip()])
        elif line.startswith("   ") and entries:
            entries[-1].append(line.strip())
    for section, first, *rest in entries:
        parts = re.split(r"\s{2,}", first, maxsplit=1)
        invocation, help_text = parts[0], " ".join(parts[1:] + rest)
        choices = re.search(r"\{([^}]*)\}", invocation)
        if section.startswith("positional"):
            if choices:
                parser.positional_choices.update(choices.group(1).split(","))
            continue
        flags = tuple(re.findall(r"(?:^|, )(--?[\w-]+)", invocation))
        takes_value = bool(re.search(r"--?[\w-]+ \S", invocation))
        option = Option(
            flags=flags,
            takes_value=takes_value,
            choices=tuple(choices.group(1).split(",")) if choices else None,
            default=_default_of(help_text),
            help=help_text,
        )
        for flag in flags:
            parser.options[flag] = option
    return parser


@functools.cache
def help_text(sub: str) -> str:
    """``labelsmooth SUB --help`` as printed, one line per option entry (no wrapping)."""
    from labelsmooth.experiment.cli import main

    out = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "10000"  # argparse wraps at the terminal width
    try:
        with contextlib.redirect_stdout(out):
            code: object
            try:
                code = main([*SUBCOMMANDS[sub], "--help"])
            except SystemExit as e:
                code = e.code
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    assert code in (0, None), f"labelsmooth {sub} --help exited with {code}"
    return out.getvalue()


@functools.cache
def parser_of(sub: str) -> Parser:
    return parse_help(help_text(sub))


# --------------------------------------------------------------------------- what the docs say


@dataclass(frozen=True)
class Claim:
    """One statement of a page about the command line."""

    page: str
    line: int
    kind: str  # "table", "prose", "command"
    sub: str | None  # "train" or "train,compare"; None: every subcommand that has the option
    option: str
    value: str | None  # the default (table, prose) or the value given (command)
    choices: tuple[str, ...] | None = None

    def __str__(self) -> str:
        where = f"labelsmooth {self.sub.replace(',', '/')}" if self.sub else "every subcommand"
        return f"{self.page}:{self.line} ({self.kind}, {where}) {self.option} {self.value!r}"


_HEADING = re.compile(r"^#{1,6} ")
_SUB_IN_HEADING = re.compile(r"`labelsmooth (data fetch|train|compare|distill|bench)`")
_TABLE_ROW = re.compile(r"^\| `(--[\w-]+)((?: [^`]*)?)` \| ([^|]*) \|")
_PROSE_DEFAULT = re.compile(r"`(--[\w-]+)(?: [^`]*)?` \(([^()]*(?:\([^()]*\)[^()]*)*)\)")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_COMMAND_START = re.compile(r"(?:^|[\s(])labelsmooth (data fetch|train|compare|distill|bench)\b")


def _heading_subcommands(line: str) -> str | None:
    """The subcommand(s) a heading names: `labelsmooth SUB`, or a list of `SUB` in backticks
    (joined by commas), else None."""
    m = _SUB_IN_HEADING.search(line)
    if m:
        return m.group(1)
    named = [w for w in re.findall(r"`([a-z ]+)`", line) if w in SUBCOMMANDS]
    return ",".join(named) or None


def _blocks_with_context(text: str) -> list[tuple[int, str, str | None, bool]]:
    """(first line number, text, subcommand of the section, is a table row) outside fenced
    blocks: each table row alone, each paragraph of prose joined into one line (so that a
    "(default X)" or a code span broken across lines is read whole)."""
    out: list[tuple[int, str, str | None, bool]] = []
    sub: str | None = None
    fenced, para_start = False, 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append((para_start, " ".join(para), sub, False))
            para.clear()

    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            flush()
            fenced = not fenced
            continue
        if fenced:
            continue
        if _HEADING.match(line):
            flush()
            sub = _heading_subcommands(line)
            continue
        if line.startswith("|"):
            flush()
            out.append((n, line, sub, True))
        elif not line.strip() or re.match(r"^\s*[*-] ", line):  # a blank line or a new item
            flush()
            if line.strip():
                para_start, para[:] = n, [line.strip()]
        else:
            if not para:
                para_start = n
            para.append(line.strip())
    flush()
    return out


def _command_claims(page: str, lineno: int, command: str) -> list[Claim]:
    """The options (and values) of each ``labelsmooth SUB ...`` in one command line."""
    claims = []
    for m in _COMMAND_START.finditer(command):
        sub = m.group(1)
        rest = command[m.end() :]
        rest = re.split(r"\s(?:#|\||&&|;|>)", rest, maxsplit=1)[0]
        try:
            tokens = shlex.split(rest)
        except ValueError:
            tokens = rest.split()
        for i, token in enumerate(tokens):
            if token in ("...", "…", "\\") or not token.startswith("--") or token == "--":
                continue
            flag, _, inline = token.partition("=")
            value = inline or (tokens[i + 1] if i + 1 < len(tokens) else None)
            claims.append(Claim(page, lineno, "command", sub, flag, value))
        if sub == "data fetch":
            names = [t for t in tokens if re.fullmatch(r"[a-z][a-z0-9-]*", t)]
            positional = []
            for t in tokens:  # positionals come before the first option
                if t.startswith("-"):
                    break
                positional.append(t)
            for name in set(names) & set(positional):
                claims.append(Claim(page, lineno, "command", sub, "<dataset>", name))
    return claims


def claims_of(page: Path) -> list[Claim]:
    text = page.read_text(encoding="utf-8")
    name = str(page.relative_to(ROOT))
    claims: list[Claim] = []
    for n, line, sub, is_row in _blocks_with_context(text):
        row = _TABLE_ROW.match(line) if is_row else None
        if row:
            flag, rest, default = row.groups()
            choices = re.search(r"\{([^}]*)\}", rest)
            claims.append(
                Claim(
                    name,
                    n,
                    "table",
                    sub,
                    flag,
                    default.strip(),
                    tuple(choices.group(1).split(",")) if choices else None,
                )  # fmt: skip
            )
            continue
        for m in _PROSE_DEFAULT.finditer(line):
            inner = re.search(r"\bdefault:? ([^,;]+)", m.group(2))
            if inner:
                claims.append(Claim(name, n, "prose", sub, m.group(1), inner.group(1).strip()))
        for m in _INLINE_CODE.finditer(line):
            code = m.group(1)
            choice = re.fullmatch(r"(--[\w-]+) \{([^}]*)\}", code)
            if choice:
                claims.append(
                    Claim(
                        name,
                        n,
                        "choices",
                        sub,
                        choice.group(1),
                        None,
                        tuple(choice.group(2).split(",")),
                    )  # fmt: skip
                )
            claims += _command_claims(name, n, code)
    for m in _FENCE.finditer(text):
        if m.group(1) not in ("", "bash", "sh", "text", "console"):
            continue
        start = text.count("\n", 0, m.start(2)) + 1
        pending, first = "", start
        for i, line in enumerate(m.group(2).splitlines()):
            if not pending:
                first = start + i
            if line.rstrip().endswith("\\"):  # a continued command line
                pending += line.rstrip()[:-1] + " "
                continue
            claims += _command_claims(name, first, (pending + line).lstrip("$ "))
            pending = ""
    return claims


def _all_claims() -> list[Claim]:
    return [c for page in PAGES for c in claims_of(page)]


# --------------------------------------------------------------------------- the comparisons


def _normalize(value: str) -> list[str]:
    """A default as a list of tokens: backticks off, explanation after ", " or "; " off."""
    value = value.replace("`", "").strip()
    value = re.split(r", |; ", value, maxsplit=1)[0].strip()
    return value.split()


def _same_default(doc: str, cli: str) -> bool:
    a, b = _normalize(doc), _normalize(cli)
    if len(a) == len(b):
        try:
            return all(float(x) == float(y) for x, y in zip(a, b))
        except ValueError:
            pass
    return a == b


def _subs_for(claim: Claim) -> list[str]:
    if claim.sub is not None:
        return claim.sub.split(",")
    having = [s for s in SUBCOMMANDS if claim.option in parser_of(s).options]
    assert having, f"{claim}: no subcommand has the option {claim.option}"
    return having


def check(claim: Claim) -> list[str]:
    """The mismatches of one claim against the parsers (empty: it holds)."""
    errors = []
    for sub in _subs_for(claim):
        parser = parser_of(sub)
        if claim.option == "<dataset>":
            if claim.value not in parser.positional_choices:
                errors.append(f"{claim}: not one of {sorted(parser.positional_choices)}")
            continue
        option = parser.options.get(claim.option)
        if option is None:
            errors.append(f"{claim}: labelsmooth {sub} has no option {claim.option}")
            continue
        if claim.choices is not None and tuple(claim.choices) != option.choices:
            errors.append(f"{claim}: choices {claim.choices}, --help says {option.choices}")
        if claim.kind == "command":
            if option.choices and option.takes_value and claim.value is not None:
                for value in [claim.value]:
                    if value not in option.choices and not value.startswith("-"):
                        errors.append(f"{claim}: {value!r} is not one of {option.choices}")
            continue
        if claim.kind not in ("table", "prose") or claim.value is None:
            continue
        doc = claim.value
        if (sub, claim.option) in _PROSE:
            continue
        if doc == "off":
            if option.takes_value:
                errors.append(f"{claim}: documented as an off-by-default flag; it takes a value")
            continue
        if option.default is None:
            errors.append(f"{claim}: --help states no default for {claim.option}")
        elif doc.startswith("the regime's"):
            if not option.default.startswith("the regime's"):
                errors.append(f"{claim}: --help says the default is {option.default!r}")
        elif not _same_default(doc, option.default):
            errors.append(f"{claim}: --help says the default is {option.default!r}")
    return errors


# --------------------------------------------------------------------------- the tests


def test_help_parser_reads_options_choices_and_defaults():
    text = (
        "usage: x\n\noptions:\n"
        "  -h, --help            show this help message and exit\n"
        "  --regime {fitted,short}\n"
        "                        the settings (default: fitted); more\n"
        "  --stop-after-epoch K  stop (continue with --resume; default: run every epoch)\n"
        "  --seeds SEED [SEED ...]\n"
        "                        seeds (default: 0 1 2)\n"
        "  --quiet               no bars\n"
        "\npositional arguments:\n  {a,b}\n"
    )
    p = parse_help(text)
    assert p.options["--regime"].choices == ("fitted", "short")
    assert p.options["--regime"].default == "fitted"
    assert p.options["--stop-after-epoch"].default == "run every epoch"
    assert p.options["--seeds"].default == "0 1 2" and p.options["--seeds"].takes_value
    assert not p.options["--quiet"].takes_value and p.options["--quiet"].default is None
    assert p.positional_choices == {"a", "b"}


def test_claims_are_found_in_tables_prose_and_commands():
    page = ROOT / "docs" / "__probe__.md"
    page.write_text(
        "### `labelsmooth compare`\n\n| option | default | meaning |\n|---|---|---|\n"
        "| `--label-smoothing EPS [EPS ...]` | `0.0 0.1` | ε |\n\n"
        "One run: `--seq-len L` (context, default 64).\n\n"
        "```bash\nlabelsmooth train --regime sideways \\\n    --epochs 2\n```\n",
        encoding="utf-8",
    )
    try:
        claims = claims_of(page)
    finally:
        page.unlink()
    kinds = {(c.kind, c.sub, c.option, c.value) for c in claims}
    assert ("table", "compare", "--label-smoothing", "`0.0 0.1`") in kinds
    assert ("prose", "compare", "--seq-len", "64") in kinds
    assert ("command", "train", "--regime", "sideways") in kinds
    assert ("command", "train", "--epochs", "2") in kinds


def test_a_wrong_default_is_caught():
    """The check itself fails on the mismatch this test exists for (compare's ε list)."""
    claim = Claim("docs/x.md", 1, "table", "compare", "--label-smoothing", "`0.0 0.1`")
    assert check(claim), "a wrong default must be reported"
    right = parser_of("compare").options["--label-smoothing"].default
    assert right is not None and not check(Claim("docs/x.md", 1, "table", "compare",
                                                 "--label-smoothing", f"`{right}`"))  # fmt: skip
    bad_choice = Claim("docs/x.md", 1, "command", "compare", "--regime", "sideways")
    assert check(bad_choice)
    missing = Claim("docs/x.md", 1, "command", "compare", "--no-such-option", None)
    assert check(missing)


def test_docs_quote_the_cli_as_it_is():
    claims = _all_claims()
    assert sum(c.kind == "table" for c in claims) >= 20, "the option tables were not found"
    errors = [e for c in claims for e in check(c)]
    assert not errors, "docs and --help disagree:\n" + "\n".join(errors)


@pytest.mark.parametrize("sub", list(SUBCOMMANDS))
def test_every_subcommand_has_help(sub):
    assert parser_of(sub).options, f"labelsmooth {sub} --help lists no options"
