"""The comparison recipe: a baseline against label smoothing, over ε × conventions × seeds.

Reads top to bottom: plan the runs, load each dataset once (falling back to another built-in
dataset when one cannot be fetched), create the results folder, train every run sequentially
in-process, fit a temperature on the held-out validation split, evaluate on the test split,
then hand the records to :mod:`labelsmooth.experiment.train.report` for the tables and plots. Per
run it
writes

* ``runs/<run>.json`` (config, per-epoch history, test metrics, temperature, metrics after T)
  and ``runs/<run>/checkpoint.pt`` (resumable),
* ``runs/<run>.npz`` for the first seed (test logits, features, labels, final-layer weight:
  what the reliability and projection plots need).

Two training regimes (:data:`REGIMES`) show when smoothing helps calibration: ``"fitted"``
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
import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelsmooth.experiment.data import BUILTIN_DATASETS, DatasetSplits, DataUnavailableError
from labelsmooth.experiment.train import report
from labelsmooth.experiment.train._files import atomic_write, write_json
from labelsmooth.experiment.train.checkpoint import load_checkpoint
from labelsmooth.experiment.train.config import TrainConfig, check_field, config_differences
from labelsmooth.experiment.train.task import (
    Distillation,
    ImageClassification,
    evaluate,
    predict,
    prepare_data,
)
from labelsmooth.experiment.train.trainer import train

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
    "run_compare",
    "run_distill",
]

#: The short regime: ResNet-14, width 8, 10k training images, 5 epochs, weight decay and
#: augmentation (a baseline that is already calibrated; smoothing makes it underconfident).
DEFAULT_TRAIN = TrainConfig()
#: The fitted regime: a fully connected 784-1200-1200-10 net (Hinton et al.'s distillation
#: teacher) on the same 10k images for 20 epochs, no weight decay, no augmentation, no
#: dropout: it fits its training subset (train top-1 about 99 %) and is overconfident.
FITTED_TRAIN = TrainConfig(
    model="mlp",
    width=1200,
    epochs=20,
    lr=0.05,
    weight_decay=0.0,
    warmup_epochs=0.0,
    augment_pad=0,
    hflip=False,
)
#: Regime name -> per-run settings.
REGIMES: dict[str, TrainConfig] = {"fitted": FITTED_TRAIN, "short": DEFAULT_TRAIN}


@dataclass(frozen=True)
class Section:
    """One dataset's grid in one regime: every ε > 0 is combined with every convention, plus
    the ``extra`` (ε, convention) pairs; ε = 0 (the baseline) runs once per seed. Values are
    checked as :class:`TrainConfig` checks them; ``regime`` is a key of :data:`REGIMES`."""

    dataset: str
    epsilons: tuple[float, ...] = (0.0, 0.1)
    conventions: tuple[str, ...] = ("uniform",)
    seeds: tuple[int, ...] = (0, 1, 2)
    regime: str = "short"
    extra: tuple[tuple[float, str], ...] = ()

    def __post_init__(self) -> None:
        check_field("dataset", self.dataset)
        if self.regime not in REGIMES:
            raise ValueError(
                f"regime must be one of {', '.join(REGIMES)}, got regime={self.regime!r}"
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


#: ``labelsmooth compare`` with no arguments (``make demo``): the fitted regime, ε 0 / 0.05 /
#: 0.1, 3 seeds (9 runs; measured time in docs/results.md).
DEFAULT_SECTIONS = (
    Section("fashion-mnist", (0.0, 0.05, 0.1), ("uniform",), (0, 1, 2), regime="fitted"),
)
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
    slug = report.prefix(section.dataset, section.regime)
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
    """A section's per-run settings: ``base`` (default: its regime's preset) with
    ``overrides`` (field -> value, checked) replaced."""
    config = base if base is not None else REGIMES[section.regime]
    return dataclasses.replace(config, **dict(overrides or {}))


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
        sections: Datasets and their ε × convention × seed grids, each in a regime.
        base: Settings of every run (model, epochs, subset size, optimiser, ...); default:
            each section's regime preset (:data:`REGIMES`).
        out: Results folder (created once the data are loaded).
        overrides: Fields replaced in every section's settings (the command's options).
        distill: Also run this distillation grid (:func:`run_distill`) into ``out``, right
            after the first fitted-regime section (its runs are the teachers), or at the end
            when there is none.
        resume: Skip runs whose JSON exists (same run, completed) and resume a run's
            checkpoint.
        fallback: When a built-in dataset cannot be fetched, run the other built-in one.
        plots: Write plots (needs matplotlib; skipped with a message otherwise).
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
    """
    say = log or (lambda _msg: None)
    out_dir = Path(out)
    t0 = time.perf_counter()
    configs = [section_config(s, base, overrides) for s in sections]
    resolved = _load_sections(sections, configs, fallback, say)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    distilled: dict[str, Any] | None = None
    for (section, data), config in zip(resolved, configs):
        runs = plan_runs(section)
        say(
            f"== {section.dataset}, {section.regime} regime: {report.count(len(runs), 'run')}, "
            f"train {len(data.train)}, val {len(data.val) if data.val is not None else 0}, "
            f"test {len(data.test)}"
        )
        for i, spec in enumerate(runs):
            say(f"-- run {i + 1}/{len(runs)}")
            keep_arrays = spec.seed == section.seeds[0]
            records.append(
                _one_run(
                    spec,
                    section.regime,
                    config,
                    data,
                    out_dir,
                    resume,
                    keep_arrays,
                    progress,
                    projection_classes,
                    say,
                )  # fmt: skip
            )
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
    summary, table = report.write_tables(out_dir, records, configs[0], seconds)
    say("")
    say(table)
    if plots:
        try:
            report.write_plots(resolved, records, out_dir / "plots", projection_classes)
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
) -> list[tuple[Section, DatasetSplits]]:
    """Each section's dataset, once; another built-in dataset when one cannot be obtained.

    Each failure is reported once: as a warning when another dataset took its place, or in
    the error when nothing could be loaded.
    """
    resolved: list[tuple[Section, DatasetSplits]] = []
    errors: dict[str, None] = {}  # ordered, each message once
    wanted = [s.dataset for s in sections]
    cache: dict[tuple[str, str], DatasetSplits] = {}  # (dataset, data settings) -> splits
    for section, base in zip(sections, configs):
        candidates = [section.dataset]
        if fallback and section.dataset in BUILTIN_DATASETS:
            candidates += [d for d in BUILTIN_DATASETS if d not in wanted]
        for ds in candidates:
            config = dataclasses.replace(base, dataset=ds)
            key = (ds, repr([getattr(config, f) for f in _DATA_FIELDS]))
            try:
                data = cache.get(key) or prepare_data(config, log=say)
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


#: The settings :func:`prepare_data` reads (sections that agree on them share one load).
_DATA_FIELDS = ("data_dir", "hflip", "val_size", "data_seed", "train_size")


# --------------------------------------------------------------------------- one run


def _one_run(
    spec: RunSpec,
    regime: str,
    base: TrainConfig,
    data: DatasetSplits,
    out: Path,
    resume: bool,
    keep_arrays: bool,
    progress: bool | None,
    projection_classes: tuple[int, int, int],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train one run (or reuse its record), fit T on the validation split, write its record."""
    config = dataclasses.replace(
        base,
        dataset=spec.dataset,
        label_smoothing=spec.label_smoothing,
        convention="uniform" if spec.convention == "-" else spec.convention,
        seed=spec.seed,
    )
    record_path = out / "runs" / f"{spec.name}.json"
    if resume and record_path.is_file():
        done = json.loads(record_path.read_text())
        if done.get("completed") and not config_differences(done["config"], config.to_dict()):
            log(f"[{spec.name}] already done, skipped (--resume)")
            return dict(done)
    run_dir = out / "runs" / spec.name
    can_resume = resume and (run_dir / "checkpoint.pt").is_file()
    log(
        f"[{spec.name}] training: {report.trick(spec.label_smoothing, spec.convention)}, "
        f"seed {spec.seed}"
    )
    result = train(
        config, out_dir=run_dir, resume=can_resume, data=data, progress=progress, log=log
    )
    test_logits, test_feats, temperature, before, after = _calibrate(result.model, data, config)
    record = {
        "name": spec.name,
        "regime": regime,
        "dataset": spec.dataset,
        "label_smoothing": spec.label_smoothing,
        "convention": spec.convention,
        "seed": spec.seed,
        "config": config.to_dict(),
        "dtype": str(next(result.model.parameters()).dtype).removeprefix("torch."),
        "completed": result.completed,
        "history": result.history,
        "metrics": before,
        "temperature": temperature,
        "metrics_after_temperature": after,
        "train_metrics": _train_metrics(result.model, data, config),
        "representation": _tightness(result.model, data, test_feats, projection_classes),
        "seconds": result.seconds,
        "num_parameters": sum(p.numel() for p in result.model.parameters()),
        "sizes": {
            "train": len(data.train),
            "val": len(data.val) if data.val is not None else 0,
            "test": len(data.test),
        },
    }
    write_json(record_path, record)
    if keep_arrays:  # what the plots need, for the first seed only
        _save_arrays(out / "runs" / f"{spec.name}.npz", result.model, data, test_logits, test_feats)
    log(report.run_line(record))
    return record


def _calibrate(
    model: torch.nn.Module, data: DatasetSplits, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, float, dict[str, float], dict[str, float]]:
    """Test logits and features; T fitted on the validation split; test metrics before and
    after T (the same when there is no validation split, T = 1)."""
    from labelsmooth.metrics import evaluate_calibration, fit_temperature

    kw: dict[str, Any] = {"mean": data.mean, "std": data.std, "batch_size": config.eval_batch_size}
    with torch.no_grad():
        test_logits, test_feats = predict(model, data.test, **kw)  # (N, C), (N, D)
        before = evaluate_calibration(test_logits, data.test.labels, n_bins=config.n_bins)
        temperature, after = 1.0, before
        if data.val is not None:
            val_logits, _ = predict(model, data.val, **kw)
            temperature = float(fit_temperature(val_logits, data.val.labels))
            after = evaluate_calibration(
                test_logits, data.test.labels, temperature=temperature, n_bins=config.n_bins
            )
    as_floats = lambda m: {k: float(v) for k, v in m.items()}  # noqa: E731
    return test_logits, test_feats, temperature, as_floats(before), as_floats(after)


def _train_metrics(
    model: torch.nn.Module, data: DatasetSplits, config: TrainConfig
) -> dict[str, float]:
    """Top-1 and NLL on the training subset (no augmentation): how well the run fits it."""
    m = evaluate(
        model,
        data.train,
        mean=data.mean,
        std=data.std,
        num_classes=data.num_classes,
        n_bins=config.n_bins,
        batch_size=config.eval_batch_size,
    )
    return {"top1": float(m["top1"]), "nll": float(m["nll"])}


def _tightness(
    model: torch.nn.Module,
    data: DatasetSplits,
    test_feats: torch.Tensor,
    classes: tuple[int, int, int],
) -> dict[str, float]:
    """:func:`~labelsmooth.metrics.cluster_tightness` of the test split's penultimate
    activations: all classes in the full space, and three classes in their template plane."""
    from labelsmooth.metrics import cluster_tightness

    labels = data.test.labels
    out = {"tightness": cluster_tightness(test_feats, labels)}
    cls = _projection_classes(classes, data.num_classes)
    try:
        out["tightness_projection"] = cluster_tightness(
            test_feats, labels, weight=_fc(model).weight.detach(), classes=cls
        )
    except ValueError:  # fewer than 3 classes, or templates on one line
        out["tightness_projection"] = math.nan
    return out


def _projection_classes(classes: tuple[int, int, int], num_classes: int) -> list[int]:
    """``classes`` if they all exist, else the first three classes."""
    cls = [c for c in classes if c < num_classes]
    return cls if len(cls) == 3 else list(range(min(3, num_classes)))


def _fc(model: torch.nn.Module) -> torch.nn.Linear:
    fc = model.fc
    assert isinstance(fc, torch.nn.Linear)
    return fc


def _save_arrays(
    path: Path,
    model: torch.nn.Module,
    data: DatasetSplits,
    test_logits: torch.Tensor,
    test_feats: torch.Tensor,
) -> None:
    fc = _fc(model)
    buf = io.BytesIO()
    np.savez(
        buf,
        test_logits=test_logits.numpy(),
        test_features=test_feats.numpy(),
        test_labels=data.test.labels.numpy(),
        fc_weight=fc.weight.detach().numpy(),
    )
    atomic_write(path, buf.getvalue())


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

    Per seed: the teachers (fitted-regime runs, one per ε of ``grid.teacher_epsilons``; a
    teacher already completed in ``out`` with the same settings, e.g. by ``compare --full``,
    is reused, not retrained), then for each teacher and temperature T a student (an MLP of
    ``grid.student_width`` units per hidden layer, the fitted regime's other settings)
    trained with :func:`labelsmooth.distillation_loss` (``alpha = grid.alpha``), and one
    student trained alone with plain cross-entropy. Students keep no checkpoint; with
    ``resume`` a student whose record in ``out`` matches is skipped.

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
    specs = plan_runs(section)
    for seed in grid.seeds:
        student_config = dataclasses.replace(student_base, seed=seed)
        alone = f"{prefix}-student{grid.student_width}-alone-seed{seed}"
        students.append(
            _student_run(
                alone, None, None, 0.0, 0.0, student_config, data, out_dir, resume, progress, say
            )  # fmt: skip
        )
        for spec in (s for s in specs if s.seed == seed):
            keep = seed == grid.seeds[0]
            teacher = _one_run(
                spec, "fitted", teacher_config, data, out_dir, True, keep, progress,
                projection_classes, say,
            )  # fmt: skip
            teachers.append(teacher)
            model = _load_teacher(spec, teacher_config, data, out_dir)
            tag = "baseline" if spec.label_smoothing == 0 else f"ls{spec.label_smoothing:g}"
            for temp in grid.temperatures:
                name = f"{prefix}-student{grid.student_width}-of-{tag}-T{temp:g}-seed{seed}"
                students.append(
                    _student_run(
                        name,
                        teacher,
                        model,
                        float(temp),
                        grid.alpha,
                        student_config,
                        data,
                        out_dir,
                        resume,
                        progress,
                        say,
                    )  # fmt: skip
                )
    seconds = time.perf_counter() - t0
    summary, table = report.write_distill_tables(out_dir, teachers, students, seconds)
    say("")
    say(table)
    if plots:
        try:
            report.write_distill_plot(summary, out_dir / "plots", section.dataset)
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
    spec: RunSpec, config: TrainConfig, data: DatasetSplits, out: Path
) -> torch.nn.Module:
    """The trained teacher of ``spec`` from its final checkpoint in ``out``."""
    state = load_checkpoint(out / "runs" / spec.name / "checkpoint.pt")
    run = dataclasses.replace(config, label_smoothing=spec.label_smoothing, seed=spec.seed)
    model = ImageClassification(run, data).build_model()
    model.load_state_dict(state["model"])
    return model.eval()


def _student_run(
    name: str,
    teacher: dict[str, Any] | None,
    teacher_model: torch.nn.Module | None,
    temperature: float,
    alpha: float,
    config: TrainConfig,
    data: DatasetSplits,
    out: Path,
    resume: bool,
    progress: bool | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train one student (by distillation from ``teacher_model``, or alone) and record it."""
    settings: dict[str, Any] = {
        "teacher": teacher["name"] if teacher else None,
        "teacher_label_smoothing": teacher["label_smoothing"] if teacher else None,
        "temperature": temperature if teacher else None,
        "alpha": alpha if teacher else None,
    }
    record_path = out / "runs" / f"{name}.json"
    if resume and record_path.is_file():
        done = json.loads(record_path.read_text())
        same = not config_differences(done["config"], config.to_dict())
        if done.get("completed") and same and done.get("distill") == settings:
            log(f"[{name}] already done, skipped (--resume)")
            return dict(done)
    image = ImageClassification(config, data)
    task = (
        Distillation(image, teacher_model, temperature, alpha)
        if teacher_model is not None
        else image
    )
    who = (
        f"T {temperature:g}, alpha {alpha:g}, teacher {settings['teacher']}" if teacher else "alone"
    )
    log(f"[{name}] training student: {who}, seed {config.seed}")
    result = train(config, task=task, progress=progress, log=log)
    _, _, temp_fit, before, after = _calibrate(result.model, data, config)
    record = {
        "name": name,
        "regime": "fitted",
        "dataset": config.dataset,
        "label_smoothing": 0.0,
        "convention": "-",
        "seed": config.seed,
        "distill": settings,
        "config": config.to_dict(),
        "dtype": str(next(result.model.parameters()).dtype).removeprefix("torch."),
        "completed": result.completed,
        "history": result.history,
        "metrics": before,
        "temperature": temp_fit,
        "metrics_after_temperature": after,
        "train_metrics": _train_metrics(result.model, data, config),
        "seconds": result.seconds,
        "num_parameters": sum(p.numel() for p in result.model.parameters()),
        "sizes": {
            "train": len(data.train),
            "val": len(data.val) if data.val is not None else 0,
            "test": len(data.test),
        },
    }
    write_json(record_path, record)
    log(report.run_line(record))
    return record
