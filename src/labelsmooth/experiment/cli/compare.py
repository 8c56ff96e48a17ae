"""``labelsmooth compare``: baseline against label smoothing over ε × conventions × seeds, and
online label smoothing (``--ols``) beside them."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from labelsmooth.experiment.config import CONVENTIONS

from . import rules
from .common import DATASET_HELP, add_field_option, add_results_options, dataset_type

__all__ = ["add_subcommand", "check_arguments", "execute"]


#: ``--ols`` alone: the paper's α.
DEFAULT_OLS_ALPHA = 0.5


def _shown(values: Any) -> str:
    return " ".join(map(str, values))


def _values(p: argparse.ArgumentParser, flag: str, field: str, parse: Any, help: str) -> None:
    """A list option (``nargs="+"``) of TrainConfig field ``field``, None when not given."""
    metavar = {"label_smoothing": "EPS", "seed": "SEED", "ols_alpha": "ALPHA"}[field]
    add_field_option(p, flag, field, parse, help, metavar=metavar, nargs="+")


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
    lm = get_task("lm").grid
    _values(cmp, "--label-smoothing", "label_smoothing", float,
            f"ε values in [0, 1); 0 is the baseline (default: {_shown(d.epsilons)}; --task "
            f"lm: {_shown(lm.epsilons)})")  # fmt: skip
    cmp.add_argument(
        "--conventions",
        nargs="+",
        default=None,
        choices=CONVENTIONS,
        metavar="CONV",
        help=f"conventions of every ε > 0, from {', '.join(CONVENTIONS)} "
        f"(default: {_shown(d.conventions)})",
    )
    seeds = f"{_shown(d.seeds)}; --task lm: {_shown(lm.seeds)}"
    _values(cmp, "--seeds", "seed", int, f"seeds, each >= 0 and given once (default: {seeds})")
    cmp.add_argument(
        "--ols",
        action="store_true",
        help="--task image: add online label smoothing runs (Zhang et al. 2021: "
        "α·CE(one-hot) + (1−α)·CE(S[y]), S the mean prediction of each class's correct "
        "training samples in the previous epoch), one row per --ols-alpha, beside the ε rows",
    )
    _values(cmp, "--ols-alpha", "ols_alpha", float,
            f"with --ols: α values in [0, 1], the weight of the one-hot part (default: "
            f"{DEFAULT_OLS_ALPHA}, the paper's)")  # fmt: skip
    add_results_options(cmp, "compare-results")
    rules.add_run_options(cmp)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--full against the grid options, repeats, the shared run rules, --out, torchrun."""
    from labelsmooth.experiment.tasks import get_task
    from labelsmooth.experiment.train.distributed import world_size_from_env

    grid = {"--dataset": args.dataset, "--label-smoothing": args.label_smoothing}
    grid["--conventions"] = args.conventions
    given = [flag for flag, v in grid.items() if v is not None]
    given += ["--ols"] if args.ols else []
    if args.regime is not None:
        given.append("--regime")
    if args.full and args.task != "image":
        parser.error(f"argument --full: the image reproduction; drop it with --task {args.task}")
    if args.full and given:
        parser.error(f"argument --full: fixes the grid; drop {', '.join(given)}")
    if args.ols_alpha is not None and not args.ols:
        parser.error("argument --ols-alpha: the α of --ols's runs; add --ols (or drop it)")
    spec = get_task(args.task)
    if args.ols and "ols" not in spec.losses:
        parser.error(
            f"argument --ols: online label smoothing is not a loss of --task {args.task} (it "
            f"takes {', '.join(spec.losses)}); drop --ols or use --task image"
        )
    repeats = [("--seeds", args.seeds), *grid.items(), ("--ols-alpha", args.ols_alpha)]
    rules.check_grid(parser, args, repeats, rules.regimes_in_play(spec, args, every=args.full))
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
                ols_alphas=tuple(args.ols_alpha or [DEFAULT_OLS_ALPHA]) if args.ols else (),
            )
            for ds in (args.dataset or [d.dataset])
        ]
    if args.seeds is not None:
        sections = [dataclasses.replace(s, seeds=tuple(args.seeds)) for s in sections]
    distill = dataclasses.replace(FULL_DISTILL, seeds=sections[0].seeds) if args.full else None
    # the per-run options on each regime's preset (see rules)
    run_compare(sections, None, distill=distill, **rules.grid_run(args, sections[0].regime_name))
    return 0
