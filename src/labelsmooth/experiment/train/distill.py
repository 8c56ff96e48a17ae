"""The distillation recipe (Müller et al. 2019, section 5): do smoothed teachers make worse
students? Teachers are fitted-regime image runs (reused when already trained, e.g. by
``compare --full``), students MLPs trained by :func:`labelsmooth.distillation_loss` over a grid
of temperatures, plus one student alone; the table and plot come from
:mod:`labelsmooth.experiment.tasks.distillation`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labelsmooth.experiment import report
from labelsmooth.experiment.config import TrainConfig, check_field
from labelsmooth.experiment.data import DatasetSplits
from labelsmooth.experiment.files import write_json
from labelsmooth.experiment.tasks import Distillation, ImageClassification, get_task
from labelsmooth.experiment.tasks.distillation import write_distill_plot, write_distill_tables
from labelsmooth.experiment.tasks.image_metrics import calibrate, run_line, train_metrics
from labelsmooth.experiment.train.checkpoint import load_checkpoint
from labelsmooth.experiment.train.grid import (
    RunSpec,
    Section,
    load_sections,
    plan_runs,
    reusable_record,
    run_record,
    section_config,
    train_run,
)
from labelsmooth.experiment.train.trainer import train

__all__ = ["DistillGrid", "DEFAULT_DISTILL", "FULL_DISTILL", "run_distill"]


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


def run_distill(
    grid: DistillGrid = DEFAULT_DISTILL,
    out: str | os.PathLike[str] = "distill-results",
    *,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    fallback: bool = True,
    plots: bool = True,
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
    section, data, teacher_config = _teachers(grid, overrides, fallback, say)
    spec = get_task(section.task)
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
            teacher = train_run(spec, run, "fitted", teacher_config, data, out_dir, True, keep,
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
    summary, table = _write_report(out_dir, teachers, students, seconds, section.dataset,
                                   plots, say)  # fmt: skip
    return {
        "teachers": teachers,
        "students": students,
        "summary": summary,
        "table": table,
        "seconds": seconds,
    }


def _teachers(
    grid: DistillGrid,
    overrides: Mapping[str, Any] | None,
    fallback: bool,
    say: Callable[[str], None],
) -> tuple[Section, DatasetSplits, TrainConfig]:
    """The teachers' section (fitted regime), its data and the teachers' settings."""
    section = Section(grid.dataset, grid.teacher_epsilons, ("uniform",), grid.seeds, "fitted")
    config = section_config(section, None, overrides)
    [(section, data)] = load_sections([section], [config], fallback, say)
    return section, data, dataclasses.replace(config, dataset=section.dataset)


def _write_report(
    out_dir: Path,
    teachers: list[dict[str, Any]],
    students: list[dict[str, Any]],
    seconds: float,
    dataset: str,
    plots: bool,
    say: Callable[[str], None],
) -> tuple[list[dict[str, Any]], str]:
    """The distillation table (and plot); say where they went."""
    summary, table = write_distill_tables(out_dir, teachers, students, seconds)
    say("")
    say(table)
    if plots:
        try:
            write_distill_plot(summary, out_dir / "plots", dataset)
        except ImportError as e:
            say(f"plots skipped ({e}); install matplotlib: pip install 'labelsmooth[plot]'")
    say(f"distillation results written to {out_dir}  ({seconds / 60:.1f} min)")
    return summary, table


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
    done = reusable_record(record_path, config, log, distill=settings) if resume else None
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
    record = run_record(
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
    log(run_line(record))
    return record
