"""Knowledge distillation (Müller et al. 2019, section 5): the :class:`Distillation` task (a
student trained against a fixed teacher by :func:`labelsmooth.distillation_loss` on the image
task's batches) and its report (the teacher/student table and the student's accuracy against
the temperature).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import labelsmooth
from labelsmooth.experiment.files import write_csv, write_json, write_text
from labelsmooth.experiment.report import count, mean_std, slug
from labelsmooth.experiment.tasks.image import ImageClassification
from labelsmooth.experiment.tasks.image_metrics import display_name, model_title

__all__ = [
    "Distillation",
    "summarize_distill",
    "format_distill_table",
    "write_distill_tables",
    "write_distill_plot",
]


@dataclass
class Distillation:
    """Knowledge distillation of a fixed teacher into the model of ``image.config``
    (:class:`Task`).

    Batches, model, evaluation and log text are those of the image task; the loss is
    :func:`labelsmooth.distillation_loss` of the student's logits against the teacher's
    (computed on the same, possibly augmented, batch in eval mode, without gradients).

    Args:
        image: The student's image task (its config's ``label_smoothing`` is the hard term's ε).
        teacher: The trained teacher (kept in eval mode, never updated).
        temperature: Distillation temperature T > 0.
        alpha: Weight of the soft (teacher) term, in [0, 1].
    """

    image: ImageClassification
    teacher: nn.Module
    temperature: float
    alpha: float

    def __post_init__(self) -> None:
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def num_batches(self) -> int:
        return self.image.num_batches()

    def build_model(self) -> nn.Module:
        return self.image.build_model()

    def train_batches(
        self, generator: torch.Generator, start: int, resume_state: torch.Tensor | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.image.train_batches(generator, start, resume_state)

    def loss(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, int]:
        x, y = batch  # (B, C, H, W), (B,)
        with torch.no_grad():
            teacher_logits = self.teacher(x)  # (B, classes)
        loss = labelsmooth.distillation_loss(
            model(x),
            teacher_logits,
            y,
            temperature=self.temperature,
            alpha=self.alpha,
            label_smoothing=self.image.config.label_smoothing,
        )
        return loss, int(y.shape[0])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return self.image.evaluate(model)

    def describe(self, metrics: dict[str, float]) -> str:
        return self.image.describe(metrics)


# --------------------------------------------------------------------------- the report


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
            mean_std([100 * t["metrics"]["top1"] for t in ts]) if ts else (math.nan, math.nan)
        )
        row["student_top1"], row["student_top1_std"] = mean_std(
            [100 * r["metrics"]["top1"] for r in rs]
        )
        row["student_ece"], row["student_ece_std"] = mean_std(
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
        f"**{display_name(s_cfg['dataset'])}, distillation**: teachers {model_title(t_cfg)} "
        f"({teachers[0]['num_parameters']:,} parameters, fitted regime, "
        f"{count(int(t_cfg['epochs']), 'epoch')}), students {model_title(s_cfg)} "
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
        title=f"{display_name(dataset)}: distillation, student top-1 against T",
        path=plot_dir / f"{slug(dataset)}-distill-student-vs-T.png",
    )
