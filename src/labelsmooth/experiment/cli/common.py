"""What every subcommand shares: the one-line-error parser, argument types, path checks, the
busy-machine warning.

Every argument is checked before any work (no data loaded, no folder created). A refused
command prints one ``labelsmooth: error: … (see `labelsmooth <command> --help`)`` line and
exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from labelsmooth.experiment.config import FIELD_RULES
from labelsmooth.experiment.tasks import registered_tasks

__all__ = [
    "CommandParser",
    "field_type",
    "add_field_option",
    "bounded_float",
    "dataset_type",
    "existing_dir",
    "unwritable",
    "add_results_options",
    "refuse_repeats",
    "busy_warning",
    "warn_if_busy",
    "progress_flag",
    "DATASET_HELP",
]

DATASET_HELP = (
    "fashion-mnist, mnist (fetched into the cache on first use), idx:DIR (four MNIST-style "
    "IDX files, .gz or raw) or npz:FILE (x_train, y_train, x_test, y_test arrays); "
    "shakespeare with --task lm"
)


class CommandParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``labelsmooth: error: <what> (see `<prog> --help`)``.

    ``prog`` is the subcommand's (``labelsmooth train``), so the pointer names its help.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"labelsmooth: error: {message} (see `{self.prog} --help`)\n")


def _shown(path: str) -> str:
    """A path as an error line shows it (a path too long for the OS, shortened)."""
    return path if len(path) <= 80 else f"{path[:38]}...{path[-38:]} ({len(path)} characters)"


def _os_says(err: OSError) -> str:
    return err.strerror or type(err).__name__


# --------------------------------------------------------------------------- argument types


def field_type(field: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses with ``parse`` and applies TrainConfig's rule."""
    rule = FIELD_RULES[field]

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not rule.ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule.text}, got {text!r}")
        return value

    return convert


def add_field_option(
    p: argparse.ArgumentParser,
    flag: str,
    field: str,
    parse: Callable[[str], Any],
    help: str,
    *,
    metavar: str | None = None,
    default: Any = None,
    nargs: str | None = None,
) -> None:
    """An option ``flag`` holding TrainConfig field ``field``'s value (:func:`field_type`:
    parsed by ``parse``, checked by the field's rule); ``default`` when not given."""
    p.add_argument(flag, type=field_type(field, parse), default=default, nargs=nargs,
                   metavar=metavar, help=help)  # fmt: skip


def bounded_float(low: float, high: float, *, open_low: bool) -> Callable[[str], float]:
    """An argparse ``type=``: a number in ``(low, high]`` (``open_low``) or ``[low, high]``."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = (low < value if open_low else low <= value) and value <= high
        if not ok:
            bracket = "(" if open_low else "["
            raise argparse.ArgumentTypeError(
                f"must be a number in {bracket}{low:g}, {high:g}], got {text!r}"
            )
        return value

    return convert


def dataset_type(text: str) -> str:
    """A dataset some registered task takes; ``idx:DIR`` must be a folder, ``npz:FILE`` a
    file (which task it fits is checked with ``--task``)."""
    kind, sep, path = text.partition(":")
    try:
        if sep and kind == "idx" and path and not Path(path).is_dir():
            raise argparse.ArgumentTypeError(f"{text!r}: {path} is not a folder")
        if sep and kind == "npz" and path and not Path(path).is_file():
            raise argparse.ArgumentTypeError(f"{text!r}: {path} is not a file")
    except OSError as err:  # a name the OS refuses (too long, say)
        raise argparse.ArgumentTypeError(f"{_shown(text)}: {_os_says(err)}") from None
    if any(spec.accepts(text) for spec in registered_tasks()):
        return text
    names = [d for spec in registered_tasks() for d in spec.datasets]
    raise argparse.ArgumentTypeError(f"must be {', '.join(dict.fromkeys(names))}, got {text!r}")


def existing_dir(text: str) -> Path:
    """An argparse ``type=``: an existing folder."""
    path = Path(text).expanduser()
    try:
        is_dir = path.is_dir()
    except OSError as err:
        raise argparse.ArgumentTypeError(f"{_shown(text)}: {_os_says(err)}") from None
    if not is_dir:
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return path


def unwritable(out: str) -> str | None:
    """Why the folder ``out`` cannot be created or written to, or None if it can."""
    p = Path(out)
    try:
        if p.exists() and not p.is_dir():
            return f"{p} exists and is not a folder"
        existing = p.absolute()
        while not existing.exists():
            existing = existing.parent
    except OSError as err:  # a name the OS refuses (a component too long, say)
        return f"cannot create {_shown(out)}: {_os_says(err)}"
    if not existing.is_dir():
        return f"cannot create {p}: {existing} is not a folder"
    read_only = (
        bool(os.statvfs(existing).f_flag & os.ST_RDONLY) if hasattr(os, "statvfs") else False
    )
    if read_only or not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write to {existing} (permission denied or read-only)"
    try:  # os.access says yes to root everywhere (and /proc lies): write a probe file
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".labelsmooth-probe-"):
            pass
    except OSError as err:
        return f"cannot write to {existing} ({err.strerror or err})"
    return None


def add_results_options(p: argparse.ArgumentParser, default_out: str) -> None:
    """``--out``, ``--no-plots``, ``--no-fallback``: where a grid's results go and how."""
    p.add_argument("--out", default=default_out, help=f"results folder (default: {default_out})")
    p.add_argument("--no-plots", action="store_true", help="write tables only")
    p.add_argument(
        "--no-fallback", action="store_true", help="do not switch dataset if one is unavailable"
    )


def refuse_repeats(
    parser: argparse.ArgumentParser, lists: Sequence[tuple[str, Sequence[Any] | None]]
) -> None:
    """Refuse a value given twice in any of the ``(flag, values)`` list options."""
    for flag, values in lists:
        repeated = [v for i, v in enumerate(values or []) if v in list(values or [])[:i]]
        if repeated:
            parser.error(f"argument {flag}: {repeated[0]!r} is given more than once")


# --------------------------------------------------------------------------- busy machine


def busy_warning(threads: int, load: float, cpus: int, wait_policy: str | None) -> str | None:
    """The busy-machine warning, or None when its advice does not apply.

    OpenMP threads that spin at barriers lose a time slice whenever another process holds one
    of their cores, which can make training several times slower. The advice (``--threads 1``
    or ``OMP_WAIT_POLICY=PASSIVE``) applies only when other processes want at least one whole
    core of the ``threads`` this run uses (1-minute load average >= ``cpus - threads + 1``)
    and neither remedy is in effect.
    """
    if threads <= 1 or (wait_policy or "").strip().upper() == "PASSIVE":
        return None
    if load < cpus - threads + 1:
        return None
    return (
        f"labelsmooth: warning: load average {load:.1f} on {cpus} CPUs leaves fewer than "
        f"--threads {threads} idle cores, and waiting OpenMP threads spin: training can be "
        "several times slower (try --threads 1, or OMP_WAIT_POLICY=PASSIVE set before "
        "starting Python)"
    )


def warn_if_busy(threads: int) -> None:
    """Print :func:`busy_warning` to stderr when it applies."""
    if not hasattr(os, "getloadavg"):
        return
    message = busy_warning(
        threads, os.getloadavg()[0], os.cpu_count() or 1, os.environ.get("OMP_WAIT_POLICY")
    )
    if message is not None:
        print(message, file=sys.stderr)


def progress_flag(args: argparse.Namespace) -> bool | None:
    """``--quiet``: no progress bars (else: when stderr is a terminal)."""
    return False if args.quiet else None
