"""The one table of per-run option rules, shared by every subcommand that trains.

Every per-run option (:data:`RUN_OPTIONS`, plus each registered task's own options) is declared
once here: its flag, the :class:`~labelsmooth.experiment.config.TrainConfig` field or task
option it sets, its parser and its help. The rules every subcommand applies the same way:

* ``--task`` picks a registered task and ``--regime`` one of its presets (default: the task's
  first, for images ``fitted``); every per-run option defaults to the regime's value;
* ``--model`` replaces the regime's model, with the model's own defaults for the fields it
  reads (``--model mlp`` gets the MLP's width, not the ResNet's);
* an option that the chosen model (or a regime's model in play) does not read is refused in
  one line (``--depth`` with an MLP), as is a task option with another task;
* the dataset, the model and the options must fit the task
  (:func:`labelsmooth.experiment.tasks.resolve`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from labelsmooth.experiment.config import TrainConfig
from labelsmooth.experiment.tasks import TaskSpec, get_task, registered_tasks, resolve, task_names

from .common import field_type, progress_flag, refuse_repeats, unwritable, warn_if_busy

__all__ = [
    "RunOption",
    "RUN_OPTIONS",
    "add_task_and_regime",
    "add_run_options",
    "check_run_options",
    "check_grid",
    "grid_run",
    "regimes_in_play",
    "run_config",
    "run_overrides",
]


def _train_size(text: str) -> int:
    """``--train-size``/``--test-size``: an integer >= 1, or 0 for the whole split (None)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 1, or 0 for the whole split, got {text!r}"
        )
    return value  # 0 becomes None (the whole split) in the config


@dataclass(frozen=True)
class RunOption:
    """A per-run option: ``flag`` sets ``TrainConfig.<field>`` (or, with ``task_option``, the
    task's option ``field``). Which models read it comes from the tasks' model declarations
    (a model reads ``field`` when its :class:`~labelsmooth.experiment.tasks.ModelSpec` lists
    it), except for ``tasks``-limited options (data settings of one task)."""

    flag: str
    field: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None
    tasks: tuple[str, ...] = ()
    task_option: bool = False


#: The per-run options of ``train``, ``compare`` and ``distill``, in ``--help`` order.
RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("--depth", "depth", field_type("depth", int), "ResNet depth 6n+2: 8, 14, 20, ...",
              "D"),
    RunOption("--width", "width", field_type("width", int),
              "ResNet: channels of the first stage; MLP: hidden units", "W"),
    RunOption("--epochs", "epochs", field_type("epochs", int), "training epochs, >= 1", "N"),
    RunOption("--batch-size", "batch_size", field_type("batch_size", int),
              "training batch size, >= 1", "B"),
    RunOption("--lr", "lr", field_type("lr", float),
              "peak learning rate (finite, > 0; cosine to 0)", "LR"),
    RunOption("--weight-decay", "weight_decay", field_type("weight_decay", float),
              "L2 weight decay, >= 0", "WD"),
    RunOption("--warmup-epochs", "warmup_epochs", field_type("warmup_epochs", float),
              "linear warm-up in epochs, >= 0", "E"),
    RunOption("--train-size", "train_size", _train_size,
              "stratified training subset size; 0: the whole training split", "N"),
    RunOption("--test-size", "test_size", _train_size,
              "stratified test subset size for quick runs; 0: the whole test split", "N"),
    RunOption("--val-size", "val_size", field_type("val_size", int),
              "held-out validation examples for temperature scaling; 0: none carved from the "
              "training split (a dataset with its own validation split, like MNIST, keeps it)",
              "N"),
    RunOption("--threads", "num_threads", field_type("num_threads", int),
              "torch threads while training, >= 1", "T"),
)  # fmt: skip
#: Fields every model of a task reads (the others are model-specific: ModelSpec.fields).
_MODEL_FIELDS = frozenset({"depth", "width"})


def _task_options() -> list[RunOption]:
    """Each registered task's own options, as run options (one per flag)."""
    seen: dict[str, RunOption] = {}
    for spec in registered_tasks():
        for opt in spec.options:
            seen.setdefault(
                opt.flag,
                RunOption(opt.flag, opt.key, _option_type(opt), f"--task {spec.name}: {opt.help}",
                          opt.metavar, (spec.name,), task_option=True),
            )  # fmt: skip
    return list(seen.values())


def _option_type(opt: Any) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = opt.parse(text)
        except ValueError:
            value = None
        if value is None or not opt.rule.ok(value):
            raise argparse.ArgumentTypeError(f"must be {opt.rule.text}, got {text!r}")
        return value

    return convert


def _all_options() -> list[RunOption]:
    return [*RUN_OPTIONS, *_task_options()]


def _regime_default(option: RunOption) -> str:
    """``--help``'s default of a per-run option: each regime's value (or the task's)."""
    values = []
    for spec in registered_tasks():
        if option.tasks and spec.name not in option.tasks:
            continue
        if option.task_option:
            opt = next(o for o in spec.options if o.key == option.field)
            values.append(f"{opt.default}")
            continue
        for name, preset in spec.regimes.items():
            model = spec.model(preset.model)
            if option.field in _MODEL_FIELDS and option.field not in model.fields:
                continue
            values.append(f"{name} {getattr(preset, option.field)}")
    if option.field in ("train_size", "test_size"):  # None: the whole split, shown as 0
        values = [v.replace("None", "0") for v in values]
    if len({v.split(" ")[-1] for v in values}) == 1:  # the same in every regime
        return values[0].split(" ")[-1]
    return ", ".join(values)


def add_task_and_regime(p: argparse.ArgumentParser) -> None:
    """``--task`` and ``--regime`` (the same meaning in every subcommand that trains)."""
    tasks = registered_tasks()
    p.add_argument(
        "--task",
        default=tasks[0].name,
        choices=task_names(),
        help="what is learned: "
        + "; ".join(f"{t.name}: {t.help}" for t in tasks)
        + f" (default: {tasks[0].name})",
    )
    regimes = list(dict.fromkeys(r for t in tasks for r in t.regimes))
    p.add_argument(
        "--regime",
        default=None,
        choices=regimes,
        help="the preset of per-run settings; "
        + "; ".join(f"--task {t.name}: {t.regimes_help or ', '.join(t.regimes)}" for t in tasks)
        + "; the per-run options below replace the regime's settings (default: the task's "
        "first: " + ", ".join(f"{t.name} {t.default_regime}" for t in tasks) + ")",
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``--model`` and every per-run option, all defaulting to None: the regime's value."""
    models = [m.name for t in registered_tasks() for m in t.models]
    p.add_argument(
        "--model",
        default=None,
        choices=models,
        help="model family, with its own defaults (default: the regime's: "
        + ", ".join(
            f"{t.name} {name} {preset.model}"
            for t in registered_tasks()
            for name, preset in t.regimes.items()
        )
        + ")",
    )
    for opt in _all_options():
        p.add_argument(
            opt.flag,
            dest=opt.field,
            type=opt.parse,
            default=None,
            metavar=opt.metavar,
            help=f"{opt.help} (default: the regime's: {_regime_default(opt)})",
        )
    flips = p.add_mutually_exclusive_group()
    flips.add_argument(
        "--hflip",
        dest="hflip",
        action="store_const",
        const=True,
        default=None,
        help="--task image: random horizontal flips (default: the regime's; short: on for "
        "Fashion-MNIST, off otherwise; fitted: off)",
    )
    flips.add_argument(
        "--no-hflip", dest="hflip", action="store_const", const=False, help="no flips"
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--data-dir",
        default=None,
        help="dataset cache (default: $LABELSMOOTH_DATA_DIR or the user cache dir)",
    )


def regimes_in_play(spec: TaskSpec, args: argparse.Namespace, every: bool = False) -> list[str]:
    """The regimes a command runs: all of the task's with ``every`` (``compare --full``), else
    ``--regime`` or the task's first."""
    return list(spec.regimes) if every else [args.regime or spec.default_regime]


def check_run_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, regimes: Sequence[str]
) -> None:
    """The rules of the module docstring, each a one-line error naming the flag."""
    spec = get_task(args.task)
    if args.regime is not None and args.regime not in spec.regimes:
        parser.error(
            f"argument --regime: {args.regime} is not a regime of --task {spec.name} (its "
            f"regimes: {', '.join(spec.regimes)})"
        )
    if args.model is not None and args.model not in [m.name for m in spec.models]:
        parser.error(
            f"argument --model: {args.model} does not fit --task {spec.name} (--task "
            f"{spec.name} takes {', '.join(m.name for m in spec.models)})"
        )
    datasets = args.dataset if isinstance(args.dataset, list) else [args.dataset]
    for ds in [d for d in datasets if d is not None]:
        if not spec.accepts(ds):
            parser.error(
                f"argument --dataset: {ds} does not fit --task {spec.name} (--task {spec.name} "
                f"takes {', '.join(spec.datasets)})"
            )
    for opt in _all_options():
        if getattr(args, opt.field, None) is not None:
            _check_applies(parser, spec, args, opt, regimes)
    if args.hflip is not None and "hflip" not in spec.data_fields:
        parser.error(f"argument --hflip/--no-hflip: an image-task option; --task {spec.name} "
                     "does not read it")  # fmt: skip
    for regime in regimes:
        try:
            resolve(run_config(args, regime))
        except ValueError as e:
            parser.error(_as_argument_error(str(e)))


def check_grid(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    lists: Sequence[tuple[str, Sequence[Any] | None]],
    regimes: Sequence[str],
) -> None:
    """A grid command's checks (``compare``, ``distill``): no value twice in its ``lists``
    (flag, values), the run rules of every regime in play, a writable ``--out``."""
    refuse_repeats(parser, lists)
    check_run_options(parser, args, regimes)
    why = unwritable(args.out)
    if why is not None:
        parser.error(f"argument --out: {why}")


def grid_run(args: argparse.Namespace, regime: str) -> dict[str, Any]:
    """A grid command's keyword arguments of ``run_compare``/``run_distill`` (``out``, the
    per-run ``overrides``, ``resume``, ``fallback``, ``plots``, ``progress``); first the
    busy-machine warning for ``regime``'s thread count, when it applies."""
    warn_if_busy(run_config(args, regime).num_threads)
    return {
        "out": args.out,
        "overrides": run_overrides(args),
        "resume": args.resume,
        "fallback": not args.no_fallback,
        "plots": not args.no_plots,
        "progress": progress_flag(args),
    }


def _check_applies(
    parser: argparse.ArgumentParser,
    spec: TaskSpec,
    args: argparse.Namespace,
    opt: RunOption,
    regimes: Sequence[str],
) -> None:
    if opt.tasks and spec.name not in opt.tasks:
        parser.error(
            f"argument {opt.flag}: an option of --task {', '.join(opt.tasks)}; drop it with "
            f"--task {spec.name}"
        )
    if opt.field not in _MODEL_FIELDS:
        return
    takers = [m.name for m in spec.models if opt.field in m.fields]
    for regime in regimes:
        model = args.model or spec.regimes[regime].model
        if opt.field in spec.model(model).fields:
            continue
        if args.model is not None:
            parser.error(
                f"argument {opt.flag}: --model {model} does not take it (an option of "
                f"{', '.join(takers)})"
            )
        others = [r for r, c in spec.regimes.items() if opt.field in spec.model(c.model).fields]
        hint = " or ".join(
            [f"--model {t}" for t in takers] + [f"--regime {r}" for r in others if r != regime]
        )
        parser.error(
            f"argument {opt.flag}: the {regime} regime's model is {model}, which does not take "
            f"it (an option of {', '.join(takers)}){'; add ' + hint if hint else ''}"
        )


def _as_argument_error(message: str) -> str:
    """A library ValueError (``d_model must be divisible by n_heads, ...``) as the command's
    error: the flag it concerns first when one does."""
    for opt in _all_options():
        if message.startswith(f"{opt.field} ") or f"{opt.field}=" in message.split(",")[0]:
            return f"argument {opt.flag}: {message}"
    return message


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the per-run options given replace in a regime's preset (applied
    by :meth:`~labelsmooth.experiment.tasks.TaskSpec.configure`, which adds the model's own
    defaults when ``--model`` differs from the regime's)."""
    spec = get_task(args.task)
    fields: dict[str, Any] = {}
    if args.model is not None:
        fields["model"] = args.model
    options: dict[str, Any] = {}
    for opt in _all_options():
        value = getattr(args, opt.field, None)
        if value is None or (opt.tasks and spec.name not in opt.tasks):
            continue
        if opt.task_option:
            options[opt.field] = value
        elif opt.field in ("train_size", "test_size"):
            fields[opt.field] = value or None  # 0: the whole split
        else:
            fields[opt.field] = value
    if args.hflip is not None:
        fields["hflip"] = args.hflip
    if args.data_dir is not None:
        fields["data_dir"] = args.data_dir
    if options:
        fields["options"] = options
    return fields


def run_config(args: argparse.Namespace, regime: str, **fields: Any) -> TrainConfig:
    """The TrainConfig of one run: the regime's preset, the per-run options, then ``fields``
    (dataset, ε, convention, seed, ...)."""
    spec = get_task(args.task)
    return spec.configure(spec.regimes[regime], {**run_overrides(args), **fields})
