"""Training recipes: one run (:mod:`.trainer`) and the baseline-versus-smoothing comparison."""

from labelsmooth.train.trainer import (
    CheckpointError,
    TrainConfig,
    TrainingInterrupted,
    TrainResult,
    build_model,
    evaluate,
    load_checkpoint,
    predict,
    prepare_data,
    save_checkpoint,
    train,
)

__all__ = [
    "CheckpointError",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "build_model",
    "evaluate",
    "load_checkpoint",
    "predict",
    "prepare_data",
    "save_checkpoint",
    "train",
]
