"""What determines a training run: :class:`TrainConfig`, its value rules, and the "same run?" rule.

The rules in :data:`FIELD_RULES` are the only statement of which values a field accepts: the
dataclass checks them on construction and the ``labelsmooth`` command uses the same rules for
its argparse ``type=`` functions, so the command refuses exactly what the library refuses.
Which task, model, dataset and task options fit together is the task's to say
(:mod:`labelsmooth.experiment.tasks`, checked by :func:`~labelsmooth.experiment.tasks.resolve`
before a run starts); this module knows no task.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# The one place the application reads the library's list of conventions: the library has no
# public name for it yet (labelsmooth.cross_entropy's docstring lists the same three).
from labelsmooth import CONVENTIONS

__all__ = [
    "CONVENTIONS",
    "TrainConfig",
    "FieldRule",
    "FIELD_RULES",
    "RESUME_FREE_FIELDS",
    "LOSSES",
    "check_field",
    "config_differences",
]

#: The training losses: ``"ce"`` (:func:`labelsmooth.cross_entropy` with ``label_smoothing``
#: and ``convention``) and ``"ols"`` (:class:`labelsmooth.OnlineLabelSmoothing`, Zhang et al.
#: 2021: ``ols_alpha``·CE(one-hot) + (1 − ``ols_alpha``)·CE(S[y]), S learned per epoch).
LOSSES = ("ce", "ols")


@dataclass(frozen=True)
class FieldRule:
    """Which values a field accepts: ``ok(value)``, described as ``text`` ("an integer >= 1")."""

    text: str
    ok: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and not math.isnan(v)


def _int_at_least(low: int, note: str = "") -> FieldRule:
    return FieldRule(f"an integer >= {low}{note}", lambda v: _is_int(v) and v >= low)


def _optional(rule: FieldRule, meaning: str) -> FieldRule:
    return FieldRule(f"{rule.text} or None ({meaning})", lambda v: v is None or rule.ok(v))


_FINITE_NON_NEGATIVE = FieldRule(
    "a finite number >= 0", lambda v: _is_real(v) and math.isfinite(v) and v >= 0
)
_UNIT_INTERVAL_OPEN = FieldRule("a number in [0, 1)", lambda v: _is_real(v) and 0 <= v < 1)

#: field name -> the values it accepts (every field of :class:`TrainConfig` has one).
FIELD_RULES: dict[str, FieldRule] = {
    "dataset": FieldRule("a non-empty string", lambda v: isinstance(v, str) and v != ""),
    "model": FieldRule("a non-empty string", lambda v: isinstance(v, str) and v != ""),
    "depth": FieldRule(
        "an integer 6n+2 >= 8 (8, 14, 20, ...)",
        lambda v: _is_int(v) and v >= 8 and (v - 2) % 6 == 0,
    ),
    "width": _int_at_least(1),
    "label_smoothing": _UNIT_INTERVAL_OPEN,
    "loss": FieldRule(f"one of {', '.join(LOSSES)}", lambda v: v in LOSSES),
    "ols_alpha": FieldRule("a number in [0, 1]", lambda v: _is_real(v) and 0 <= v <= 1),
    "convention": FieldRule(f"one of {', '.join(CONVENTIONS)}", lambda v: v in CONVENTIONS),
    "epochs": _int_at_least(1),
    "batch_size": _int_at_least(1),
    "lr": FieldRule("a finite number > 0", lambda v: _is_real(v) and math.isfinite(v) and v > 0),
    "momentum": _UNIT_INTERVAL_OPEN,
    "weight_decay": _FINITE_NON_NEGATIVE,
    "warmup_epochs": _FINITE_NON_NEGATIVE,
    "seed": _int_at_least(0),
    "train_size": _optional(_int_at_least(1), "the whole training split"),
    "test_size": _optional(_int_at_least(1), "the whole test split"),
    "val_size": _int_at_least(0, " (0: no validation split)"),
    "data_seed": _int_at_least(0),
    "augment_pad": _int_at_least(0),
    "hflip": FieldRule("True, False or None", lambda v: v is None or isinstance(v, bool)),
    "eval_batch_size": _int_at_least(1),
    "num_threads": _int_at_least(1),
    "n_bins": _int_at_least(1),
    "data_dir": FieldRule("a path string or None", lambda v: v is None or isinstance(v, str)),
    "epochs_stop": _optional(_int_at_least(1), "run every epoch"),
    "task": FieldRule("a non-empty string", lambda v: isinstance(v, str) and v != ""),
    "options": FieldRule(
        "a dict of option name -> value",
        lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
    ),
}


def check_field(name: str, value: Any) -> None:
    """Raise ``ValueError("<name> must be <rule>, got <name>=<value>")`` if ``value`` is refused."""
    rule = FIELD_RULES[name]
    if not rule.ok(value):
        raise ValueError(f"{name} must be {rule.text}, got {name}={value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (stored in checkpoints and results).

    Every field is checked on construction against :data:`FIELD_RULES` (``ValueError`` naming
    the field and the value).

    Attributes:
        dataset: A dataset the task accepts: for ``task="image"`` ``"fashion-mnist"``,
            ``"mnist"``, ``"idx:DIR"`` or ``"npz:FILE"``; for ``task="lm"`` ``"shakespeare"``.
        model: A model of the task: ``"resnet"`` (CIFAR-style ResNet) or ``"mlp"`` (two hidden
            ReLU layers of ``width`` units, :class:`labelsmooth.experiment.models.MLP`) for
            ``task="image"``; ``"transformer"`` for ``task="lm"``.
        depth: ResNet depth ``6n + 2`` (8, 14, 20, ...); not used by ``"mlp"``.
        width: Channels of the first ResNet stage (``(w, 2w, 4w)``), or the MLP's hidden
            units, >= 1.
        label_smoothing: ``eps`` in ``[0, 1)``.
        convention: ``"uniform"``, ``"others"`` or ``"unnormalized"`` (with ``loss="ols"``:
            where the soft part's mass goes, as :class:`labelsmooth.OnlineLabelSmoothing`'s
            ``convention``).
        loss: ``"ce"`` (label-smoothed cross-entropy with ``label_smoothing``) or ``"ols"``
            (online label smoothing; ``label_smoothing`` must then be 0: its soft part
            replaces the uniform ε term). Which losses a task takes is the task's to say.
        ols_alpha: With ``loss="ols"``, the weight α of the one-hot part, in ``[0, 1]`` (0.5,
            the paper's); left at 0.5 otherwise.
        epochs: Number of epochs, >= 1.
        batch_size: Training batch size, >= 1.
        lr: Peak learning rate (after warm-up, finite, > 0), cosine-annealed to 0 over all steps.
        momentum: SGD momentum (Nesterov when > 0), in ``[0, 1)``.
        weight_decay: L2 weight decay, >= 0.
        warmup_epochs: Linear warm-up length in epochs (may be fractional), >= 0.
        seed: Seed of initialisation, data order and augmentation, >= 0.
        train_size: Stratified training subset size, >= 1 (``None``: all).
        test_size: Stratified test subset size for quick runs, >= 1 (``None``: all; the
            language model: the first ``test_size`` test sequences).
        val_size: Held-out validation examples (carved from the training set if the source
            has no validation split); 0: none carved (a source's own validation split, as
            MNIST's, is kept whole).
        data_seed: Seed of the subset and validation choice (the same for every run).
        augment_pad: Random-crop padding in pixels (0: no crop).
        hflip: Horizontal flips (``None``: the dataset's default: Fashion-MNIST yes, MNIST no).
        eval_batch_size: Batch size for evaluation.
        num_threads: Torch intra-op threads during training (fixed for determinism).
        n_bins: ECE bins.
        data_dir: Cache root for built-in datasets.
        epochs_stop: Stop (with a checkpoint) after this many epochs; ``None``: run all.
        task: A registered task (:func:`labelsmooth.experiment.tasks.task_names`): ``"image"``
            or ``"lm"`` (then ``batch_size``, ``train_size``, ``val_size`` and
            ``eval_batch_size`` count sequences, ``val_size`` those used to fit T, and
            depth, width, augment_pad and hflip are unused).
        options: The task's own options (name -> value), declared by the task
            (``task="lm"``: ``seq_len``, ``d_model``, ``n_layers``, ``n_heads``); missing ones
            take the task's defaults when the run starts.
    """

    dataset: str = "fashion-mnist"
    model: str = "resnet"
    depth: int = 14
    width: int = 8
    label_smoothing: float = 0.0
    convention: str = "uniform"
    loss: str = "ce"
    ols_alpha: float = 0.5
    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    seed: int = 0
    train_size: int | None = 10_000
    test_size: int | None = None
    val_size: int = 5_000
    data_seed: int = 0
    augment_pad: int = 2
    hflip: bool | None = None
    eval_batch_size: int = 1000
    num_threads: int = 2
    n_bins: int = 15
    data_dir: str | None = None
    epochs_stop: int | None = None
    task: str = "image"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_field(f.name, getattr(self, f.name))
        if self.loss == "ols" and self.label_smoothing != 0:
            raise ValueError(
                "loss='ols' replaces the uniform ε term by the learned soft labels (Zhang et "
                f"al.: α·onehot + (1 − α)·S[y]), so label_smoothing must be 0, got "
                f"label_smoothing={self.label_smoothing!r}"
            )
        if self.loss != "ols" and self.ols_alpha != 0.5:
            raise ValueError(
                f"ols_alpha is read only with loss='ols', got ols_alpha={self.ols_alpha!r} "
                f"with loss={self.loss!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


#: Fields that may differ between an interrupted run and its continuation (or a finished run
#: and its re-use): where the data cache lives and where to stop change nothing computed.
RESUME_FREE_FIELDS = frozenset({"data_dir", "epochs_stop"})


#: Fields of configs saved before the language model's options moved into ``options``.
_RETIRED_LM_FIELDS = frozenset({"seq_len", "d_model", "n_layers", "n_heads"})


def config_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The "same run?" rule: how two configs (as dicts) differ, ignoring
    :data:`RESUME_FREE_FIELDS`; an empty list means the same run. A field missing from one
    side (a config saved before the field existed) counts as its :class:`TrainConfig` default;
    the language model's four fields of configs saved before they moved into ``options``
    (``seq_len``, ...) are ignored for image runs, where they never mattered.

    Each difference reads ``"<field>: saved <value> vs now <value>"``.
    """
    fields = dataclasses.fields(TrainConfig)
    defaults = {
        f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for f in fields
    }
    old = {**defaults, **saved}
    new = {**defaults, **now}
    keys = set(saved) | set(now)
    if old.get("task") == "image" and new.get("task") == "image":
        keys -= _RETIRED_LM_FIELDS
    return [
        f"{k}: saved {old.get(k)!r} vs now {new.get(k)!r}"
        for k in sorted(keys)
        if k not in RESUME_FREE_FIELDS and old.get(k) != new.get(k)
    ]
