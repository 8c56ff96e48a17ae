"""Tables of a comparison (:func:`labelsmooth.experiment.train.compare.run_compare`), for any task.

Writes into the results folder:

* ``results.csv`` (one row per run), ``summary.csv``, ``summary.json`` and ``results.md``
  (one table per regime and dataset in the classic "model / epochs / dtype / batch / lr /
  setting" layout followed by the task's columns, :attr:`TaskSpec.columns
  <labelsmooth.experiment.tasks.TaskSpec>`: for images top-1, top-5, improvement, NLL, ECE,
  ECE after temperature scaling, T, train top-1 and NLL, and cluster tightness; mean ± std
  over seeds, or plain values with one seed),

The plots of a task are the task's (the image task's in
:mod:`labelsmooth.experiment.tasks.image_plots`). Accuracies and ECE are shown in percent
everywhere; the records keep fractions.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelsmooth.experiment.config import TrainConfig
from labelsmooth.experiment.files import write_csv, write_json, write_text

if TYPE_CHECKING:  # the registry's types only: tasks import this module for count/slug
    from labelsmooth.experiment.tasks.registry import TaskSpec

__all__ = [
    "count",
    "slug",
    "prefix",
    "setting_name",
    "ols_alpha",
    "is_baseline",
    "mean_std",
    "summarize",
    "format_table",
    "write_tables",
]

_DTYPE_SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}
#: The table's first columns, the same for every task (then the task's own).
_LEADING = ["Model", "Epochs", "dtype", "Batch", "LR", "Setting"]


def _regime(record: Mapping[str, Any]) -> str:
    return str(record.get("regime", "short"))


def count(n: int, noun: str) -> str:
    """``"1 seed"``, ``"3 seeds"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def slug(dataset: str) -> str:
    """The file-name form of a dataset specification (run and plot names start with it)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", dataset).strip("-")[-48:] or "data"


def setting_name(eps: float, convention: str, ols_alpha: float | None = None) -> str:
    """The table's name of a smoothing setting: ``"baseline"``, ``"LS ε=0.1 (uniform)"``, or
    with ``ols_alpha`` online label smoothing: ``"OLS (α=0.5)"`` (``"OLS (α=0.5, others)"``
    with another convention than the paper's uniform)."""
    if ols_alpha is not None:
        conv = "" if convention in ("uniform", "-") else f", {convention}"
        return f"OLS (α={ols_alpha:g}{conv})"
    return "baseline" if eps == 0 else f"LS ε={eps:g} ({convention})"


def ols_alpha(record: Mapping[str, Any]) -> float | None:
    """The α of an online-label-smoothing run's record, or None (a cross-entropy run; also
    every record written before the loss was recorded)."""
    if record.get("loss", "ce") != "ols":
        return None
    return float(record["ols_alpha"])


def is_baseline(row: Mapping[str, Any]) -> bool:
    """Whether a record or summary row is the baseline (ε = 0, plain cross-entropy)."""
    return row["label_smoothing"] == 0 and row.get("loss", "ce") == "ce"


def prefix(dataset: str, regime: str) -> str:
    """Run and plot names start with this: the dataset's slug, plus the regime unless it is
    ``"short"`` (the names of the first reproduction) or ``"default"`` (a task's only one)."""
    return slug(dataset) if regime in ("short", "default") else f"{slug(dataset)}-{regime}"


# --------------------------------------------------------------------------- tables


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation (ddof 1; 0 for one value); NaN for both if any is NaN."""
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(records: Sequence[dict[str, Any]], spec: TaskSpec) -> list[dict[str, Any]]:
    """Mean and standard deviation (ddof 1; 0 for one seed) of each of the task's metrics per
    (regime, dataset, ε, convention, loss, OLS α).

    Metrics are in their shown unit (percent for accuracies and ECE); ``d_<key>`` of each
    ``delta`` column is the difference to the same regime's and dataset's baseline.
    """
    groups: dict[tuple[str, str, float, str, float | None], list[dict[str, Any]]] = {}
    for r in records:
        group = (_regime(r), r["dataset"], r["label_smoothing"], r["convention"], ols_alpha(r))
        groups.setdefault(group, []).append(r)
    rows = []
    for (regime, dataset, eps, conv, alpha), rs in groups.items():
        row: dict[str, Any] = {
            "regime": regime,
            "dataset": dataset,
            "label_smoothing": eps,
            "convention": conv,
            "setting": setting_name(eps, conv, alpha),
            "seeds": len(rs),
        }
        if alpha is not None:  # only then: a grid without OLS writes the summary as before
            row.update(loss="ols", ols_alpha=alpha)
        for key, metric in spec.metrics.items():
            row[key], row[f"{key}_std"] = mean_std(
                [metric.scale * float(metric.get(r)) for r in rs]
            )
        rows.append(row)
    for row in rows:
        base = next(
            (
                b
                for b in rows
                if (b["regime"], b["dataset"]) == (row["regime"], row["dataset"]) and is_baseline(b)
            ),
            None,
        )
        for key in dict.fromkeys(c.key for c in spec.columns if c.delta):
            row[f"d_{key}"] = row[key] - base[key] if base is not None else math.nan
    return rows


def format_table(
    summary: Sequence[dict[str, Any]],
    records: Sequence[dict[str, Any]],
    seconds: float,
    spec: TaskSpec,
) -> str:
    """Markdown tables (one per regime and dataset), each under the task's sentence stating
    the budget."""
    headers = _LEADING + [c.header for c in spec.columns]
    blocks = []
    for regime, dataset in dict.fromkeys((r["regime"], r["dataset"]) for r in summary):
        rs = [r for r in records if (_regime(r), r["dataset"]) == (regime, dataset)]
        rows = [r for r in summary if (r["regime"], r["dataset"]) == (regime, dataset)]
        cfg = rs[0]["config"]
        model = spec.model(cfg["model"]).title(cfg)
        body = [_table_row(r, rs[0], model, spec) for r in rows]
        widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(headers)]

        def line(cells: Sequence[str], widths: list[int] = widths) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        table = [line(headers), sep, *(line(b) for b in body)]
        header = spec.table_header(dataset, regime, rs, model, seconds)
        blocks.append("\n".join([header, "", *table]))
    return "\n\n".join(blocks)


def _table_row(r: dict[str, Any], record: dict[str, Any], model: str, spec: TaskSpec) -> list[str]:
    cfg = record["config"]

    def cell(key: str, digits: int) -> str:
        if math.isnan(r[key]):
            return "—"
        if r["seeds"] == 1:
            return f"{r[key]:.{digits}f}"
        return f"{r[key]:.{digits}f} ± {r[f'{key}_std']:.{digits}f}"

    def delta(key: str, digits: int) -> str:
        return "—" if is_baseline(r) else f"{r[f'd_{key}']:+.{digits}f}"

    dtype = str(record.get("dtype", "?"))
    return [
        model,
        str(cfg["epochs"]),
        _DTYPE_SHORT.get(dtype, dtype),
        str(cfg["batch_size"]),
        f"{cfg['lr']:g}",
        r["setting"],
        *(delta(c.key, c.digits) if c.delta else cell(c.key, c.digits) for c in spec.columns),
    ]


def _flat(r: dict[str, Any], spec: TaskSpec) -> dict[str, Any]:
    cfg = r["config"]
    row = {"name": r["name"], "regime": _regime(r)}
    row.update({k: r[k] for k in ("dataset", "label_smoothing", "convention", "seed")})
    if ols_alpha(r) is not None:  # only then: a grid without OLS writes results.csv as before
        row.update(loss="ols", ols_alpha=ols_alpha(r))
    row.update({k: cfg.get(k, "resnet") for k in ("model",)})
    row.update({k: cfg[k] for k in ("depth", "width", "epochs", "batch_size", "lr")})
    row["train_size"] = r["sizes"].get("train", math.nan)
    for key, metric in spec.metrics.items():
        row[key] = metric.get(r)
    return row


def _one_layout(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """CSV rows with the same columns: those of OLS rows (``loss``, ``ols_alpha``) added to
    the others as ``ce`` and empty."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    blank = {"loss": "ce", "ols_alpha": ""}
    return [{k: r.get(k, blank.get(k, "")) for k in columns} for r in rows]


def write_tables(
    out_dir: Path,
    records: Sequence[dict[str, Any]],
    base: TrainConfig,
    seconds: float,
    spec: TaskSpec,
) -> tuple[list[dict[str, Any]], str]:
    """Write ``results.csv``, ``summary.csv``, ``summary.json`` and ``results.md``; return the
    summary rows and the markdown text."""
    summary = summarize(records, spec)
    table = format_table(summary, records, seconds, spec)
    write_csv(out_dir / "results.csv", _one_layout([_flat(r, spec) for r in records]))
    write_csv(out_dir / "summary.csv", _one_layout(summary))
    write_text(out_dir / "results.md", table + "\n")
    write_json(
        out_dir / "summary.json", {"summary": summary, "seconds": seconds, "base": base.to_dict()}
    )
    return summary, table
