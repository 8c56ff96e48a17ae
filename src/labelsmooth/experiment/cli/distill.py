"""``labelsmooth distill``: do smoothed teachers make worse students? (image task only)."""

from __future__ import annotations

import argparse
from typing import Any

from . import rules
from .common import (
    DATASET_HELP,
    add_field_option,
    add_results_options,
    bounded_float,
    dataset_type,
)

__all__ = ["add_subcommand", "check_arguments", "execute"]

#: The task and regime distillation runs: teachers are fitted-regime image runs.
_TASK, _REGIME = "image", "fitted"


def add_subcommand(sub: Any) -> None:
    """Add ``distill`` and its options to the subparsers ``sub``."""
    from labelsmooth.experiment.train.compare import DEFAULT_DISTILL as d

    shown = lambda values: " ".join(f"{v:g}" for v in values)  # noqa: E731
    dst = sub.add_parser(
        "distill",
        help="do smoothed teachers make worse students? (Müller et al. 2019, section 5)",
        description="Train teachers (fitted regime) with each --teacher-eps, then students "
        "by knowledge distillation (labelsmooth.distillation_loss) at each --temperatures, "
        "and one student alone; table of teacher and student accuracy to --out. Teachers "
        "already completed in --out with the same settings (e.g. by `compare --full`) are "
        "reused. Only --task image and --regime fitted are supported.",
    )
    rules.add_task_and_regime(dst)
    dst.add_argument(
        "--dataset", type=dataset_type, default=d.dataset, metavar="SPEC",
        help=f"{DATASET_HELP} (default: {d.dataset})",
    )  # fmt: skip
    add_field_option(dst, "--teacher-eps", "label_smoothing", float,
                     f"teachers' label smoothing (default: {shown(d.teacher_epsilons)})",
                     metavar="EPS", nargs="+")  # fmt: skip
    dst.add_argument(
        "--temperatures", nargs="+", type=bounded_float(0, 1000, open_low=True), default=None,
        metavar="T",
        help=f"distillation temperatures, each in (0, 1000] (default: {shown(d.temperatures)})",
    )  # fmt: skip
    dst.add_argument(
        "--alpha", type=bounded_float(0, 1, open_low=False), default=d.alpha,
        help=f"weight of the teacher's term, in [0, 1] (default: {d.alpha})",
    )  # fmt: skip
    add_field_option(dst, "--student-width", "width", int,
                     f"hidden units per layer of the student MLP (default: {d.student_width})",
                     metavar="W", default=d.student_width)  # fmt: skip
    add_field_option(dst, "--seeds", "seed", int,
                     f"seeds of teachers and students (default: {' '.join(map(str, d.seeds))})",
                     metavar="SEED", nargs="+")  # fmt: skip
    add_results_options(dst, "distill-results")
    rules.add_run_options(dst)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Only the image task's fitted regime; repeats; the shared run rules; --out."""
    if args.task != _TASK:
        parser.error(
            f"argument --task: distill trains image classifiers only (--task {_TASK}); "
            f"got --task {args.task}"
        )
    if args.regime not in (None, _REGIME):
        parser.error(
            f"argument --regime: distill's teachers and students are {_REGIME}-regime runs; "
            f"got --regime {args.regime}"
        )
    repeats = [("--seeds", args.seeds), ("--teacher-eps", args.teacher_eps)]
    rules.check_grid(parser, args, [*repeats, ("--temperatures", args.temperatures)], [_REGIME])


def execute(args: argparse.Namespace) -> int:
    """Run the distillation grid."""
    from labelsmooth.experiment.train.compare import DEFAULT_DISTILL, DistillGrid, run_distill

    d = DEFAULT_DISTILL
    grid = DistillGrid(
        args.dataset,
        tuple(args.teacher_eps or d.teacher_epsilons),
        tuple(args.temperatures or d.temperatures),
        tuple(args.seeds or d.seeds),
        args.alpha,
        args.student_width,
    )
    run_distill(grid, **rules.grid_run(args, _REGIME))
    return 0
