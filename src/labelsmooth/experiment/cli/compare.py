"""``labelsmooth compare``: baseline against label smoothing over ε × conventions × seeds."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from labelsmooth.experiment.config import CONVENTIONS

from . import rules
from .common import (
    DATASET_HELP,
    add_results_options,
    dataset_type,
    field_type,
    progress_flag,
    refuse_repeats,
    unwritable,
    warn_if_busy,
)

__all__ = ["add_subcommand", "check_arguments", "execute"]


def _shown(values: Any) -> str:
    return " ".join(map(str, values))


def add_subcommand(sub: Any) -> None:
    """Add ``compare`` and its options to the subparsers ``sub``."""
    from labelsmooth.experiment.tasks import get_task

    d = get_task("image").grid
    cmp = sub.add_parser(
        "compare",
        help="baseline vs label smoothing over ε, conventions, seeds",
        description="Train a baseline and label-smoothed models over ε × conventions × seeds; "
        "write tables (results.md, CSV), per-run JSON and plots to --out.",
    )
    cmp.add_argument(
        "--full",
        action="store_true",
        help="the reproduction: Fashion-MNIST in both regimes, ε 0/0.01/0.05/0.1/0.2 uniform "
        "and 0.1 others, 3 seeds (36 runs), then the distillation grid of `labelsmooth "
        "distill` with the fitted runs as teachers (see docs/results.md for its measured time)",
    )
    rules.add_task_and_regime(cmp)
    cmp.add_argument(
        "--dataset",
        nargs="+",
        type=dataset_type,
        default=None,
        metavar="SPEC",
        help=f"{DATASET_HELP} (default: {d.dataset}; --task lm: shakespeare)",
    )
    cmp.add_argument(
        "--label-smoothing",
        nargs="+",
        type=field_type("label_smoothing", float),
        default=None,
        metavar="EPS",
        help=f"ε values in [0, 1); 0 is the baseline (default: {_shown(d.epsilons)}; --task "
        f"lm: {_shown(get_task('lm').grid.epsilons)})",
    )
    cmp.add_argument(
        "--conventions",
        nargs="+",
        default=None,
        choices=CONVENTIONS,
        metavar="CONV",
        help=f"conventions of every ε > 0, from {', '.join(CONVENTIONS)} "
        f"(default: {_shown(d.conventions)})",
    )
    cmp.add_argument(
        "--seeds",
        nargs="+",
        type=field_type("seed", int),
        default=None,
        metavar="SEED",
        help=f"seeds, each >= 0 and given once (default: {_shown(d.seeds)}; --task lm: "
        f"{_shown(get_task('lm').grid.seeds)})",
    )
    add_results_options(cmp, "compare-results")
    rules.add_run_options(cmp)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--full against the grid options, repeats, the shared run rules, --out, torchrun."""
    from labelsmooth.experiment.tasks import get_task
    from labelsmooth.experiment.train.distributed import world_size_from_env

    grid = {"--dataset": args.dataset, "--label-smoothing": args.label_smoothing}
    grid["--conventions"] = args.conventions
    given = [flag for flag, v in grid.items() if v is not None]
    if args.regime is not None:
        given.append("--regime")
    if args.full and args.task != "image":
        parser.error(f"argument --full: the image reproduction; drop it with --task {args.task}")
    if args.full and given:
        parser.error(f"argument --full: fixes the grid; drop {', '.join(given)}")
    refuse_repeats(parser, [("--seeds", args.seeds), *grid.items()])
    spec = get_task(args.task)
    rules.check_run_options(parser, args, rules.regimes_in_play(spec, args, every=args.full))
    why = unwritable(args.out)
    if why is not None:
        parser.error(f"argument --out: {why}")
    try:
        world = world_size_from_env()
    except ValueError as e:
        parser.error(str(e))
    if world > 1:
        parser.error(
            f"compare runs in one process, not under torchrun (WORLD_SIZE={world}); "
            "run `labelsmooth train` under torchrun for data-parallel training"
        )


def execute(args: argparse.Namespace) -> int:
    """Build the sections (the task's default grid, or --full's) and run the comparison."""
    from labelsmooth.experiment.train.compare import (
        FULL_DISTILL,
        FULL_SECTIONS,
        Section,
        default_sections,
        run_compare,
    )

    if args.full:
        sections = list(FULL_SECTIONS)
    else:
        d = default_sections(args.task)[0]
        sections = [
            Section(
                ds,
                tuple(args.label_smoothing or d.epsilons),
                tuple(args.conventions or d.conventions),
                d.seeds,
                args.regime or d.regime,
                task=args.task,
            )
            for ds in (args.dataset or [d.dataset])
        ]
    if args.seeds is not None:
        sections = [dataclasses.replace(s, seeds=tuple(args.seeds)) for s in sections]
    overrides = rules.run_overrides(args)  # on each regime's preset (see rules)
    warn_if_busy(rules.run_config(args, sections[0].regime_name).num_threads)
    distill = dataclasses.replace(FULL_DISTILL, seeds=sections[0].seeds) if args.full else None
    run_compare(
        sections,
        None,
        args.out,
        overrides=overrides,
        distill=distill,
        resume=args.resume,
        fallback=not args.no_fallback,
        plots=not args.no_plots,
        progress=progress_flag(args),
    )
    return 0
