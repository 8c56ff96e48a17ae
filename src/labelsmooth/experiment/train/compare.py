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

The sections, their runs and one run trained and recorded live in
:mod:`~labelsmooth.experiment.train.grid`; :func:`run_distill`
(:mod:`~labelsmooth.experiment.train.distill`, re-exported here) is the third finding:
teachers with ε = 0 and ε > 0 (runs of the fitted regime, reused when already in the results
folder), then students trained by :func:`labelsmooth.distillation_loss` over a grid of
temperatures.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from labelsmooth.experiment import report
from labelsmooth.experiment.config import TrainConfig
from labelsmooth.experiment.tasks import get_task
from labelsmooth.experiment.tasks.image import FITTED_TRAIN, REGIMES
from labelsmooth.experiment.train.distill import (
    DEFAULT_DISTILL,
    FULL_DISTILL,
    DistillGrid,
    run_distill,
)
from labelsmooth.experiment.train.grid import (
    DEFAULT_SECTIONS,
    DEFAULT_TRAIN,
    FULL_SECTIONS,
    RunSpec,
    Section,
    default_sections,
    load_sections,
    plan_runs,
    section_config,
    train_run,
)

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
    resolved = load_sections(sections, configs, fallback, say)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    distilled: dict[str, Any] | None = None

    def distill_into_out(grid: DistillGrid) -> dict[str, Any]:
        return run_distill(grid, out_dir, overrides=overrides, resume=resume, fallback=fallback,
                           plots=plots, progress=progress, log=log)  # fmt: skip

    for (section, data), config in zip(resolved, configs):
        runs = plan_runs(section)
        say(f"== {section.dataset}, {section.regime} regime: {report.count(len(runs), 'run')}")
        for i, run in enumerate(runs):
            say(f"-- run {i + 1}/{len(runs)}")
            keep_arrays = run.seed == section.seeds[0]
            records.append(
                train_run(spec, run, section.regime_name, config, data, out_dir, resume,
                         keep_arrays, progress, say)
            )  # fmt: skip
        if distill is not None and distilled is None and section.regime == "fitted":
            # right after the teachers' grid (so that a long --full has its three findings
            # before the short regime's runs)
            distilled = distill_into_out(dataclasses.replace(distill, dataset=section.dataset))
    seconds = time.perf_counter() - t0
    summary, table = report.write_tables(out_dir, records, configs[0], seconds, spec)
    say("")
    say(table)
    if plots and spec.write_plots is not None:
        try:
            # the plots are against ε: the OLS runs (ε = 0) are in the tables only
            plotted = [r for r in records if report.ols_alpha(r) is None]
            spec.write_plots(resolved, plotted, out_dir / "plots", projection_classes)
            say(f"plots written to {out_dir / 'plots'}")
        except ImportError as e:
            say(f"plots skipped ({e}); install matplotlib: pip install 'labelsmooth[plot]'")
    say(f"results written to {out_dir}  ({seconds / 60:.1f} min)")
    result = {"records": records, "summary": summary, "table": table, "seconds": seconds}
    if distill is not None:
        result["distill"] = distilled or distill_into_out(distill)
        result["seconds"] = time.perf_counter() - t0
    return result
