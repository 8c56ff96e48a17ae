"""The ``labelsmooth`` command: ``data fetch``, ``train``, ``compare`` and ``bench``.

Thin by design: it parses arguments and calls :mod:`labelsmooth.data`,
:mod:`labelsmooth.train` and (lazily) ``labelsmooth.benchmark``.

Examples::

    labelsmooth data fetch fashion-mnist
    labelsmooth train --dataset fashion-mnist --label-smoothing 0.1 --epochs 5 --seed 0
    labelsmooth train --dataset idx:/data/my-mnist --out runs/a --resume
    labelsmooth compare                       # the ~10 minute default
    labelsmooth compare --full                # the committed reproduction (~30 minutes)
    labelsmooth bench --help                  # forwarded to labelsmooth.benchmark
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "build_parser"]

EXIT_INTERRUPTED = 130

_DATASET_HELP = (
    "fashion-mnist, mnist (fetched into the cache on first use), idx:DIR (four MNIST-style "
    "IDX files, .gz or raw) or npz:FILE (x_train, y_train, x_test, y_test arrays)"
)


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="dataset cache (default: $LABELSMOOTH_DATA_DIR or the user cache dir)",
    )


def _add_run_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """Per-run options; for ``compare`` they default to None (= the preset's value)."""
    from labelsmooth.train import TrainConfig

    d = TrainConfig()

    def default(v: Any) -> Any:
        return v if defaults else None

    p.add_argument("--model", default=default(d.model), choices=["resnet"])
    p.add_argument("--depth", type=int, default=default(d.depth), help="ResNet depth 6n+2")
    p.add_argument("--width", type=int, default=default(d.width), help="first-stage channels")
    p.add_argument("--epochs", type=int, default=default(d.epochs))
    p.add_argument("--batch-size", type=int, default=default(d.batch_size))
    p.add_argument("--lr", type=float, default=default(d.lr), help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=default(d.weight_decay))
    p.add_argument("--warmup-epochs", type=float, default=default(d.warmup_epochs))
    p.add_argument(
        "--train-size",
        type=int,
        default=default(d.train_size),
        help="stratified training subset size (0: the whole training split)",
    )
    p.add_argument(
        "--val-size",
        type=int,
        default=default(d.val_size),
        help="held-out validation examples (temperature scaling)",
    )
    p.add_argument("--threads", type=int, default=default(d.num_threads), help="torch threads")
    flips = p.add_mutually_exclusive_group()
    flips.add_argument("--hflip", dest="hflip", action="store_const", const=True, default=None)
    flips.add_argument("--no-hflip", dest="hflip", action="store_const", const=False)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_data_dir(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``labelsmooth`` command."""
    parser = argparse.ArgumentParser(
        prog="labelsmooth", description="Label smoothing for PyTorch: experiments and tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="manage datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download and verify a built-in dataset")
    fetch.add_argument("name", nargs="+", choices=["fashion-mnist", "mnist"])
    _add_data_dir(fetch)

    tr = sub.add_parser("train", help="train one model with label smoothing")
    tr.add_argument("--dataset", default="fashion-mnist", help=_DATASET_HELP)
    tr.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS")
    tr.add_argument(
        "--convention", default="uniform", choices=["uniform", "others", "unnormalized"]
    )
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default="train-run", help="checkpoint and result.json directory")
    tr.add_argument(
        "--stop-after-epoch",
        type=int,
        default=None,
        metavar="K",
        help="stop after K epochs with a checkpoint (continue later with --resume)",
    )
    _add_run_options(tr, defaults=True)

    cmp = sub.add_parser("compare", help="baseline vs label smoothing over ε, conventions, seeds")
    cmp.add_argument(
        "--full",
        action="store_true",
        help="the reproduction: Fashion-MNIST ε 0/0.05/0.1/0.2 × uniform/others and MNIST "
        "ε 0/0.1, 3 seeds each (about 30 min on 2 cores)",
    )
    cmp.add_argument("--dataset", nargs="+", default=None, help=_DATASET_HELP)
    cmp.add_argument("--label-smoothing", nargs="+", type=float, default=None, metavar="EPS")
    cmp.add_argument(
        "--conventions",
        nargs="+",
        default=None,
        choices=["uniform", "others", "unnormalized"],
    )
    cmp.add_argument("--seeds", nargs="+", type=int, default=None)
    cmp.add_argument("--out", default="compare-results", help="results folder")
    cmp.add_argument("--no-plots", action="store_true")
    cmp.add_argument(
        "--no-fallback", action="store_true", help="do not switch dataset if one is unavailable"
    )
    _add_run_options(cmp, defaults=False)

    bench = sub.add_parser("bench", help="run labelsmooth.benchmark (arguments forwarded)")
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _run_config(args: argparse.Namespace, base: Any) -> Any:
    """Override the fields of a TrainConfig with the options given on the command line."""
    mapping = {
        "model": "model",
        "depth": "depth",
        "width": "width",
        "epochs": "epochs",
        "batch_size": "batch_size",
        "lr": "lr",
        "weight_decay": "weight_decay",
        "warmup_epochs": "warmup_epochs",
        "train_size": "train_size",
        "val_size": "val_size",
        "threads": "num_threads",
        "hflip": "hflip",
        "data_dir": "data_dir",
    }
    changes = {f: getattr(args, a) for a, f in mapping.items() if getattr(args, a) is not None}
    if changes.get("train_size") == 0:
        changes["train_size"] = None
    return dataclasses.replace(base, **changes)


def _warn_if_busy(threads: int) -> None:
    """Warn when other processes occupy the cores: OpenMP threads then wait on each other."""
    import os

    if not hasattr(os, "getloadavg"):
        return
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0]
    if threads > 1 and load > cpus - threads + 0.5:
        print(
            f"labelsmooth: warning: load average {load:.1f} on {cpus} CPUs; with --threads "
            f"{threads} training can be many times slower on a busy machine (try --threads 1, or "
            "OMP_WAIT_POLICY=PASSIVE set before starting Python)",
            file=sys.stderr,
        )


def _cmd_fetch(args: argparse.Namespace) -> int:
    from labelsmooth.data import fetch

    for name in args.name:
        path = fetch(name, args.data_dir)
        print(f"{name}: {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from labelsmooth.train import TrainConfig, train

    config = _run_config(args, TrainConfig())
    config = dataclasses.replace(
        config,
        dataset=args.dataset,
        label_smoothing=args.label_smoothing,
        convention=args.convention,
        seed=args.seed,
        epochs_stop=args.stop_after_epoch,
    )
    _warn_if_busy(config.num_threads)
    result = train(config, out_dir=args.out, resume=args.resume, progress=_progress(args))
    summary = {"completed": result.completed, "metrics": result.metrics, "out": args.out}
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from labelsmooth.train.compare import (
        DEFAULT_SECTIONS,
        DEFAULT_TRAIN,
        FULL_SECTIONS,
        FULL_TRAIN,
        Section,
        run_compare,
    )

    grid = (args.dataset, args.label_smoothing, args.conventions)
    if args.full:
        if any(v is not None for v in grid):
            raise ValueError("--full fixes datasets, ε and conventions; drop those options")
        sections = list(FULL_SECTIONS)
        base = FULL_TRAIN
    else:
        d = DEFAULT_SECTIONS[0]
        sections = [
            Section(
                ds,
                tuple(args.label_smoothing or d.epsilons),
                tuple(args.conventions or d.conventions),
                d.seeds,
            )
            for ds in (args.dataset or [d.dataset])
        ]
        base = DEFAULT_TRAIN
    if args.seeds is not None:
        sections = [dataclasses.replace(s, seeds=tuple(args.seeds)) for s in sections]
    base = _run_config(args, base)
    _warn_if_busy(base.num_threads)
    run_compare(
        sections,
        base,
        args.out,
        resume=args.resume,
        fallback=not args.no_fallback,
        plots=not args.no_plots,
        progress=_progress(args),
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    try:
        from labelsmooth import benchmark
    except ImportError as e:
        print(f"labelsmooth bench: the benchmark module is not available ({e})", file=sys.stderr)
        return 2
    forwarded = [a for a in args.args if a != "--"] if args.args[:1] == ["--"] else args.args
    rc = benchmark.main(forwarded)
    return int(rc or 0)


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.quiet else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``labelsmooth`` command.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 on a data/checkpoint/argument error, 130 on Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # forward everything, including --help, untouched
        return _cmd_bench(argparse.Namespace(args=argv[1:]))
    args = build_parser().parse_args(argv)
    from labelsmooth.data import DataUnavailableError
    from labelsmooth.train import CheckpointError, TrainingInterrupted

    handlers = {"data": _cmd_fetch, "train": _cmd_train, "compare": _cmd_compare}
    try:
        return handlers[args.command](args)
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


if __name__ == "__main__":
    raise SystemExit(main())
