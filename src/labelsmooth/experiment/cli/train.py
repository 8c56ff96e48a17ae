"""``labelsmooth train``: one run of a task in one of its regimes (resumable)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from labelsmooth.experiment.config import CONVENTIONS, LOSSES

from . import rules
from .common import (
    DATASET_HELP,
    add_field_option,
    dataset_type,
    progress_flag,
    unwritable,
    warn_if_busy,
)

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
    add_field_option(tr, "--label-smoothing", "label_smoothing", float,
                     "smoothing ε in [0, 1) (default: 0.0, no smoothing)", metavar="EPS",
                     default=0.0)  # fmt: skip
    tr.add_argument(
        "--convention",
        default="uniform",
        choices=CONVENTIONS,
        help="where the ε mass goes: uniform (ε/C on every class, as PyTorch), others "
        "(ε/(C-1) on the other classes), unnormalized (1-ε on the target, ε/C on the "
        "others); with --loss ols, where the soft part's mass goes (default: uniform)",
    )
    _add_loss_options(tr)
    add_field_option(tr, "--seed", "seed", int,
                     "seed of initialisation, data order and augmentation, >= 0 (default: 0)",
                     default=0)  # fmt: skip
    tr.add_argument(
        "--out", default="train-run", help="checkpoint and result.json folder (default: train-run)"
    )
    add_field_option(tr, "--stop-after-epoch", "epochs_stop", int,
                     "stop after K >= 1 epochs with a checkpoint (continue later with --resume; "
                     "default: run every epoch)", metavar="K")  # fmt: skip
    rules.add_run_options(tr)


def _add_loss_options(p: argparse.ArgumentParser) -> None:
    """``--loss`` and ``--ols-alpha``."""
    p.add_argument(
        "--loss",
        default="ce",
        choices=LOSSES,
        help="ce: label-smoothed cross-entropy (labelsmooth.cross_entropy); ols: online label "
        "smoothing (labelsmooth.OnlineLabelSmoothing, Zhang et al. 2021: α·CE(one-hot) + "
        "(1−α)·CE(S[y]), S[y] the mean prediction of class y's correctly classified training "
        "samples in the previous epoch, uniform in the first; --task image only, with "
        "--label-smoothing 0) (default: ce)",
    )
    add_field_option(p, "--ols-alpha", "ols_alpha", float,
                     "with --loss ols: α in [0, 1], the weight of the one-hot part (default: 0.5, "
                     "the paper's)", metavar="ALPHA")  # fmt: skip


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The loss's rules, the shared run rules, the output folder, torchrun's batch split."""
    from labelsmooth.experiment.tasks import get_task

    spec = get_task(args.task)
    if args.ols_alpha is not None and args.loss != "ols":
        parser.error(f"argument --ols-alpha: the α of --loss ols; got --loss {args.loss}")
    if args.loss not in spec.losses:
        parser.error(
            f"argument --loss: {args.loss} is not a loss of --task {args.task} (it takes "
            f"{', '.join(spec.losses)})"
        )
    if args.loss == "ols" and args.label_smoothing != 0:
        parser.error(
            f"argument --label-smoothing: --loss ols replaces the uniform ε term by the "
            f"learned soft labels (α·one-hot + (1−α)·S[y]); got --label-smoothing "
            f"{args.label_smoothing:g} (drop it, or set the hard part's weight with --ols-alpha)"
        )
    rules.check_run_options(parser, args, rules.regimes_in_play(spec, args))
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
        "loss": args.loss,
        "seed": args.seed,
        "epochs_stop": args.stop_after_epoch,
    }
    if args.ols_alpha is not None:
        fields["ols_alpha"] = args.ols_alpha
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
