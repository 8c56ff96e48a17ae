"""Training recipes: one run (:mod:`.trainer`), its tasks (:mod:`.task` for images, :mod:`.lm`
for the Shakespeare language model), data-parallel runs (:mod:`.distributed`), checkpoints
(:mod:`.checkpoint`), and the baseline-versus-smoothing comparison (:mod:`.compare`, tables
and plots in :mod:`.report`)."""

from labelsmooth.experiment.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from labelsmooth.experiment.train.config import TrainConfig, config_differences
from labelsmooth.experiment.train.lm import LanguageModel, evaluate_lm, prepare_text, run_compare_lm
from labelsmooth.experiment.train.task import (
    Distillation,
    ImageClassification,
    Task,
    build_model,
    evaluate,
    predict,
    prepare_data,
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
    "run_compare_lm",
    "save_checkpoint",
    "train",
]
