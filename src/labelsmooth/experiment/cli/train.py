"""``labelsmooth train``: one run of a task in one of its regimes (resumable)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from labelsmooth.experiment.config import CONVENTIONS

from . import rules
from .common import DATASET_HELP, dataset_type, field_type, progress_flag, unwritable, warn_if_busy

__all__ = ["add_subcommand", "check_arguments", "execute"]


def add_subcommand(sub: Any) -> None:
    """Add ``train`` and its options to the subparsers ``sub``."""
    tr = sub.add_parser(
        "train",
        help="train one model with label smoothing",
        description="Train one model with label-smoothed cross-entropy; a checkpoint after "
        "every epoch (and on Ctrl-C) in --out, resumable bit for bit with --resume. "
        "`train --regime fitted` is one run of `compare`'s fitted regime.",
    )
    rules.add_task_and_regime(tr)
    tr.add_argument(
        "--dataset",
        type=dataset_type,
        default=None,
        metavar="SPEC",
        help=f"{DATASET_HELP} (default: the regime's: fashion-mnist; --task lm: shakespeare)",
    )
    tr.add_argument(
        "--label-smoothing",
        type=field_type("label_smoothing", float),
        default=0.0,
        metavar="EPS",
        help="smoothing ε in [0, 1) (default: 0.0, no smoothing)",
    )
    tr.add_argument(
        "--convention",
        default="uniform",
        choices=CONVENTIONS,
        help="where the ε mass goes: uniform (ε/C on every class, as PyTorch), others "
        "(ε/(C-1) on the other classes), unnormalized (1-ε on the target, ε/C on the "
        "others) (default: uniform)",
    )
    tr.add_argument(
        "--seed",
        type=field_type("seed", int),
        default=0,
        help="seed of initialisation, data order and augmentation, >= 0 (default: 0)",
    )
    tr.add_argument(
        "--out", default="train-run", help="checkpoint and result.json folder (default: train-run)"
    )
    tr.add_argument(
        "--stop-after-epoch",
        type=field_type("epochs_stop", int),
        default=None,
        metavar="K",
        help="stop after K >= 1 epochs with a checkpoint (continue later with --resume; "
        "default: run every epoch)",
    )
    rules.add_run_options(tr)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The shared run rules, the output folder, torchrun's batch split."""
    from labelsmooth.experiment.tasks import get_task

    rules.check_run_options(parser, args, rules.regimes_in_play(get_task(args.task), args))
    why = unwritable(args.out)
    if why is not None:
        parser.error(f"argument --out: {why}")
    from labelsmooth.experiment.train.distributed import check_batch_size, world_size_from_env

    try:
        check_batch_size(_config(args).batch_size, world_size_from_env())
    except ValueError as e:
        parser.error(f"argument --batch-size: {e}" if "batch_size=" in str(e) else str(e))


def _config(args: argparse.Namespace) -> Any:
    from labelsmooth.experiment.tasks import get_task

    regime = rules.regimes_in_play(get_task(args.task), args)[0]
    fields: dict[str, Any] = {
        "label_smoothing": args.label_smoothing,
        "convention": args.convention,
        "seed": args.seed,
        "epochs_stop": args.stop_after_epoch,
    }
    if args.dataset is not None:
        fields["dataset"] = args.dataset
    return rules.run_config(args, regime, **fields)


def execute(args: argparse.Namespace) -> int:
    """Train; print the summary (rank 0 under torchrun)."""
    from labelsmooth.experiment.train import train

    config = _config(args)
    warn_if_busy(config.num_threads)
    # train() builds the registry's task of config.task; under torchrun rank 0 loads first
    result = train(config, out_dir=args.out, resume=args.resume, progress=progress_flag(args))
    summary = {"completed": result.completed, "metrics": result.metrics, "out": args.out}
    if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 alone prints
        print(json.dumps(summary, indent=2))
    return 0
