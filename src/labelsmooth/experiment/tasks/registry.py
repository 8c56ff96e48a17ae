"""The task registry: what a task is (:class:`Task`; :class:`LoadedTask`, the base of one built
on loaded data), what it declares (:class:`TaskSpec`), and the table of registered tasks.

A task declares in one :class:`TaskSpec` everything the application needs from it:

* its **models** (:class:`ModelSpec`: name, the :class:`TrainConfig` fields it reads and its own
  defaults of them, how a table names it) and its **datasets** (which specifications it takes);
* its **regimes** (named presets of per-run settings; the first is the default of every command)
  and its **options** (:class:`TaskOption`: stored in ``TrainConfig.options``, each with its CLI
  flag, rule, default and the models it applies to);
* its **data** (``load_data``: loaded once per dataset and shared by every run of a grid) and
  how a run is built on it (``make_task``);
* its **record and report**: what a finished run adds to its record (``summarize_run``), the
  metrics a comparison averages over seeds (:class:`Metric`), the table's columns
  (:class:`Column`) and header, and optional plots.

The training loop (:mod:`labelsmooth.experiment.train.trainer`), the comparison
(:mod:`~labelsmooth.experiment.train.compare`), its report and the command line read these
declarations only, so adding a task is one task file (a :class:`TaskSpec` passed to
:func:`register_task`), its model, its data and its tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch
from torch import nn

from labelsmooth.experiment.config import FieldRule, TrainConfig

__all__ = [
    "Task",
    "LoadedTask",
    "TaskOption",
    "ModelSpec",
    "Metric",
    "Column",
    "Grid",
    "TaskSpec",
    "register_task",
    "unregister_task",
    "get_task",
    "task_names",
    "registered_tasks",
    "resolve",
]


class Task(Protocol):
    """What the training loop needs from a task (one run: its config and its data)."""

    def num_batches(self) -> int:
        """Optimiser steps per epoch."""
        ...

    def build_model(self) -> nn.Module:
        """A freshly initialised model (the loop seeds the global generators first)."""
        ...

    def train_batches(
        self, generator: torch.Generator, start: int, resume_state: torch.Tensor | None
    ) -> Iterator[Any]:
        """One epoch's training batches from batch ``start`` on.

        All of the epoch's randomness (order, augmentation) is drawn from ``generator``, which
        the loop seeds from ``(seed, epoch)``. When resuming mid-epoch, ``resume_state`` is the
        generator's state saved at that point: draw the epoch's order first, then restore it.
        """
        ...

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        """The batch's mean training loss (a scalar to backpropagate) and its example count.

        A loss that keeps state across steps (online label smoothing's statistics) is built by
        an optional ``build_loss()`` method returning that ``nn.Module`` (or None for a
        stateless loss): the loop calls it in setup, after seeding, and then keeps its state
        in every checkpoint (``state_dict``), restores it on resume and, when the module has
        a ``next_epoch()`` method, calls it after each epoch's last step (before the
        evaluation). Under torchrun, ``next_epoch`` runs on every rank (it may all-reduce).
        """
        ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Test metrics of ``model``, recorded in every epoch's history row.

        Data-parallel runs (:mod:`labelsmooth.experiment.train.distributed`) call
        ``evaluate(model, rank=r, world_size=w)`` when the method accepts those keywords: then
        evaluate only the r-th of w shards of the test data and sum the metric state over the
        ranks (:meth:`~labelsmooth.metrics.CalibrationMeter.all_reduce`) before computing, so
        every rank returns the metrics of the whole test set. Without them, every rank
        evaluates all of it. A batch that is not a tensor or a tuple, list or dict of tensors
        of one leading size needs a ``shard_batch(batch, rank, world_size)`` method too.
        """
        ...

    def describe(self, metrics: dict[str, float]) -> str:
        """The metrics as a short log text (names and units)."""
        ...


_DataT = TypeVar("_DataT")
_LoadedT = TypeVar("_LoadedT", bound="LoadedTask[Any]")


@dataclass
class LoadedTask(Generic[_DataT]):
    """The base of a task that is one run's ``config`` and the ``data`` it was loaded for; a
    subclass names its loader :attr:`load_data`, from which :meth:`from_config` builds it.

    Attributes:
        config: The run.
        data: What :attr:`load_data` loaded for it.
    """

    config: TrainConfig
    data: _DataT

    #: The task's loader: ``load_data(config, log=log)``, the data of ``config.dataset``
    #: (``staticmethod(prepare_data)``).
    load_data: ClassVar[Callable[..., Any]]

    @classmethod
    def from_config(
        cls: type[_LoadedT], config: TrainConfig, *, log: Callable[[str], None] | None = print
    ) -> _LoadedT:
        """Load ``config.dataset`` (the task's :attr:`load_data`) and build the task."""
        return cls(config, cls.load_data(config, log=log))


@dataclass(frozen=True)
class TaskOption:
    """One option of a task, stored as ``TrainConfig.options[key]``.

    Attributes:
        key: Its name in ``TrainConfig.options`` (``"seq_len"``).
        flag: Its command-line flag (``"--seq-len"``).
        parse: Text to value (``int``), before ``rule`` is applied.
        rule: Which values it accepts.
        default: Its value when not given.
        help: The ``--help`` text (without the default, which is added).
        metavar: The ``--help`` placeholder.
        models: The models it applies to (empty: every model of the task); given with another
            model it is refused.
    """

    key: str
    flag: str
    parse: Callable[[str], Any]
    rule: FieldRule
    default: Any
    help: str
    metavar: str | None = None
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """A model of a task.

    Attributes:
        name: The ``TrainConfig.model`` value (``"mlp"``).
        fields: The :class:`TrainConfig` fields it reads (``("width",)``); the command refuses
            the others' flags with this model (``--depth`` with an MLP).
        defaults: Its own defaults of those fields, applied when the model is chosen by name
            and the field is not given (the MLP's width is not the ResNet's).
        describe: Its name in a table, from a config dict (``"MLP 1200-1200"``).
    """

    name: str
    fields: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    describe: Callable[[Mapping[str, Any]], str] | None = None

    def title(self, config: Mapping[str, Any]) -> str:
        """The table's name of this model in ``config``."""
        return self.describe(config) if self.describe is not None else self.name


@dataclass(frozen=True)
class Metric:
    """A per-run number a comparison averages over seeds: ``get(record) * scale``, plotted with
    the axis ``label``."""

    get: Callable[[Mapping[str, Any]], float]
    scale: float = 1.0
    label: str = ""


@dataclass(frozen=True)
class Column:
    """A table column: the mean (± std) of metric ``key`` with ``digits`` decimals; with
    ``delta`` the difference to the same group's baseline (``"—"`` on the baseline row)."""

    header: str
    key: str
    digits: int = 2
    delta: bool = False


@dataclass(frozen=True)
class Grid:
    """The default grid of ``labelsmooth compare --task <name>``."""

    dataset: str
    epsilons: tuple[float, ...] = (0.0, 0.1)
    conventions: tuple[str, ...] = ("uniform",)
    seeds: tuple[int, ...] = (0, 1, 2)


def _no_check(config: TrainConfig) -> None:
    return None


def _no_fallback(dataset: str) -> list[str]:
    return []


@dataclass(frozen=True)
class TaskSpec:
    """Everything a task declares (see the module docstring); register it with
    :func:`register_task`.

    Attributes:
        name: The ``TrainConfig.task`` value and ``--task`` choice.
        help: One line for ``--task``'s help.
        models: Its models; the first regime's model is the default.
        datasets: The dataset names it lists in messages and ``--help`` (its built-ins).
        accepts: Whether a dataset specification is one of this task's.
        regimes: Name -> preset :class:`TrainConfig` (the first is the default regime).
        load_data: ``load_data(config, log)``: the prepared data of ``config.dataset``.
        make_task: ``make_task(config, data)``: the :class:`Task` of one run.
        summarize_run: ``summarize_run(task, result, arrays_path)``: what a finished run (its
            :class:`~labelsmooth.experiment.train.TrainResult`) adds to its comparison
            record: ``metrics`` and ``metrics_after_temperature`` (dicts), ``temperature``,
            ``sizes`` and any extra part; ``arrays_path`` (or None) is where the first seed
            may keep arrays for plots.
        metrics: Summary metric key -> :class:`Metric` (averaged over seeds in the report).
        columns: The comparison table's task columns (after Model, Epochs, dtype, Batch, LR,
            Setting).
        table_header: ``table_header(dataset, regime, records, model, seconds)``: the
            sentence above one table.
        grid: The default grid of ``compare --task <name>``.
        losses: The ``TrainConfig.loss`` values it trains with (default: ``"ce"`` only; the
            image task also takes ``"ols"``).
        options: Its own options (``TrainConfig.options``).
        check: Extra checks of a config (``ValueError``), after models, datasets, options.
        fallbacks: ``fallbacks(dataset)``: datasets to try when ``dataset`` is unavailable.
        data_fields: The :class:`TrainConfig` fields ``load_data`` reads (runs that agree on
            them share one load).
        write_plots: ``write_plots(sections, records, plot_dir, classes)`` or None.
        display_name: ``display_name(dataset)``: the dataset's name in table headers.
        regimes_help: What its regimes are, for ``--regime``'s help (default: their names).
        run_line: ``run_line(record)``: the log line of a finished run in a comparison
            (default: the task's ``describe`` of the final metrics and the training time).
    """

    name: str
    help: str
    models: tuple[ModelSpec, ...]
    datasets: tuple[str, ...]
    accepts: Callable[[str], bool]
    regimes: Mapping[str, TrainConfig]
    load_data: Callable[..., Any]
    make_task: Callable[[TrainConfig, Any], Task]
    summarize_run: Callable[[Any, Any, Path | None], dict[str, Any]]
    metrics: Mapping[str, Metric]
    columns: tuple[Column, ...]
    table_header: Callable[[str, str, Sequence[Mapping[str, Any]], str, float], str]
    grid: Grid
    losses: tuple[str, ...] = ("ce",)
    options: tuple[TaskOption, ...] = ()
    check: Callable[[TrainConfig], None] = _no_check
    fallbacks: Callable[[str], list[str]] = _no_fallback
    data_fields: tuple[str, ...] = ("data_dir", "train_size", "val_size", "data_seed")
    write_plots: Callable[..., None] | None = None
    display_name: Callable[[str], str] = str
    regimes_help: str = ""
    run_line: Callable[[Mapping[str, Any]], str] | None = None

    def __post_init__(self) -> None:
        if not self.models or not self.regimes:
            raise ValueError(f"task {self.name!r} must declare at least one model and regime")

    @property
    def default_regime(self) -> str:
        """The first regime: every command's default for this task."""
        return next(iter(self.regimes))

    def model(self, name: str) -> ModelSpec:
        """The :class:`ModelSpec` called ``name`` (``ValueError`` naming the task's models)."""
        for m in self.models:
            if m.name == name:
                return m
        raise ValueError(
            f"model={name!r} does not fit task={self.name!r} (task {self.name!r} takes model "
            f"{', '.join(m.name for m in self.models)})"
        )

    def configure(self, preset: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
        """``preset`` with ``overrides`` (field -> value) replaced; when they name another model
        than the preset's, that model's own defaults first (``model="mlp"`` brings the MLP's
        width, not the ResNet's)."""
        fields = dict(overrides)
        model = fields.get("model", preset.model)
        if model != preset.model:
            fields = {**self.model(model).defaults, **fields}
        return dataclasses.replace(preset, **fields)

    def option(self, config: TrainConfig, key: str) -> Any:
        """The value of option ``key`` in ``config`` (its default when not given)."""
        for opt in self.options:
            if opt.key == key:
                return config.options.get(key, opt.default)
        raise KeyError(f"task {self.name!r} has no option {key!r}")


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to the registry (``ValueError`` if its name is taken or one of its flags is
    another task's with another meaning); returns it."""
    if spec.name in _TASKS:
        raise ValueError(f"a task named {spec.name!r} is already registered")
    for other in _TASKS.values():
        for mine in spec.options:
            for theirs in other.options:
                if mine.flag == theirs.flag and mine.key != theirs.key:
                    raise ValueError(
                        f"task {spec.name!r}: option {mine.flag} is task {other.name!r}'s "
                        f"flag for {theirs.key!r}"
                    )
    _TASKS[spec.name] = spec
    return spec


def unregister_task(name: str) -> None:
    """Remove the task ``name`` (a task registered for a test, say); no error if absent."""
    _TASKS.pop(name, None)


def get_task(name: str) -> TaskSpec:
    """The registered task ``name`` (``ValueError`` naming the registered ones)."""
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"task must be one of {', '.join(_TASKS)}, got task={name!r}") from None


def task_names() -> tuple[str, ...]:
    """The registered tasks' names, in registration order."""
    return tuple(_TASKS)


def registered_tasks() -> tuple[TaskSpec, ...]:
    """The registered tasks, in registration order."""
    return tuple(_TASKS.values())


def resolve(config: TrainConfig) -> TrainConfig:
    """Check that ``config``'s model, dataset and options fit its task; return it with every
    option of the task filled in (its default where not given).

    Raises:
        ValueError: naming the field and the value (an unknown task, a model of another
            task, a dataset the task does not take, an unknown or refused option).
    """
    spec = get_task(config.task)
    spec.model(config.model)
    if not spec.accepts(config.dataset):
        raise ValueError(
            f"dataset={config.dataset!r} does not fit task={config.task!r} (task "
            f"{config.task!r} takes dataset {', '.join(spec.datasets)})"
        )
    if config.loss not in spec.losses:
        raise ValueError(
            f"loss={config.loss!r} does not fit task={config.task!r} (task {config.task!r} "
            f"takes loss {', '.join(spec.losses)})"
        )
    known = {opt.key: opt for opt in spec.options}
    unknown = sorted(set(config.options) - set(known))
    if unknown:
        raise ValueError(
            f"options has {', '.join(map(repr, unknown))}, which task {config.task!r} does not "
            f"declare (its options: {', '.join(known) or 'none'})"
        )
    options = {}
    for key, opt in known.items():
        value = config.options.get(key, opt.default)
        if not opt.rule.ok(value):
            raise ValueError(f"{key} must be {opt.rule.text}, got {key}={value!r}")
        options[key] = value
    spec.check(config)
    return dataclasses.replace(config, options=options) if options != config.options else config
