"""The comparison recipe: a baseline against label smoothing, over ε × conventions × seeds.

Reads top to bottom: plan the runs, load each dataset once (falling back to another built-in
dataset when one cannot be fetched), create the results folder, train every run sequentially
in-process, fit a temperature on the held-out validation split, evaluate on the test split,
then hand the records to :mod:`labelsmooth.train.report` for the tables and plots. Per run it
writes

* ``runs/<run>.json`` (config, per-epoch history, test metrics, temperature, metrics after T)
  and ``runs/<run>/checkpoint.pt`` (resumable),
* ``runs/<run>.npz`` for the first seed (test logits, features, labels, final-layer weight:
  what the reliability and projection plots need).

``DEFAULT_SECTIONS`` is what ``labelsmooth compare`` (and ``make demo``) runs;
``FULL_SECTIONS`` (``--full``) is the committed reproduction. Both use :data:`DEFAULT_TRAIN`
per run, so the default's rows are the matching rows of ``--full`` (same machine).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelsmooth.data import BUILTIN_DATASETS, DatasetSplits, DataUnavailableError
from labelsmooth.train import report
from labelsmooth.train._files import atomic_write, write_json
from labelsmooth.train.config import TrainConfig, check_field, config_differences
from labelsmooth.train.task import predict, prepare_data
from labelsmooth.train.trainer import train

__all__ = [
    "Section",
    "DEFAULT_SECTIONS",
    "FULL_SECTIONS",
    "DEFAULT_TRAIN",
    "RunSpec",
    "plan_runs",
    "run_compare",
]


@dataclass(frozen=True)
class Section:
    """One dataset's grid: every ε > 0 is combined with every convention; ε = 0 (the
    baseline) runs once per seed. Values are checked as :class:`TrainConfig` checks them."""

    dataset: str
    epsilons: tuple[float, ...] = (0.0, 0.1)
    conventions: tuple[str, ...] = ("uniform",)
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        check_field("dataset", self.dataset)
        for name, values, field in (
            ("epsilons", self.epsilons, "label_smoothing"),
            ("conventions", self.conventions, "convention"),
            ("seeds", self.seeds, "seed"),
        ):
            if len(values) == 0:
                raise ValueError(f"Section.{name} must not be empty")
            for v in values:
                check_field(field, v)


#: ``labelsmooth compare`` with no arguments (``make demo``): 6 runs; measured times in docs.
DEFAULT_SECTIONS = (Section("fashion-mnist", (0.0, 0.1), ("uniform",), (0, 1, 2)),)
#: ``labelsmooth compare --full``: 21 Fashion-MNIST runs + 6 MNIST runs.
FULL_SECTIONS = (
    Section("fashion-mnist", (0.0, 0.05, 0.1, 0.2), ("uniform", "others"), (0, 1, 2)),
    Section("mnist", (0.0, 0.1), ("uniform",), (0, 1, 2)),
)
#: Per-run settings of both presets: ResNet-14, width 8, 10k training images, 5 epochs.
DEFAULT_TRAIN = TrainConfig()


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid."""

    name: str
    dataset: str
    label_smoothing: float
    convention: str  # "-" for the baseline
    seed: int


def plan_runs(section: Section) -> list[RunSpec]:
    """The runs of a section, seed-major (so an interrupted grid has whole seeds done)."""
    configs: list[tuple[float, str]] = []
    for eps in section.epsilons:
        if eps == 0:
            configs.append((0.0, "-"))
        else:
            configs.extend((float(eps), conv) for conv in section.conventions)
    configs = list(dict.fromkeys(configs))
    slug = report.slug(section.dataset)
    runs = []
    for seed in dict.fromkeys(section.seeds):
        for eps, conv in configs:
            tag = "baseline" if eps == 0 else f"ls{eps:g}-{conv}"
            runs.append(RunSpec(f"{slug}-{tag}-seed{seed}", section.dataset, eps, conv, seed))
    return runs


# --------------------------------------------------------------------------- the recipe


def run_compare(
    sections: Sequence[Section] = DEFAULT_SECTIONS,
    base: TrainConfig = DEFAULT_TRAIN,
    out: str | os.PathLike[str] = "compare-results",
    *,
    resume: bool = False,
    fallback: bool = True,
    plots: bool = True,
    projection_classes: tuple[int, int, int] = (0, 2, 6),
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train the grid of every section and write tables, per-run JSON and plots to ``out``.

    Args:
        sections: Datasets and their ε × convention × seed grids.
        base: Settings shared by every run (model, epochs, subset size, optimiser, ...).
        out: Results folder (created once the data are loaded).
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
    resolved = _load_sections(sections, base, fallback, say)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for section, data in resolved:
        runs = plan_runs(section)
        say(
            f"== {section.dataset}: {report.count(len(runs), 'run')}, train {len(data.train)}, "
            f"val {len(data.val) if data.val is not None else 0}, test {len(data.test)}"
        )
        for i, spec in enumerate(runs):
            say(f"-- run {i + 1}/{len(runs)}")
            keep_arrays = spec.seed == section.seeds[0]
            records.append(_one_run(spec, base, data, out_dir, resume, keep_arrays, progress, say))
    seconds = time.perf_counter() - t0
    summary, table = report.write_tables(out_dir, records, base, seconds)
    say("")
    say(table)
    if plots:
        try:
            report.write_plots(resolved, records, out_dir / "plots", projection_classes)
            say(f"plots written to {out_dir / 'plots'}")
        except ImportError as e:
            say(f"plots skipped ({e}); install matplotlib: pip install 'labelsmooth[plot]'")
    say(f"results written to {out_dir}  ({seconds / 60:.1f} min)")
    return {"records": records, "summary": summary, "table": table, "seconds": seconds}


def _load_sections(
    sections: Sequence[Section],
    base: TrainConfig,
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
    for section in sections:
        candidates = [section.dataset]
        if fallback and section.dataset in BUILTIN_DATASETS:
            candidates += [d for d in BUILTIN_DATASETS if d not in wanted]
        for ds in candidates:
            try:
                data = prepare_data(dataclasses.replace(base, dataset=ds), log=say)
            except DataUnavailableError as e:
                errors[str(e)] = None
                continue
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


def _one_run(
    spec: RunSpec,
    base: TrainConfig,
    data: DatasetSplits,
    out: Path,
    resume: bool,
    keep_arrays: bool,
    progress: bool | None,
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


def _save_arrays(
    path: Path,
    model: torch.nn.Module,
    data: DatasetSplits,
    test_logits: torch.Tensor,
    test_feats: torch.Tensor,
) -> None:
    fc = model.fc
    assert isinstance(fc, torch.nn.Linear)
    buf = io.BytesIO()
    np.savez(
        buf,
        test_logits=test_logits.numpy(),
        test_features=test_feats.numpy(),
        test_labels=data.test.labels.numpy(),
        fc_weight=fc.weight.detach().numpy(),
    )
    atomic_write(path, buf.getvalue())
