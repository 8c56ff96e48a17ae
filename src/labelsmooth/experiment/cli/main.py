"""The ``labelsmooth`` command's parser and entry point: one module per subcommand
(:mod:`.data`, :mod:`.train`, :mod:`.compare`, :mod:`.distill`, :mod:`.bench`), each with
``add_subcommand``, ``check_arguments`` and ``execute``.

Exit status: 0 success, 1 a data or checkpoint error while running, 2 bad arguments (one
``labelsmooth: error:`` line, nothing done), 130 interrupted (Ctrl-C; the checkpoint is saved).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

import labelsmooth

from . import bench, compare, data, distill, train
from .common import CommandParser

__all__ = ["main", "build_parser", "EXIT_INTERRUPTED"]

EXIT_INTERRUPTED = 130
#: Subcommand name -> its module.
_COMMANDS: dict[str, ModuleType] = {
    "data": data,
    "train": train,
    "compare": compare,
    "distill": distill,
    "bench": bench,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``labelsmooth`` command (with every registered task's
    options)."""
    parser = CommandParser(
        prog="labelsmooth", description="Label smoothing for PyTorch: experiments and tools."
    )
    parser.add_argument(
        "--version", action="version", version=f"labelsmooth {labelsmooth.__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for module in _COMMANDS.values():
        module.add_subcommand(sub)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = action.choices[name]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``labelsmooth`` command.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success (or after ``--help``/``--version``), 1 on a data or
        checkpoint error, 2 on bad arguments (one ``labelsmooth: error:`` line, nothing
        done), 130 on Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # forward everything, including --help, untouched
        return bench.execute(argparse.Namespace(args=argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        module = _COMMANDS[args.command]
        check = getattr(module, "check_arguments", None)
        if check is not None:  # errors point to the subcommand's own --help
            check(_subparser(parser, args.command), args)
    except SystemExit as e:  # argparse: --help, --version (0) or an argument error (2)
        return e.code if isinstance(e.code, int) else 2
    return _execute(module, args)


def _execute(module: ModuleType, args: argparse.Namespace) -> int:
    """The subcommand's work, its errors as one line and an exit status."""
    from labelsmooth.experiment.data import DataUnavailableError
    from labelsmooth.experiment.train import CheckpointError, TrainingInterrupted

    try:
        status: int = module.execute(args)
        return status
    except TrainingInterrupted as e:
        print(f"labelsmooth: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(
            "labelsmooth: aborted; the checkpoint of the last finished epoch (if any) is "
            "kept; continue with --resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except (DataUnavailableError, CheckpointError, ValueError) as e:
        print(f"labelsmooth: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a folder removed while running: one line, no traceback
        print(f"labelsmooth: error: {e}", file=sys.stderr)
        return 1
