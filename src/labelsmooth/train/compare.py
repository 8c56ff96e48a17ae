"""The comparison recipe: a baseline against label smoothing, over ε × conventions × seeds.

Reads top to bottom: plan the runs, load each dataset once (falling back to another built-in
dataset when one cannot be fetched), train every run sequentially in-process, fit a
temperature on the held-out validation split, evaluate on the test split, then write

* ``runs/<run>.json`` (config, per-epoch history, test metrics, temperature, metrics after T)
  and ``runs/<run>/checkpoint.pt`` (resumable),
* ``results.csv`` (one row per run), ``summary.csv`` and ``results.md`` (mean ± std over
  seeds, in the classic "model / epochs / dtype / batch / lr / trick / top-1 / top-5 /
  improvement" layout plus NLL, ECE, ECE after temperature scaling and T),
* ``plots/``: reliability diagrams (baseline vs smoothed), training curves, metric-vs-ε and
  the penultimate-layer projection of three classes (baseline vs smoothed), when matplotlib
  is installed.

``DEFAULT_SECTIONS`` is what ``labelsmooth compare`` (and ``make demo``) runs in about ten
minutes on 2 CPU cores; ``FULL_SECTIONS`` (``--full``) is the committed reproduction.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelsmooth.data import BUILTIN_DATASETS, DatasetSplits, DataUnavailableError
from labelsmooth.train.trainer import TrainConfig, predict, prepare_data, train

__all__ = [
    "Section",
    "DEFAULT_SECTIONS",
    "FULL_SECTIONS",
    "DEFAULT_TRAIN",
    "FULL_TRAIN",
    "RunSpec",
    "plan_runs",
    "run_compare",
    "summarize",
    "format_table",
]


@dataclass(frozen=True)
class Section:
    """One dataset's grid: every ε > 0 is combined with every convention; ε = 0 (the
    baseline) runs once per seed."""

    dataset: str
    epsilons: tuple[float, ...] = (0.0, 0.1)
    conventions: tuple[str, ...] = ("uniform",)
    seeds: tuple[int, ...] = (0, 1, 2)


#: ``labelsmooth compare`` with no arguments: 6 runs of about a minute each on 2 cores.
DEFAULT_SECTIONS = (Section("fashion-mnist", (0.0, 0.1), ("uniform",), (0, 1, 2)),)
#: ``labelsmooth compare --full``: 21 Fashion-MNIST runs + 6 MNIST runs (about 30 minutes).
FULL_SECTIONS = (
    Section("fashion-mnist", (0.0, 0.05, 0.1, 0.2), ("uniform", "others"), (0, 1, 2)),
    Section("mnist", (0.0, 0.1), ("uniform",), (0, 1, 2)),
)
#: Per-run settings of both presets (ResNet-14, width 8, 10k training images, 5 epochs):
#: the default's rows are bitwise the same as the matching rows of ``--full`` (same machine).
DEFAULT_TRAIN = TrainConfig()
FULL_TRAIN = TrainConfig()

_PRETTY = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid."""

    name: str
    dataset: str
    label_smoothing: float
    convention: str  # "-" for the baseline
    seed: int


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[-48:] or "data"


def _trick(eps: float, convention: str) -> str:
    return "baseline" if eps == 0 else f"LS ε={eps:g} ({convention})"


def plan_runs(section: Section) -> list[RunSpec]:
    """The runs of a section, seed-major (so an interrupted grid has whole seeds done)."""
    configs: list[tuple[float, str]] = []
    for eps in section.epsilons:
        if eps == 0:
            configs.append((0.0, "-"))
        else:
            configs.extend((float(eps), conv) for conv in section.conventions)
    configs = list(dict.fromkeys(configs))
    slug = _slug(section.dataset)
    runs = []
    for seed in section.seeds:
        for eps, conv in configs:
            tag = "baseline" if eps == 0 else f"ls{eps:g}-{conv}"
            runs.append(RunSpec(f"{slug}-{tag}-seed{seed}", section.dataset, eps, conv, seed))
    return runs


# --------------------------------------------------------------------------- one run


def _one_run(
    spec: RunSpec,
    base: TrainConfig,
    data: DatasetSplits,
    out: Path,
    *,
    resume: bool,
    keep_arrays: bool,
    progress: bool | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from labelsmooth.metrics import evaluate_calibration, fit_temperature

    config = dataclasses.replace(
        base,
        dataset=spec.dataset,
        label_smoothing=spec.label_smoothing,
        convention="uniform" if spec.convention == "-" else spec.convention,
        seed=spec.seed,
    )
    record_path = out / "runs" / f"{spec.name}.json"
    if resume and record_path.is_file():
        record = json.loads(record_path.read_text())
        saved = {k: v for k, v in record.get("config", {}).items() if k != "data_dir"}
        if saved == {k: v for k, v in config.to_dict().items() if k != "data_dir"}:
            log(f"[{spec.name}] already done, skipped (--resume)")
            return dict(record)
    run_dir = out / "runs" / spec.name
    can_resume = resume and (run_dir / "checkpoint.pt").is_file()
    trick = _trick(spec.label_smoothing, spec.convention)
    log(f"[{spec.name}] training: {trick}, seed {spec.seed}")
    result = train(
        config, out_dir=run_dir, resume=can_resume, data=data, progress=progress, log=log
    )
    model = result.model
    kw: dict[str, Any] = {"mean": data.mean, "std": data.std, "batch_size": base.eval_batch_size}
    with torch.no_grad():
        test_logits, test_feats = predict(model, data.test, **kw)  # (N, C), (N, D)
        temperature, after = 1.0, None
        if data.val is not None:
            val_logits, _ = predict(model, data.val, **kw)
            temperature = float(fit_temperature(val_logits, data.val.labels))
            after = evaluate_calibration(
                test_logits, data.test.labels, temperature=temperature, n_bins=base.n_bins
            )
        before = evaluate_calibration(test_logits, data.test.labels, n_bins=base.n_bins)
    after = after or before
    record = {
        "name": spec.name,
        "dataset": spec.dataset,
        "label_smoothing": spec.label_smoothing,
        "convention": spec.convention,
        "seed": spec.seed,
        "config": config.to_dict(),
        "history": result.history,
        "metrics": {k: float(v) for k, v in before.items()},
        "temperature": temperature,
        "metrics_after_temperature": {k: float(v) for k, v in after.items()},
        "seconds": result.seconds,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "sizes": {
            "train": len(data.train),
            "val": len(data.val) if data.val is not None else 0,
            "test": len(data.test),
        },
    }
    record_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = record_path.with_name(record_path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, record_path)
    fc = model.fc
    assert isinstance(fc, torch.nn.Linear)
    if keep_arrays:  # what the plots need, for the first seed only
        np.savez(
            out / "runs" / f"{spec.name}.npz",
            test_logits=test_logits.numpy(),
            test_features=test_feats.numpy(),
            test_labels=data.test.labels.numpy(),
            fc_weight=fc.weight.detach().numpy(),
        )
    m, a = record["metrics"], record["metrics_after_temperature"]
    log(
        f"[{spec.name}] top1 {100 * m['top1']:.2f}%  nll {m['nll']:.4f}  "
        f"ece {100 * m['ece']:.2f}%  T {temperature:.3f}  ece(T) {100 * a['ece']:.2f}%  "
        f"({result.seconds:.0f}s)"
    )
    return record


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
        out: Results folder.
        resume: Skip runs whose JSON exists (same config) and resume a run's checkpoint.
        fallback: When a built-in dataset cannot be fetched, run the other built-in one.
        plots: Write plots (needs matplotlib; skipped with a message otherwise).
        projection_classes: The three classes of the penultimate-layer projection.
        progress: tqdm bars (default: when stderr is a terminal).
        log: Where messages go.

    Returns:
        ``{"records": per-run dicts, "summary": aggregated rows, "table": markdown text,
        "seconds": wall time}``.

    Raises:
        DataUnavailableError: If no section's data could be obtained.
        TrainingInterrupted: On Ctrl-C (the run's checkpoint is saved; ``resume=True``
            continues).
    """
    say = log or (lambda _msg: None)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # 1. Data: each section's dataset once; fall back to another built-in dataset.
    resolved: list[tuple[Section, DatasetSplits]] = []
    errors: list[str] = []
    wanted = [s.dataset for s in sections]
    for section in sections:
        candidates = [section.dataset]
        if fallback and section.dataset in BUILTIN_DATASETS:
            candidates += [d for d in BUILTIN_DATASETS if d not in wanted]
        for ds in candidates:
            try:
                data = prepare_data(dataclasses.replace(base, dataset=ds), log=say)
            except DataUnavailableError as e:
                errors.append(str(e))
                say(f"warning: {e}")
                continue
            if ds != section.dataset:
                say(f"warning: {section.dataset} unavailable; falling back to {ds}")
                wanted.append(ds)
            resolved.append((dataclasses.replace(section, dataset=ds), data))
            break
    if not resolved:
        raise DataUnavailableError("no dataset could be obtained:\n" + "\n".join(errors))

    # 2. Runs, sequentially in-process.
    records: list[dict[str, Any]] = []
    for section, data in resolved:
        runs = plan_runs(section)
        say(
            f"== {section.dataset}: {len(runs)} runs, train {len(data.train)}, "
            f"val {len(data.val) if data.val is not None else 0}, test {len(data.test)}"
        )
        for i, spec in enumerate(runs):
            say(f"-- run {i + 1}/{len(runs)}")
            records.append(
                _one_run(
                    spec,
                    base,
                    data,
                    out_dir,
                    resume=resume,
                    keep_arrays=spec.seed == section.seeds[0],
                    progress=progress,
                    log=say,
                )
            )
    seconds = time.perf_counter() - t0

    # 3. Tables.
    summary = summarize(records)
    table = format_table(summary, records, base, seconds)
    _write_csv(out_dir / "results.csv", [_flat(r) for r in records])
    _write_csv(out_dir / "summary.csv", summary)
    (out_dir / "results.md").write_text(table + "\n")
    (out_dir / "summary.json").write_text(
        json.dumps({"summary": summary, "seconds": seconds, "base": base.to_dict()}, indent=2)
        + "\n"
    )
    say("")
    say(table)

    # 4. Plots.
    if plots:
        try:
            _plots(resolved, records, out_dir / "plots", projection_classes)
            say(f"plots written to {out_dir / 'plots'}")
        except ImportError as e:
            say(f"plots skipped ({e}); install matplotlib: pip install 'labelsmooth[plot]'")
    say(f"results written to {out_dir}  ({seconds / 60:.1f} min)")
    return {"records": records, "summary": summary, "table": table, "seconds": seconds}


# --------------------------------------------------------------------------- tables

_METRICS = {  # column key -> (record getter, scale)
    "top1": (lambda r: r["metrics"]["top1"], 100.0),
    "top5": (lambda r: r["metrics"].get("top5", math.nan), 100.0),
    "nll": (lambda r: r["metrics"]["nll"], 1.0),
    "ece": (lambda r: r["metrics"]["ece"], 100.0),
    "ece_T": (lambda r: r["metrics_after_temperature"]["ece"], 100.0),
    "nll_T": (lambda r: r["metrics_after_temperature"]["nll"], 1.0),
    "T": (lambda r: r["temperature"], 1.0),
    "seconds": (lambda r: r["seconds"], 1.0),
}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation (ddof 1) over seeds per (dataset, ε, convention).

    Accuracies and ECE are in percent; ``d_top1`` is the top-1 improvement over the same
    dataset's baseline in percentage points.
    """
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["label_smoothing"], r["convention"]), []).append(r)
    rows = []
    for (dataset, eps, conv), rs in groups.items():
        row: dict[str, Any] = {
            "dataset": dataset,
            "label_smoothing": eps,
            "convention": conv,
            "trick": _trick(eps, conv),
            "seeds": len(rs),
        }
        for key, (get, scale) in _METRICS.items():
            row[key], row[f"{key}_std"] = _mean_std([scale * float(get(r)) for r in rs])
        rows.append(row)
    for row in rows:
        base = next(
            (b for b in rows if b["dataset"] == row["dataset"] and b["label_smoothing"] == 0),
            None,
        )
        row["d_top1"] = row["top1"] - base["top1"] if base is not None else math.nan
    return rows


def _pm(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_table(
    summary: Sequence[dict[str, Any]],
    records: Sequence[dict[str, Any]],
    base: TrainConfig,
    seconds: float,
) -> str:
    """Markdown tables (one per dataset) with a header stating the budget."""
    blocks = []
    for dataset in dict.fromkeys(r["dataset"] for r in summary):
        rs = [r for r in records if r["dataset"] == dataset]
        rows = [r for r in summary if r["dataset"] == dataset]
        first = rs[0]
        cfg, sizes = first["config"], first["sizes"]
        seeds = sorted({r["seed"] for r in rs})
        run_s = statistics.fmean(r["seconds"] for r in rs)
        model = f"ResNet-{cfg['depth']} (w{cfg['width']})"
        header = (
            f"**{_PRETTY.get(dataset, dataset)}**: {model}, {first['num_parameters']:,} "
            f"parameters; {cfg['epochs']} epochs on a {sizes['train']:,}-image stratified "
            f"training subset; temperature fitted on {sizes['val']:,} held-out images; test "
            f"{sizes['test']:,} images. Mean ± std over {len(seeds)} seeds "
            f"({', '.join(map(str, seeds))}). Budget: {len(rs)} runs × {run_s:.0f} s "
            f"training on {cfg['num_threads']} CPU thread{'s' if cfg['num_threads'] != 1 else ''} "
            f"({seconds / 60:.1f} min wall for "
            f"this invocation, data and evaluation included)."
        )
        cols = [
            "Model",
            "Epochs",
            "dtype",
            "Batch",
            "LR",
            "Trick",
            "Top-1 (%)",
            "Top-5 (%)",
            "Δ Top-1",
            "NLL",
            "ECE (%)",
            "ECE after T (%)",
            "T",
        ]
        body = []
        for r in rows:
            d = "—" if r["label_smoothing"] == 0 else f"{r['d_top1']:+.2f}"
            body.append(
                [
                    model,
                    str(cfg["epochs"]),
                    "fp32",
                    str(cfg["batch_size"]),
                    f"{cfg['lr']:g}",
                    r["trick"],
                    _pm(r["top1"], r["top1_std"], 2),
                    _pm(r["top5"], r["top5_std"], 2),
                    d,
                    _pm(r["nll"], r["nll_std"], 3),
                    _pm(r["ece"], r["ece_std"], 2),
                    _pm(r["ece_T"], r["ece_T_std"], 2),
                    _pm(r["T"], r["T_std"], 2),
                ]
            )
        widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]

        def line(cells: Sequence[str], widths: list[int] = widths) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        blocks.append("\n".join([header, "", line(cols), sep, *(line(b) for b in body)]))
    return "\n\n".join(blocks)


def _flat(r: dict[str, Any]) -> dict[str, Any]:
    cfg = r["config"]
    row = {k: r[k] for k in ("name", "dataset", "label_smoothing", "convention", "seed")}
    row.update({k: cfg[k] for k in ("depth", "width", "epochs", "batch_size", "lr")})
    row["train_size"] = r["sizes"]["train"]
    for key, (get, _) in _METRICS.items():
        row[key] = get(r)
    return row


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# --------------------------------------------------------------------------- plots


def _plots(
    resolved: Sequence[tuple[Section, DatasetSplits]],
    records: Sequence[dict[str, Any]],
    plot_dir: Path,
    classes: tuple[int, int, int],
) -> None:
    import matplotlib  # noqa: F401  (ImportError -> plots skipped)

    from labelsmooth import plotting

    plot_dir.mkdir(parents=True, exist_ok=True)
    runs_dir = plot_dir.parent / "runs"
    for section, data in resolved:
        slug = _slug(section.dataset)
        rs = [r for r in records if r["dataset"] == section.dataset]
        first = [r for r in rs if r["seed"] == section.seeds[0]]
        # Training curves of the first seed, one line per configuration.
        plotting.training_curves(
            {_trick(r["label_smoothing"], r["convention"]): r["history"] for r in first},
            keys=("loss", "top1", "nll", "ece"),
            path=plot_dir / f"{slug}-training-curves.png",
        )
        # Metric vs ε, one series per convention (the baseline is the ε = 0 point of each).
        conventions = list(dict.fromkeys(r["convention"] for r in rs if r["convention"] != "-"))
        for key, (get, scale) in _METRICS.items():
            if key in ("seconds", "nll_T"):
                continue
            fig = None
            for conv in conventions or ["-"]:
                sel = [r for r in rs if r["convention"] in (conv, "-")]
                eps = sorted({r["label_smoothing"] for r in sel})
                vals = [
                    [scale * float(get(r)) for r in sel if r["label_smoothing"] == e] for e in eps
                ]
                unit = " (%)" if scale == 100.0 else ""
                fig = plotting.metric_vs_epsilon(
                    eps,
                    vals,
                    metric=f"{key}{unit}",
                    label=conv,
                    ax=fig.axes[0] if fig is not None else None,
                )
            if fig is not None:
                fig.savefig(plot_dir / f"{slug}-{key}-vs-eps.png", dpi=120)
        # Reliability diagrams and penultimate-layer projections: baseline vs one smoothed run.
        smoothed = [r for r in first if r["label_smoothing"] > 0]
        if not smoothed:
            continue
        pick = min(smoothed, key=lambda r: (abs(r["label_smoothing"] - 0.1), r["convention"]))
        cls = [c for c in classes if c < data.num_classes]
        if len(cls) < 3:
            cls = list(range(min(3, data.num_classes)))
        for r in [x for x in first if x["label_smoothing"] == 0] + [pick]:
            arrays_path = runs_dir / f"{r['name']}.npz"
            if not arrays_path.is_file():
                continue
            with np.load(arrays_path) as z:
                logits = torch.from_numpy(z["test_logits"])
                feats = torch.from_numpy(z["test_features"])
                labels = torch.from_numpy(z["test_labels"])
                weight = torch.from_numpy(z["fc_weight"])
            tag = "baseline" if r["label_smoothing"] == 0 else f"ls{r['label_smoothing']:g}"
            trick = _trick(r["label_smoothing"], r["convention"])
            plotting.reliability_diagram(
                torch.softmax(logits.double(), dim=1),
                labels,
                n_bins=15,
                title=f"{_PRETTY.get(section.dataset, section.dataset)}, {trick}",
                path=plot_dir / f"{slug}-reliability-{tag}.png",
            )
            if len(cls) == 3:
                plotting.penultimate_layer_plot(
                    feats,
                    labels,
                    weight,
                    cls,
                    class_names=[data.class_names[c] for c in cls],
                    title=f"Penultimate layer, {trick}",
                    path=plot_dir / f"{slug}-penultimate-{tag}.png",
                )
