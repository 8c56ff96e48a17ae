"""``labelsmooth bench``: forwarded untouched to :mod:`labelsmooth.experiment.bench`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_subcommand", "execute"]


def add_subcommand(sub: Any) -> None:
    """Add ``bench`` (its arguments are the benchmark's own) to the subparsers ``sub``."""
    bench = sub.add_parser(
        "bench",
        help="time and memory of the loss variants against F.cross_entropy; writes a new "
        "./labelsmooth-bench/<date-time>/ unless --out (see labelsmooth bench --help)",
    )
    bench.add_argument("args", nargs=argparse.REMAINDER)


def execute(args: argparse.Namespace) -> int:
    """Run the benchmark's ``main`` on the arguments; its exit status."""
    try:
        from labelsmooth.experiment import bench as benchmark
    except ImportError as e:
        print(f"labelsmooth: error: bench: the benchmark module is not available ({e})",
              file=sys.stderr)  # fmt: skip
        return 2
    forwarded = [a for a in args.args if a != "--"] if args.args[:1] == ["--"] else args.args
    try:
        rc = benchmark.main(forwarded)
    except SystemExit as e:  # its argparse: --help (0) or an argument error (2, one line)
        return e.code if isinstance(e.code, int) else 2
    return int(rc or 0)
