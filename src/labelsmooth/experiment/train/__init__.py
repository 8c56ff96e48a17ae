"""Training recipes, read top to bottom: one run (:mod:`.trainer`), data-parallel runs
(:mod:`.distributed`), checkpoints (:mod:`.checkpoint`), and the baseline-versus-smoothing
comparison and distillation (:mod:`.compare`; tables in :mod:`labelsmooth.experiment.report`).

What is learned comes from a task of :mod:`labelsmooth.experiment.tasks`; the run's settings
from :class:`~labelsmooth.experiment.config.TrainConfig`. The names below are re-exported for
convenience.
"""

from labelsmooth.experiment.config import TrainConfig, config_differences
from labelsmooth.experiment.tasks import (
    Distillation,
    ImageClassification,
    LanguageModel,
    Task,
    build_model,
    evaluate,
    evaluate_lm,
    predict,
    prepare_data,
    prepare_text,
)
from labelsmooth.experiment.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from labelsmooth.experiment.train.trainer import Recipe, TrainingInterrupted, TrainResult, train

__all__ = [
    "CheckpointError",
    "Distillation",
    "ImageClassification",
    "LanguageModel",
    "Recipe",
    "Task",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "build_model",
    "config_differences",
    "evaluate",
    "evaluate_lm",
    "load_checkpoint",
    "predict",
    "prepare_data",
    "prepare_text",
    "save_checkpoint",
    "train",
]
