"""Training recipes: one run (:mod:`.trainer`), its tasks (:mod:`.task`), checkpoints
(:mod:`.checkpoint`), and the baseline-versus-smoothing comparison (:mod:`.compare`, tables
and plots in :mod:`.report`)."""

from labelsmooth.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from labelsmooth.train.config import TrainConfig, config_differences
from labelsmooth.train.task import (
    ImageClassification,
    Task,
    build_model,
    evaluate,
    predict,
    prepare_data,
)
from labelsmooth.train.trainer import Recipe, TrainingInterrupted, TrainResult, train

__all__ = [
    "CheckpointError",
    "ImageClassification",
    "Recipe",
    "Task",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "build_model",
    "config_differences",
    "evaluate",
    "load_checkpoint",
    "predict",
    "prepare_data",
    "save_checkpoint",
    "train",
]
