"""Tables and plots of a comparison (:func:`labelsmooth.experiment.train.compare.run_compare`).

Writes into the results folder:

* ``results.csv`` (one row per run), ``summary.csv``, ``summary.json`` and ``results.md``
  (one table per regime and dataset in the classic "model / epochs / dtype / batch / lr /
  trick / top-1 / top-5 / improvement" layout plus NLL, ECE, ECE after temperature scaling,
  T, train top-1 and NLL, and cluster tightness; mean ± std over seeds, or plain values with
  one seed),
* ``plots/``: training curves (every seed: mean line and ± std band), metric against ε,
  reliability diagrams and penultimate-layer projections (first seed, named in the title),
  and ECE against ε for every regime side by side with temperature scaling's ECE,
* for distillation (:func:`write_distill_tables`): ``distill.md`` and ``distill.csv``, and
  the student's accuracy against T (:func:`write_distill_plot`).

Accuracies and ECE are shown in percent everywhere; the records keep fractions.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from labelsmooth.experiment.train._files import write_csv, write_json, write_text
from labelsmooth.experiment.train.config import TrainConfig

if TYPE_CHECKING:
    from labelsmooth.experiment.data import DatasetSplits
    from labelsmooth.experiment.train.compare import Section

__all__ = [
    "count",
    "slug",
    "prefix",
    "trick",
    "run_line",
    "summarize",
    "format_table",
    "write_tables",
    "write_plots",
    "write_distill_tables",
    "write_distill_plot",
]

_PRETTY = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}
_DTYPE_SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}

#: Summary column -> (record getter, scale to the shown unit, plot axis label).
_METRICS = {
    "top1": (lambda r: r["metrics"]["top1"], 100.0, "test top-1 accuracy (%)"),
    "top5": (lambda r: r["metrics"].get("top5", math.nan), 100.0, "test top-5 accuracy (%)"),
    "nll": (lambda r: r["metrics"]["nll"], 1.0, "test NLL (nats)"),
    "ece": (lambda r: r["metrics"]["ece"], 100.0, "test ECE (%)"),
    "ece_T": (lambda r: r["metrics_after_temperature"]["ece"], 100.0, "test ECE after T (%)"),
    "nll_T": (lambda r: r["metrics_after_temperature"]["nll"], 1.0, "test NLL after T (nats)"),
    "T": (lambda r: r["temperature"], 1.0, "fitted temperature T"),
    "train_top1": (lambda r: _get(r, "train_metrics", "top1"), 100.0, "train top-1 (%)"),
    "train_nll": (lambda r: _get(r, "train_metrics", "nll"), 1.0, "train NLL (nats)"),
    "tightness": (
        lambda r: _get(r, "representation", "tightness"),
        1.0,
        "cluster tightness (spread / distance)",
    ),
    "tightness_proj": (
        lambda r: _get(r, "representation", "tightness_projection"),
        1.0,
        "cluster tightness, 3-template projection",
    ),
    "seconds": (lambda r: r["seconds"], 1.0, "training time (s)"),
}


def _get(record: dict[str, Any], part: str, key: str) -> float:
    """``record[part][key]``, NaN for records written before that part existed."""
    return float(record.get(part, {}).get(key, math.nan))


def _regime(record: dict[str, Any]) -> str:
    return str(record.get("regime", "short"))


def count(n: int, noun: str) -> str:
    """``"1 seed"``, ``"3 seeds"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def slug(dataset: str) -> str:
    """The file-name form of a dataset specification (run and plot names start with it)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", dataset).strip("-")[-48:] or "data"


def trick(eps: float, convention: str) -> str:
    """The table's name of a configuration: ``"baseline"`` or ``"LS ε=0.1 (uniform)"``."""
    return "baseline" if eps == 0 else f"LS ε={eps:g} ({convention})"


def prefix(dataset: str, regime: str) -> str:
    """Run and plot names start with this: the dataset's slug, plus the regime unless it is
    ``"short"`` (the names of the first reproduction)."""
    return slug(dataset) if regime == "short" else f"{slug(dataset)}-{regime}"


def _pretty(dataset: str) -> str:
    return _PRETTY.get(dataset, dataset)


def run_line(record: dict[str, Any]) -> str:
    """One log line for a finished run."""
    m, a = record["metrics"], record["metrics_after_temperature"]
    return (
        f"[{record['name']}] test top-1 {100 * m['top1']:.2f}%  NLL {m['nll']:.4f}  "
        f"ECE {100 * m['ece']:.2f}%  T {record['temperature']:.3f}  "
        f"ECE after T {100 * a['ece']:.2f}%  ({record['seconds']:.0f} s)"
    )


# --------------------------------------------------------------------------- tables


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation (ddof 1; 0 for one seed) per (regime, dataset, ε,
    convention).

    Accuracies and ECE are in percent; ``d_top1`` is the top-1 improvement over the same
    regime's and dataset's baseline in percentage points.
    """
    groups: dict[tuple[str, str, float, str], list[dict[str, Any]]] = {}
    for r in records:
        group = (_regime(r), r["dataset"], r["label_smoothing"], r["convention"])
        groups.setdefault(group, []).append(r)
    rows = []
    for (regime, dataset, eps, conv), rs in groups.items():
        row: dict[str, Any] = {
            "regime": regime,
            "dataset": dataset,
            "label_smoothing": eps,
            "convention": conv,
            "trick": trick(eps, conv),
            "seeds": len(rs),
        }
        for key, (get, scale, _) in _METRICS.items():
            row[key], row[f"{key}_std"] = _mean_std([scale * float(get(r)) for r in rs])
        rows.append(row)
    for row in rows:
        base = next(
            (
                b
                for b in rows
                if (b["regime"], b["dataset"]) == (row["regime"], row["dataset"])
                and b["label_smoothing"] == 0
            ),
            None,
        )
        row["d_top1"] = row["top1"] - base["top1"] if base is not None else math.nan
    return rows


_COLUMNS = ["Model", "Epochs", "dtype", "Batch", "LR", "Trick", "Top-1 (%)", "Top-5 (%)"]
_COLUMNS += ["Δ Top-1", "NLL", "ECE (%)", "ECE after T (%)", "T", "Train top-1 (%)"]
_COLUMNS += ["Train NLL", "Tightness", "Tightness (proj.)"]


def _model_name(cfg: dict[str, Any]) -> str:
    if cfg.get("model") == "mlp":
        return f"MLP {cfg['width']}-{cfg['width']}"
    return f"ResNet-{cfg['depth']} (w{cfg['width']})"


def format_table(
    summary: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]], seconds: float
) -> str:
    """Markdown tables (one per regime and dataset), each under a sentence stating the
    budget."""
    blocks = []
    for regime, dataset in dict.fromkeys((r["regime"], r["dataset"]) for r in summary):
        rs = [r for r in records if (_regime(r), r["dataset"]) == (regime, dataset)]
        rows = [r for r in summary if (r["regime"], r["dataset"]) == (regime, dataset)]
        model = _model_name(rs[0]["config"])
        body = [_table_row(r, rs[0], model) for r in rows]
        widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(_COLUMNS)]

        def line(cells: Sequence[str], widths: list[int] = widths) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        table = [line(_COLUMNS), sep, *(line(b) for b in body)]
        header = _table_header(dataset, rs, model, seconds, regime)
        blocks.append("\n".join([header, "", *table]))
    return "\n\n".join(blocks)


def _table_header(
    dataset: str, rs: Sequence[dict[str, Any]], model: str, seconds: float, regime: str = "short"
) -> str:
    first = rs[0]
    cfg, sizes = first["config"], first["sizes"]
    seeds = sorted({r["seed"] for r in rs})
    listed = ", ".join(map(str, seeds))
    spread = (
        f"Mean ± std over {count(len(seeds), 'seed')} ({listed})"
        if len(seeds) > 1
        else f"One run per row, seed {listed}"
    )
    run_s = statistics.fmean(r["seconds"] for r in rs)
    return (
        f"**{_pretty(dataset)}, {regime} regime**: {model}, {first['num_parameters']:,} "
        "parameters; "
        f"{count(cfg['epochs'], 'epoch')} on a {sizes['train']:,}-image stratified training "
        f"subset; temperature fitted on {sizes['val']:,} held-out images; test "
        f"{sizes['test']:,} images. {spread}. Budget: {count(len(rs), 'run')} × {run_s:.0f} s "
        f"training on {count(cfg['num_threads'], 'CPU thread')} ({seconds / 60:.1f} min wall "
        f"for this invocation, data and evaluation included)."
    )


def _table_row(r: dict[str, Any], record: dict[str, Any], model: str) -> list[str]:
    cfg = record["config"]

    def cell(key: str, digits: int) -> str:
        if math.isnan(r[key]):
            return "—"
        if r["seeds"] == 1:
            return f"{r[key]:.{digits}f}"
        return f"{r[key]:.{digits}f} ± {r[f'{key}_std']:.{digits}f}"

    dtype = str(record.get("dtype", "?"))
    return [
        model,
        str(cfg["epochs"]),
        _DTYPE_SHORT.get(dtype, dtype),
        str(cfg["batch_size"]),
        f"{cfg['lr']:g}",
        r["trick"],
        cell("top1", 2),
        cell("top5", 2),
        "—" if r["label_smoothing"] == 0 else f"{r['d_top1']:+.2f}",
        cell("nll", 3),
        cell("ece", 2),
        cell("ece_T", 2),
        cell("T", 2),
        cell("train_top1", 2),
        cell("train_nll", 3),
        cell("tightness", 3),
        cell("tightness_proj", 3),
    ]


def _flat(r: dict[str, Any]) -> dict[str, Any]:
    cfg = r["config"]
    row = {"name": r["name"], "regime": _regime(r)}
    row.update({k: r[k] for k in ("dataset", "label_smoothing", "convention", "seed")})
    row.update({k: cfg.get(k, "resnet") for k in ("model",)})
    row.update({k: cfg[k] for k in ("depth", "width", "epochs", "batch_size", "lr")})
    row["train_size"] = r["sizes"]["train"]
    for key, (get, _, _) in _METRICS.items():
        row[key] = get(r)
    return row


def write_tables(
    out_dir: Path, records: Sequence[dict[str, Any]], base: TrainConfig, seconds: float
) -> tuple[list[dict[str, Any]], str]:
    """Write ``results.csv``, ``summary.csv``, ``summary.json`` and ``results.md``; return the
    summary rows and the markdown text."""
    summary = summarize(records)
    table = format_table(summary, records, seconds)
    write_csv(out_dir / "results.csv", [_flat(r) for r in records])
    write_csv(out_dir / "summary.csv", summary)
    write_text(out_dir / "results.md", table + "\n")
    write_json(
        out_dir / "summary.json", {"summary": summary, "seconds": seconds, "base": base.to_dict()}
    )
    return summary, table


# --------------------------------------------------------------------------- plots


def write_plots(
    resolved: Sequence[tuple[Section, DatasetSplits]],
    records: Sequence[dict[str, Any]],
    plot_dir: Path,
    classes: tuple[int, int, int],
) -> None:
    """Every plot of every section into ``plot_dir`` (ImportError without matplotlib)."""
    import matplotlib  # noqa: F401  (ImportError -> the caller skips the plots)

    plot_dir.mkdir(parents=True, exist_ok=True)
    for section, data in resolved:
        rs = [r for r in records if (_regime(r), r["dataset"]) == (section.regime, section.dataset)]
        if not rs:
            continue
        name = prefix(section.dataset, section.regime)
        _curves_plot(section.dataset, rs, plot_dir, name)
        _epsilon_plots(section.dataset, rs, plot_dir, name)
        first = [r for r in rs if r["seed"] == section.seeds[0]]
        _first_seed_plots(section.dataset, first, data, plot_dir, classes, name)
    for dataset in dict.fromkeys(s.dataset for s, _ in resolved):
        _regimes_plot(dataset, [r for r in records if r["dataset"] == dataset], plot_dir)


def _regimes_plot(dataset: str, rs: Sequence[dict[str, Any]], plot_dir: Path) -> None:
    """ECE against ε (uniform convention) for every regime side by side, with the baseline's
    ECE after temperature scaling as the reference line."""
    from labelsmooth.experiment import plotting

    panels: dict[str, Any] = {}
    for regime in dict.fromkeys(_regime(r) for r in rs):
        sel = [r for r in rs if _regime(r) == regime and r["convention"] in ("uniform", "-")]
        eps = sorted({r["label_smoothing"] for r in sel})
        if len(eps) < 2:
            continue
        model = _model_name(sel[0]["config"])
        epochs = count(int(sel[0]["config"]["epochs"]), "epoch")
        panels[f"{regime} regime: {model}, {epochs}"] = (
            eps,
            [[100 * r["metrics"]["ece"] for r in sel if r["label_smoothing"] == e] for e in eps],
            [100 * r["metrics_after_temperature"]["ece"] for r in sel if r["label_smoothing"] == 0],
        )
    if panels:
        plotting.ece_by_regime(
            panels,
            title=f"{_pretty(dataset)}: test ECE against label smoothing ε",
            path=plot_dir / f"{slug(dataset)}-ece-vs-eps-by-regime.png",
        )


def _curves_plot(dataset: str, rs: Sequence[dict[str, Any]], plot_dir: Path, name: str) -> None:
    from labelsmooth.experiment import plotting

    runs: dict[str, list[list[dict[str, float]]]] = {}
    for r in rs:
        runs.setdefault(trick(r["label_smoothing"], r["convention"]), []).append(r["history"])
    seeds = sorted({r["seed"] for r in rs})
    listed = ", ".join(map(str, seeds))
    who = f"mean ± std over {len(seeds)} seeds ({listed})" if len(seeds) > 1 else f"seed {listed}"
    plotting.training_curves(
        runs,
        keys=("loss", "top1", "nll", "ece"),
        title=f"{_pretty(dataset)}: {who}",
        path=plot_dir / f"{name}-training-curves.png",
    )


def _epsilon_plots(dataset: str, rs: Sequence[dict[str, Any]], plot_dir: Path, name: str) -> None:
    """Metric vs ε, one series per convention (the baseline is each series' ε = 0 point)."""
    from labelsmooth.experiment import plotting

    conventions = list(dict.fromkeys(r["convention"] for r in rs if r["convention"] != "-"))
    for key, (get, scale, label) in _METRICS.items():
        if key in ("seconds", "nll_T") or any(math.isnan(float(get(r))) for r in rs):
            continue
        fig = None
        for i, conv in enumerate(conventions or ["-"]):
            sel = [r for r in rs if r["convention"] in (conv, "-")]
            eps = sorted({r["label_smoothing"] for r in sel})
            vals = [[scale * float(get(r)) for r in sel if r["label_smoothing"] == e] for e in eps]
            last = i == len(conventions or ["-"]) - 1
            fig = plotting.metric_vs_epsilon(
                eps,
                vals,
                metric=label,
                label=conv if conv != "-" else None,
                title=f"{_pretty(dataset)} ({_regime(rs[0])} regime): {label}",
                ax=fig.axes[0] if fig is not None else None,
                path=plot_dir / f"{name}-{key}-vs-eps.png" if last else None,
            )


def _first_seed_plots(
    dataset: str,
    first: Sequence[dict[str, Any]],
    data: DatasetSplits,
    plot_dir: Path,
    classes: tuple[int, int, int],
    stem: str,
) -> None:
    """Reliability diagrams and penultimate-layer projections: baseline vs one smoothed run."""
    from labelsmooth.experiment import plotting

    smoothed = [r for r in first if r["label_smoothing"] > 0]
    if not smoothed:
        return
    pick = min(
        smoothed, key=lambda r: (abs(r["label_smoothing"] - 0.1), r["convention"] != "uniform")
    )
    cls = [c for c in classes if c < data.num_classes]
    if len(cls) < 3:
        cls = list(range(min(3, data.num_classes)))
    for r in [x for x in first if x["label_smoothing"] == 0] + [pick]:
        arrays_path = plot_dir.parent / "runs" / f"{r['name']}.npz"
        if not arrays_path.is_file():
            continue
        with np.load(arrays_path) as z:
            logits, feats, labels, weight = (
                torch.from_numpy(z[k])
                for k in ("test_logits", "test_features", "test_labels", "fc_weight")
            )
        tag = "baseline" if r["label_smoothing"] == 0 else f"ls{r['label_smoothing']:g}"
        name = f"{trick(r['label_smoothing'], r['convention'])}, seed {r['seed']}"
        plotting.reliability_diagram(
            torch.softmax(logits.double(), dim=1),
            labels,
            n_bins=int(r["config"]["n_bins"]),
            title=f"{_pretty(dataset)} ({_regime(r)} regime), {name}",
            path=plot_dir / f"{stem}-reliability-{tag}.png",
        )
        if len(cls) == 3:
            plotting.penultimate_layer_plot(
                feats,
                labels,
                weight,
                cls,
                class_names=[data.class_names[c] for c in cls],
                title=f"{_pretty(dataset)} ({_regime(r)}): penultimate layer\n{name}",
                path=plot_dir / f"{stem}-penultimate-{tag}.png",
            )


# --------------------------------------------------------------------------- distillation


def _distill_key(r: dict[str, Any]) -> tuple[float, float]:
    """(teacher ε, T) of a student; (-1, 0) for a student trained alone (sorts first)."""
    d = r["distill"]
    if d["teacher"] is None:
        return (-1.0, 0.0)
    return (float(d["teacher_label_smoothing"]), float(d["temperature"]))


def summarize_distill(
    teachers: Sequence[dict[str, Any]], students: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per (teacher ε, T) and one for the students trained alone: teacher and
    student test top-1 (%), student ECE (%), mean and std over seeds."""
    groups: dict[tuple[float, float], list[dict[str, Any]]] = {}
    for r in students:
        groups.setdefault(_distill_key(r), []).append(r)
    rows = []
    for (eps, temp), rs in sorted(groups.items()):
        alone = eps < 0
        seeds = {r["seed"] for r in rs}
        ts = [t for t in teachers if t["label_smoothing"] == eps and t["seed"] in seeds]
        row: dict[str, Any] = {
            "teacher_label_smoothing": None if alone else eps,
            "temperature": None if alone else temp,
            "alpha": None if alone else rs[0]["distill"]["alpha"],
            "seeds": len(rs),
        }
        row["teacher_top1"], row["teacher_top1_std"] = (
            _mean_std([100 * t["metrics"]["top1"] for t in ts]) if ts else (math.nan, math.nan)
        )
        row["student_top1"], row["student_top1_std"] = _mean_std(
            [100 * r["metrics"]["top1"] for r in rs]
        )
        row["student_ece"], row["student_ece_std"] = _mean_std(
            [100 * r["metrics"]["ece"] for r in rs]
        )
        rows.append(row)
    return rows


def format_distill_table(
    summary: Sequence[dict[str, Any]],
    teachers: Sequence[dict[str, Any]],
    students: Sequence[dict[str, Any]],
    seconds: float,
) -> str:
    """The distillation table under a sentence stating models, budget and seeds."""
    t_cfg, s_cfg = teachers[0]["config"], students[0]["config"]
    seeds = sorted({r["seed"] for r in students})
    alpha = next((r["alpha"] for r in summary if r["alpha"] is not None), None)
    s_run = statistics.fmean(r["seconds"] for r in students)
    head = (
        f"**{_pretty(s_cfg['dataset'])}, distillation**: teachers {_model_name(t_cfg)} "
        f"({teachers[0]['num_parameters']:,} parameters, fitted regime, "
        f"{count(int(t_cfg['epochs']), 'epoch')}), students {_model_name(s_cfg)} "
        f"({students[0]['num_parameters']:,} parameters, "
        f"{count(int(s_cfg['epochs']), 'epoch')}, α = {alpha}) trained by "
        f'`labelsmooth.distillation_loss`; "alone" is the student trained with plain '
        f"cross-entropy. Mean ± std over {count(len(seeds), 'seed')} "
        f"({', '.join(map(str, seeds))}). Budget: {count(len(students), 'student')} × "
        f"{s_run:.0f} s on {count(int(s_cfg['num_threads']), 'CPU thread')} "
        f"({seconds / 60:.1f} min wall for this step, teachers reused or trained included)."
    )
    columns = ["Teacher ε", "Teacher top-1 (%)", "T", "Student top-1 (%)", "Student ECE (%)"]

    def pm(mean: float, std: float) -> str:
        return "—" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"

    body = [
        [
            "—" if r["teacher_label_smoothing"] is None else f"{r['teacher_label_smoothing']:g}",
            pm(r["teacher_top1"], r["teacher_top1_std"]),
            "alone" if r["temperature"] is None else f"{r['temperature']:g}",
            pm(r["student_top1"], r["student_top1_std"]),
            pm(r["student_ece"], r["student_ece_std"]),
        ]
        for r in summary
    ]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([head, "", line(columns), sep, *(line(b) for b in body)])


def write_distill_tables(
    out_dir: Path,
    teachers: Sequence[dict[str, Any]],
    students: Sequence[dict[str, Any]],
    seconds: float,
) -> tuple[list[dict[str, Any]], str]:
    """Write ``distill.md``, ``distill.csv`` and ``distill.json``; return the rows and the
    markdown text."""
    summary = summarize_distill(teachers, students)
    table = format_distill_table(summary, teachers, students, seconds)
    write_csv(out_dir / "distill.csv", summary)
    write_text(out_dir / "distill.md", table + "\n")
    write_json(out_dir / "distill.json", {"summary": summary, "seconds": seconds})
    return summary, table


def write_distill_plot(summary: Sequence[dict[str, Any]], plot_dir: Path, dataset: str) -> None:
    """Student top-1 against T, one line per teacher ε (ImportError without matplotlib)."""
    from labelsmooth.experiment import plotting

    plot_dir.mkdir(parents=True, exist_ok=True)
    series: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for r in summary:
        if r["temperature"] is None:
            continue
        name = f"teacher ε={r['teacher_label_smoothing']:g} ({r['teacher_top1']:.2f}%)"
        xs, ys, es = series.setdefault(name, ([], [], []))
        xs.append(r["temperature"])
        ys.append(r["student_top1"])
        es.append(r["student_top1_std"])
    alone = next((r for r in summary if r["temperature"] is None), None)
    plotting.student_accuracy_vs_temperature(
        series,
        alone=(alone["student_top1"], alone["student_top1_std"]) if alone else None,
        title=f"{_pretty(dataset)}: distillation, student top-1 against T",
        path=plot_dir / f"{slug(dataset)}-distill-student-vs-T.png",
    )
