"""The comparison recipe: a baseline against label smoothing, over ε × conventions × seeds, for
any registered task.

Reads top to bottom: plan the runs, load each dataset once through the task's ``load_data``
(falling back to another dataset the task names when one cannot be fetched), create the
results folder, train every run sequentially in-process, let the task summarize it (for
images: a temperature fitted on the held-out validation split, metrics on the test split),
then hand the records to :mod:`labelsmooth.experiment.report` for the tables and to the task
for its plots. Per run it writes

* ``runs/<run>.json`` (config, per-epoch history, test metrics, temperature, metrics after T)
  and ``runs/<run>/checkpoint.pt`` (resumable),
* for images, ``runs/<run>.npz`` for the first seed (test logits, features, labels,
  final-layer weight: what the reliability and projection plots need).

The image task's two training regimes (:data:`REGIMES`) show when smoothing helps calibration:
``"fitted"``
(a fully connected net trained to fit its training subset: an overconfident baseline, where
Müller et al.'s findings were made) and ``"short"`` (a 5-epoch ResNet: a baseline that is
already calibrated). ``DEFAULT_SECTIONS`` is what ``labelsmooth compare`` (and ``make demo``)
runs; ``FULL_SECTIONS`` plus :data:`FULL_DISTILL` (``--full``) is the committed reproduction.
The default's rows are the matching rows of ``--full`` (same machine).

:func:`run_distill` is the third finding: teachers with ε = 0 and ε > 0 (runs of the fitted
regime, reused when already in the results folder), then students trained by
:func:`labelsmooth.distillation_loss` over a grid of temperatures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labelsmooth.experiment import report
from labelsmooth.experiment.config import TrainConfig, check_field, config_differences
from labelsmooth.experiment.data import DatasetSplits, DataUnavailableError
from labelsmooth.experiment.files import write_json
from labelsmooth.experiment.tasks import (
    Distillation,
    ImageClassification,
    TaskSpec,
    get_task,
    resolve,
)
from labelsmooth.experiment.tasks.distillation import write_distill_plot, write_distill_tables
from labelsmooth.experiment.tasks.image import FITTED_TRAIN, REGIMES, SHORT_TRAIN
from labelsmooth.experiment.tasks.image_metrics import calibrate, train_metrics
from labelsmooth.experiment.train.checkpoint import load_checkpoint
from labelsmooth.experiment.train.trainer import TrainResult, train

__all__ = [
    "REGIMES",
    "Section",
    "DEFAULT_SECTIONS",
    "FULL_SECTIONS",
    "DEFAULT_TRAIN",
    "FITTED_TRAIN",
    "DistillGrid",
    "DEFAULT_DISTILL",
    "FULL_DISTILL",
    "RunSpec",
    "plan_runs",
    "section_config",
    "default_sections",
    "run_compare",
    "run_distill",
]

#: The image task's short regime (:data:`labelsmooth.experiment.tasks.image.SHORT_TRAIN`).
DEFAULT_TRAIN = SHORT_TRAIN


@dataclass(frozen=True)
class Section:
    """One dataset's grid in one regime of a task: every ε > 0 is combined with every
    convention, plus the ``extra`` (ε, convention) pairs; ε = 0 (the baseline) runs once per
    seed. Values are checked as :class:`TrainConfig` checks them; ``regime`` is one of the
    task's regimes (default: its first, for images ``"fitted"``, as on the command line)."""

    dataset: str
    epsilons: tuple[float, ...] = (0.0, 0.1)
    conventions: tuple[str, ...] = ("uniform",)
    seeds: tuple[int, ...] = (0, 1, 2)
    regime: str | None = None
    extra: tuple[tuple[float, str], ...] = ()
    task: str = "image"

    def __post_init__(self) -> None:
        check_field("dataset", self.dataset)
        spec = get_task(self.task)
        if self.regime is None:
            object.__setattr__(self, "regime", spec.default_regime)
        if self.regime not in spec.regimes:
            raise ValueError(
                f"regime must be one of {', '.join(spec.regimes)} (task {self.task!r}), got "
                f"regime={self.regime!r}"
            )
        for eps, conv in self.extra:
            check_field("label_smoothing", eps)
            check_field("convention", conv)
        for name, values, field in (
            ("epsilons", self.epsilons, "label_smoothing"),
            ("conventions", self.conventions, "convention"),
            ("seeds", self.seeds, "seed"),
        ):
            if len(values) == 0:
                raise ValueError(f"Section.{name} must not be empty")
            for v in values:
                check_field(field, v)

    @property
    def regime_name(self) -> str:
        """The regime (never None after construction)."""
        assert self.regime is not None
        return self.regime


def default_sections(task: str = "image") -> tuple[Section, ...]:
    """``labelsmooth compare --task <task>`` with no grid options: the task's default grid in
    its default regime."""
    g = get_task(task).grid
    return (Section(g.dataset, g.epsilons, g.conventions, g.seeds, task=task),)


#: ``labelsmooth compare`` with no arguments (``make demo``): the fitted regime, ε 0 / 0.05 /
#: 0.1, 3 seeds (9 runs; measured time in docs/results.md).
DEFAULT_SECTIONS = default_sections("image")
_FULL_EPS = (0.0, 0.01, 0.05, 0.1, 0.2)
#: ``labelsmooth compare --full``: both regimes × ε 0/0.01/0.05/0.1/0.2 uniform and 0.1
#: "others", 3 seeds (36 runs), then :data:`FULL_DISTILL`.
FULL_SECTIONS = tuple(
    Section("fashion-mnist", _FULL_EPS, ("uniform",), (0, 1, 2), regime, extra=((0.1, "others"),))
    for regime in ("fitted", "short")
)


@dataclass(frozen=True)
class DistillGrid:
    """Teachers (fitted-regime runs with each ε of ``teacher_epsilons``, uniform convention)
    and their students (an MLP of ``student_width`` units per hidden layer, trained by
    :func:`labelsmooth.distillation_loss` at every temperature, weight ``alpha`` on the soft
    term), per seed; plus one student trained alone (plain cross-entropy) per seed."""

    dataset: str = "fashion-mnist"
    teacher_epsilons: tuple[float, ...] = (0.0, 0.1)
    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    alpha: float = 0.9
    student_width: int = 800

    def __post_init__(self) -> None:
        check_field("dataset", self.dataset)
        for name, values in (
            ("teacher_epsilons", self.teacher_epsilons),
            ("temperatures", self.temperatures),
            ("seeds", self.seeds),
        ):
            if len(values) == 0 or len(set(values)) != len(values):
                raise ValueError(f"DistillGrid.{name} must be non-empty without repeats")
        for e in self.teacher_epsilons:
            check_field("label_smoothing", e)
        for s in self.seeds:
            check_field("seed", s)
        for t in self.temperatures:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1000:
                raise ValueError(f"temperatures must be numbers in (0, 1000], got {t!r}")
        if isinstance(self.alpha, bool) or not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got alpha={self.alpha!r}")
        check_field("width", self.student_width)


#: ``labelsmooth distill`` with no arguments: teachers ε 0 / 0.1, T 1 / 2 / 4, 3 seeds (T = 8
#: diverged at the fitted regime's learning rate, see docs/results.md).
DEFAULT_DISTILL = DistillGrid()
#: The distillation part of ``labelsmooth compare --full`` (teachers are the grid's runs).
FULL_DISTILL = DistillGrid()


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid."""

    name: str
    dataset: str
    label_smoothing: float
    convention: str  # "-" for the baseline
    seed: int


def plan_runs(section: Section) -> list[RunSpec]:
    """The runs of a section, seed-major (so an interrupted grid has whole seeds done).

    Names are ``<dataset>-<tag>-seed<s>`` in the short regime and
    ``<dataset>-<regime>-<tag>-seed<s>`` otherwise."""
    configs: list[tuple[float, str]] = []
    for eps in section.epsilons:
        if eps == 0:
            configs.append((0.0, "-"))
        else:
            configs.extend((float(eps), conv) for conv in section.conventions)
    configs += [(float(e), c) if e > 0 else (0.0, "-") for e, c in section.extra]
    configs = list(dict.fromkeys(configs))
    slug = report.prefix(section.dataset, section.regime_name)
    runs = []
    for seed in dict.fromkeys(section.seeds):
        for eps, conv in configs:
            tag = "baseline" if eps == 0 else f"ls{eps:g}-{conv}"
            runs.append(RunSpec(f"{slug}-{tag}-seed{seed}", section.dataset, eps, conv, seed))
    return runs


# --------------------------------------------------------------------------- the recipe


def section_config(
    section: Section, base: TrainConfig | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """A section's per-run settings: ``base`` (default: its task's preset of its regime) with
    ``overrides`` (field -> value, checked) replaced (another model than the preset's brings
    its own defaults, :meth:`TaskSpec.configure`), resolved by its task
    (:func:`~labelsmooth.experiment.tasks.resolve`: options filled in, combinations checked)."""
    spec = get_task(section.task)
    config = base if base is not None else spec.regimes[section.regime_name]
    return resolve(spec.configure(config, {**dict(overrides or {}), "dataset": section.dataset}))


def run_compare(
    sections: Sequence[Section] = DEFAULT_SECTIONS,
    base: TrainConfig | None = None,
    out: str | os.PathLike[str] = "compare-results",
    *,
    overrides: Mapping[str, Any] | None = None,
    distill: DistillGrid | None = None,
    resume: bool = False,
    fallback: bool = True,
    plots: bool = True,
    projection_classes: tuple[int, int, int] = (0, 2, 6),
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train the grid of every section and write tables, per-run JSON and plots to ``out``.

    Args:
        sections: Datasets and their ε × convention × seed grids, each in a regime of one
            task (every section of one call has the same task).
        base: Settings of every run (model, epochs, subset size, optimiser, ...); default:
            each section's regime preset (the task's ``regimes``).
        out: Results folder (created once the data are loaded).
        overrides: Fields replaced in every section's settings (the command's options).
        distill: Also run this distillation grid (:func:`run_distill`) into ``out``, right
            after the first fitted-regime section (its runs are the teachers), or at the end
            when there is none.
        resume: Skip runs whose JSON exists (same run, completed) and resume a run's
            checkpoint.
        fallback: When a dataset cannot be fetched, run another one the task names.
        plots: Write the task's plots (needs matplotlib; skipped with a message otherwise).
        projection_classes: The three classes of the penultimate-layer projection.
        progress: tqdm bars (default: when stderr is a terminal).
        log: Where messages go.

    Returns:
        ``{"records": per-run dicts, "summary": aggregated rows, "table": markdown text,
        "seconds": wall time}``.

    Raises:
        DataUnavailableError: If no section's data could be obtained (nothing is written).
        TrainingInterrupted: On Ctrl-C (the run's checkpoint is saved; ``resume=True``
            continues).
        ValueError: If the sections are of different tasks, or a setting does not fit the
            task.
    """
    say = log or (lambda _msg: None)
    tasks = {s.task for s in sections}
    if len(tasks) != 1:
        raise ValueError(f"sections must all be of one task, got tasks {sorted(tasks)}")
    spec = get_task(sections[0].task)
    out_dir = Path(out)
    t0 = time.perf_counter()
    configs = [section_config(s, base, overrides) for s in sections]
    resolved = _load_sections(sections, configs, fallback, say)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    distilled: dict[str, Any] | None = None
    for (section, data), config in zip(resolved, configs):
        runs = plan_runs(section)
        say(f"== {section.dataset}, {section.regime} regime: {report.count(len(runs), 'run')}")
        for i, run in enumerate(runs):
            say(f"-- run {i + 1}/{len(runs)}")
            keep_arrays = run.seed == section.seeds[0]
            records.append(
                _one_run(spec, run, section.regime_name, config, data, out_dir, resume,
                         keep_arrays, progress, say)
            )  # fmt: skip
        if distill is not None and distilled is None and section.regime == "fitted":
            # right after the teachers' grid (so that a long --full has its three findings
            # before the short regime's runs)
            distilled = run_distill(
                dataclasses.replace(distill, dataset=section.dataset),
                out_dir,
                overrides=overrides,
                resume=resume,
                fallback=fallback,
                plots=plots,
                projection_classes=projection_classes,
                progress=progress,
                log=log,
            )
    seconds = time.perf_counter() - t0
    summary, table = report.write_tables(out_dir, records, configs[0], seconds, spec)
    say("")
    say(table)
    if plots and spec.write_plots is not None:
        try:
            spec.write_plots(resolved, records, out_dir / "plots", projection_classes)
            say(f"plots written to {out_dir / 'plots'}")
        except ImportError as e:
            say(f"plots skipped ({e}); install matplotlib: pip install 'labelsmooth[plot]'")
    say(f"results written to {out_dir}  ({seconds / 60:.1f} min)")
    result = {"records": records, "summary": summary, "table": table, "seconds": seconds}
    if distill is not None:
        result["distill"] = distilled or run_distill(
            distill,
            out_dir,
            overrides=overrides,
            resume=resume,
            fallback=fallback,
            plots=plots,
            projection_classes=projection_classes,
            progress=progress,
            log=log,
        )
        result["seconds"] = time.perf_counter() - t0
    return result


def _load_sections(
    sections: Sequence[Section],
    configs: Sequence[TrainConfig],
    fallback: bool,
    say: Callable[[str], None],
) -> list[tuple[Section, Any]]:
    """Each section's dataset, once; another dataset of the task when one cannot be obtained.

    Each failure is reported once: as a warning when another dataset took its place, or in
    the error when nothing could be loaded.
    """
    resolved: list[tuple[Section, Any]] = []
    errors: dict[str, None] = {}  # ordered, each message once
    wanted = [s.dataset for s in sections]
    cache: dict[tuple[str, str], Any] = {}  # (dataset, data settings) -> data
    for section, base in zip(sections, configs):
        spec = get_task(section.task)
        candidates = [section.dataset]
        if fallback:
            candidates += [d for d in spec.fallbacks(section.dataset) if d not in wanted]
        for ds in candidates:
            config = dataclasses.replace(base, dataset=ds)
            key = (ds, repr([getattr(config, f) for f in spec.data_fields]))
            try:
                data = cache.get(key) or spec.load_data(config, log=say)
            except DataUnavailableError as e:
                errors[str(e)] = None
                continue
            cache[key] = data
            if ds != section.dataset:
                say(f"warning: {section.dataset} unavailable; falling back to {ds}")
                wanted.append(ds)
            resolved.append((dataclasses.replace(section, dataset=ds), data))
            break
    if not resolved:
        if len(errors) == 1:
            raise DataUnavailableError(next(iter(errors)))
        raise DataUnavailableError("no dataset could be obtained:\n" + "\n".join(errors))
    for message in errors:
        say(f"warning: {message}")
    return resolved


# --------------------------------------------------------------------------- one run


def _reusable(
    path: Path, config: TrainConfig, log: Callable[[str], None], **same: Any
) -> dict[str, Any] | None:
    """With ``--resume``: the completed record at ``path`` of the same run (same config and the
    same ``same`` entries), or None (then the run is trained)."""
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    if not done.get("completed") or config_differences(done["config"], config.to_dict()):
        return None
    if any(done.get(k) != v for k, v in same.items()):
        return None
    log(f"[{path.stem}] already done, skipped (--resume)")
    return dict(done)


def _run_record(
    name: str, config: TrainConfig, result: TrainResult, **parts: Any
) -> dict[str, Any]:
    """The record of a finished run: who it is, how it ran, and the task's ``parts``."""
    model = result.model
    return {
        "name": name,
        "dataset": config.dataset,
        "label_smoothing": config.label_smoothing,
        "seed": config.seed,
        "config": config.to_dict(),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "completed": result.completed,
        "history": result.history,
        "seconds": result.seconds,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        **parts,
    }


def _one_run(
    spec: TaskSpec,
    run: RunSpec,
    regime: str,
    base: TrainConfig,
    data: Any,
    out: Path,
    resume: bool,
    keep_arrays: bool,
    progress: bool | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train one run (or reuse its record), let the task summarize it, write its record."""
    config = dataclasses.replace(
        base,
        dataset=run.dataset,
        label_smoothing=run.label_smoothing,
        convention="uniform" if run.convention == "-" else run.convention,
        seed=run.seed,
    )
    record_path = out / "runs" / f"{run.name}.json"
    done = _reusable(record_path, config, log) if resume else None
    if done is not None:
        return done
    run_dir = out / "runs" / run.name
    can_resume = resume and (run_dir / "checkpoint.pt").is_file()
    log(
        f"[{run.name}] training: {report.setting_name(run.label_smoothing, run.convention)}, "
        f"seed {run.seed}"
    )
    task = spec.make_task(config, data)
    result = train(config, out_dir=run_dir, resume=can_resume, task=task, progress=progress,
                   log=log)  # fmt: skip
    arrays = out / "runs" / f"{run.name}.npz" if keep_arrays else None
    parts = spec.summarize_run(task, result, arrays)
    record = _run_record(run.name, config, result, regime=regime, convention=run.convention,
                         **parts)  # fmt: skip
    write_json(record_path, record)
    log(f"[{run.name}] {task.describe(result.metrics)}  ({result.seconds:.0f} s)")
    return record


# --------------------------------------------------------------------------- distillation


def run_distill(
    grid: DistillGrid = DEFAULT_DISTILL,
    out: str | os.PathLike[str] = "distill-results",
    *,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    fallback: bool = True,
    plots: bool = True,
    projection_classes: tuple[int, int, int] = (0, 2, 6),
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Müller et al.'s distillation experiment: do smoothed teachers make worse students?

    Per seed: the teachers (fitted-regime runs of the image task, one per ε of
    ``grid.teacher_epsilons``; a teacher already completed in ``out`` with the same settings,
    e.g. by ``compare --full``, is reused, not retrained), then for each teacher and
    temperature T a student (an MLP of ``grid.student_width`` units per hidden layer, the
    fitted regime's other settings) trained with :func:`labelsmooth.distillation_loss`
    (``alpha = grid.alpha``), and one student trained alone with plain cross-entropy.
    Students keep no checkpoint; with ``resume`` a student whose record in ``out`` matches is
    skipped.

    Writes ``distill.md``, ``distill.csv``, ``runs/<run>.json`` per run and
    ``plots/<dataset>-distill-student-vs-T.png``.

    Returns:
        ``{"teachers": records, "students": records, "summary": rows, "table": markdown,
        "seconds": wall time}``.
    """
    say = log or (lambda _msg: None)
    out_dir = Path(out)
    t0 = time.perf_counter()
    section = Section(grid.dataset, grid.teacher_epsilons, ("uniform",), grid.seeds, "fitted")
    spec = get_task(section.task)
    teacher_config = section_config(section, None, overrides)
    [(section, data)] = _load_sections([section], [teacher_config], fallback, say)
    teacher_config = dataclasses.replace(teacher_config, dataset=section.dataset)
    student_base = dataclasses.replace(
        teacher_config, width=grid.student_width, label_smoothing=0.0, convention="uniform"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = report.prefix(section.dataset, "fitted")
    teachers: list[dict[str, Any]] = []
    students: list[dict[str, Any]] = []
    per_seed = len(grid.teacher_epsilons) * (1 + len(grid.temperatures)) + 1
    say(
        f"== distillation on {section.dataset}: {report.count(len(grid.seeds), 'seed')} × "
        f"{report.count(per_seed, 'run')} (teachers reused when done)"
    )
    runs = plan_runs(section)
    for seed in grid.seeds:
        student_config = dataclasses.replace(student_base, seed=seed)
        alone = f"{prefix}-student{grid.student_width}-alone-seed{seed}"
        students.append(
            _student_run(alone, None, None, grid, student_config, data, out_dir, resume,
                         progress, say)
        )  # fmt: skip
        for run in (r for r in runs if r.seed == seed):
            keep = seed == grid.seeds[0]
            teacher = _one_run(spec, run, "fitted", teacher_config, data, out_dir, True, keep,
                               progress, say)  # fmt: skip
            teachers.append(teacher)
            model = _load_teacher(run, teacher_config, data, out_dir)
            tag = "baseline" if run.label_smoothing == 0 else f"ls{run.label_smoothing:g}"
            for temp in grid.temperatures:
                name = f"{prefix}-student{grid.student_width}-of-{tag}-T{temp:g}-seed{seed}"
                students.append(
                    _student_run(name, teacher, model, grid, student_config, data, out_dir,
                                 resume, progress, say, temperature=float(temp))
                )  # fmt: skip
    seconds = time.perf_counter() - t0
    summary, table = write_distill_tables(out_dir, teachers, students, seconds)
    say("")
    say(table)
    if plots:
        try:
            write_distill_plot(summary, out_dir / "plots", section.dataset)
        except ImportError as e:
            say(f"plots skipped ({e}); install matplotlib: pip install 'labelsmooth[plot]'")
    say(f"distillation results written to {out_dir}  ({seconds / 60:.1f} min)")
    return {
        "teachers": teachers,
        "students": students,
        "summary": summary,
        "table": table,
        "seconds": seconds,
    }


def _load_teacher(
    run: RunSpec, config: TrainConfig, data: DatasetSplits, out: Path
) -> torch.nn.Module:
    """The trained teacher of ``run`` from its final checkpoint in ``out``."""
    state = load_checkpoint(out / "runs" / run.name / "checkpoint.pt")
    teacher = dataclasses.replace(config, label_smoothing=run.label_smoothing, seed=run.seed)
    model = ImageClassification(teacher, data).build_model()
    model.load_state_dict(state["model"])
    return model.eval()


def _student_run(
    name: str,
    teacher: dict[str, Any] | None,
    teacher_model: torch.nn.Module | None,
    grid: DistillGrid,
    config: TrainConfig,
    data: DatasetSplits,
    out: Path,
    resume: bool,
    progress: bool | None,
    log: Callable[[str], None],
    temperature: float = 0.0,
) -> dict[str, Any]:
    """Train one student (by distillation from ``teacher_model``, or alone) and record it."""
    settings: dict[str, Any] = {
        "teacher": teacher["name"] if teacher else None,
        "teacher_label_smoothing": teacher["label_smoothing"] if teacher else None,
        "temperature": temperature if teacher else None,
        "alpha": grid.alpha if teacher else None,
    }
    record_path = out / "runs" / f"{name}.json"
    done = _reusable(record_path, config, log, distill=settings) if resume else None
    if done is not None:
        return done
    image = ImageClassification(config, data)
    task = (
        Distillation(image, teacher_model, temperature, grid.alpha)
        if teacher_model is not None
        else image
    )
    who = (
        f"T {temperature:g}, alpha {grid.alpha:g}, teacher {settings['teacher']}"
        if teacher
        else "alone"
    )
    log(f"[{name}] training student: {who}, seed {config.seed}")
    result = train(config, task=task, progress=progress, log=log)
    _, _, temp_fit, before, after = calibrate(result.model, data, config)
    record = _run_record(
        name,
        config,
        result,
        regime="fitted",
        convention="-",
        distill=settings,
        metrics=before,
        temperature=temp_fit,
        metrics_after_temperature=after,
        train_metrics=train_metrics(result.model, data, config),
        sizes={
            "train": len(data.train),
            "val": len(data.val) if data.val is not None else 0,
            "test": len(data.test),
        },
    )
    write_json(record_path, record)
    log(f"[{name}] {image.describe(before)}  ({result.seconds:.0f} s)")
    return record
