"""The grid a comparison trains: its sections (a dataset's ε × conventions × seeds in one
regime of a task), the runs they plan, and one run trained (or reused with ``--resume``) and
recorded. Shared by :mod:`~labelsmooth.experiment.train.compare` and
:mod:`~labelsmooth.experiment.train.distill`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelsmooth.experiment import report
from labelsmooth.experiment.config import TrainConfig, check_field, config_differences
from labelsmooth.experiment.data import DataUnavailableError
from labelsmooth.experiment.files import write_json
from labelsmooth.experiment.tasks import TaskSpec, get_task, resolve
from labelsmooth.experiment.tasks.image import SHORT_TRAIN
from labelsmooth.experiment.train.trainer import TrainResult, train

__all__ = [
    "DEFAULT_TRAIN",
    "Section",
    "default_sections",
    "DEFAULT_SECTIONS",
    "FULL_SECTIONS",
    "RunSpec",
    "plan_runs",
    "section_config",
    "load_sections",
    "reusable_record",
    "run_record",
    "train_run",
]

#: The image task's short regime (:data:`labelsmooth.experiment.tasks.image.SHORT_TRAIN`).
DEFAULT_TRAIN = SHORT_TRAIN


@dataclass(frozen=True)
class Section:
    """One dataset's grid in one regime of a task: every ε > 0 is combined with every
    convention, plus the ``extra`` (ε, convention) pairs; ε = 0 (the baseline) runs once per
    seed; each α of ``ols_alphas`` adds an online-label-smoothing run per seed (``loss="ols"``,
    the paper's uniform convention; the task must take that loss). Values are checked as
    :class:`TrainConfig` checks them; ``regime`` is one of the task's regimes (default: its
    first, for images ``"fitted"``, as on the command line)."""

    dataset: str
    epsilons: tuple[float, ...] = (0.0, 0.1)
    conventions: tuple[str, ...] = ("uniform",)
    seeds: tuple[int, ...] = (0, 1, 2)
    regime: str | None = None
    extra: tuple[tuple[float, str], ...] = ()
    task: str = "image"
    ols_alphas: tuple[float, ...] = ()

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
        for alpha in self.ols_alphas:
            check_field("ols_alpha", alpha)
        if self.ols_alphas and "ols" not in spec.losses:
            raise ValueError(
                f"ols_alphas: task {self.task!r} takes loss {', '.join(spec.losses)}, not "
                "'ols' (online label smoothing)"
            )
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
#: "others", 3 seeds (36 runs), then :data:`~labelsmooth.experiment.train.distill.FULL_DISTILL`.
FULL_SECTIONS = tuple(
    Section("fashion-mnist", _FULL_EPS, ("uniform",), (0, 1, 2), regime, extra=((0.1, "others"),))
    for regime in ("fitted", "short")
)


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid (``ols_alpha`` not None: online label smoothing)."""

    name: str
    dataset: str
    label_smoothing: float
    convention: str  # "-" for the baseline
    seed: int
    ols_alpha: float | None = None


def plan_runs(section: Section) -> list[RunSpec]:
    """The runs of a section, seed-major (so an interrupted grid has whole seeds done).

    Names are ``<dataset>-<tag>-seed<s>`` in the short regime and
    ``<dataset>-<regime>-<tag>-seed<s>`` otherwise; the tag is ``baseline``,
    ``ls<ε>-<convention>`` or ``ols<α>``."""
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
        for alpha in dict.fromkeys(float(a) for a in section.ols_alphas):
            name = f"{slug}-ols{alpha:g}-seed{seed}"
            runs.append(RunSpec(name, section.dataset, 0.0, "uniform", seed, ols_alpha=alpha))
    return runs


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


def load_sections(
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


def reusable_record(
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


def run_record(name: str, config: TrainConfig, result: TrainResult, **parts: Any) -> dict[str, Any]:
    """The record of a finished run: who it is, how it ran, and the task's ``parts``."""
    model = result.model
    return {
        "name": name,
        "dataset": config.dataset,
        "label_smoothing": config.label_smoothing,
        "loss": config.loss,
        "ols_alpha": config.ols_alpha if config.loss == "ols" else None,
        "seed": config.seed,
        "config": config.to_dict(),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "completed": result.completed,
        "history": result.history,
        "seconds": result.seconds,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        **parts,
    }


def train_run(
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
        loss="ce" if run.ols_alpha is None else "ols",
        ols_alpha=0.5 if run.ols_alpha is None else run.ols_alpha,
    )
    record_path = out / "runs" / f"{run.name}.json"
    done = reusable_record(record_path, config, log) if resume else None
    if done is not None:
        return done
    run_dir = out / "runs" / run.name
    can_resume = resume and (run_dir / "checkpoint.pt").is_file()
    log(
        f"[{run.name}] training: "
        f"{report.setting_name(run.label_smoothing, run.convention, run.ols_alpha)}, "
        f"seed {run.seed}"
    )
    task = spec.make_task(config, data)
    result = train(config, out_dir=run_dir, resume=can_resume, task=task, progress=progress,
                   log=log)  # fmt: skip
    arrays = out / "runs" / f"{run.name}.npz" if keep_arrays else None
    parts = spec.summarize_run(task, result, arrays)
    record = run_record(run.name, config, result, regime=regime, convention=run.convention,
                         **parts)  # fmt: skip
    write_json(record_path, record)
    if spec.run_line is not None:
        log(spec.run_line(record))
    else:
        log(f"[{run.name}] {task.describe(result.metrics)}  ({result.seconds:.0f} s)")
    return record
