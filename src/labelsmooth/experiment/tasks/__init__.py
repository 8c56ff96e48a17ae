"""Tasks: what is learned (data, model, loss, metrics, report columns), separate from how (the
training loop in :mod:`labelsmooth.experiment.train`).

Each task declares itself in one :class:`TaskSpec` registered by name
(:mod:`~labelsmooth.experiment.tasks.registry`): ``"image"``
(:mod:`~labelsmooth.experiment.tasks.image`, a ResNet or MLP on Fashion-MNIST, MNIST or your
IDX/NPZ images) and ``"lm"`` (:mod:`~labelsmooth.experiment.tasks.lm`, a character-level
Transformer on Shakespeare). :class:`Distillation` trains a student against a fixed teacher on
the image task's batches. A new task is one module that builds a :class:`TaskSpec` and calls
:func:`register_task`; the command line, the loop, the comparison and its report then take it
(``--task <name>``) without a change.
"""

from labelsmooth.experiment.tasks.distillation import Distillation
from labelsmooth.experiment.tasks.image import (
    ImageClassification,
    build_model,
    prepare_data,
)
from labelsmooth.experiment.tasks.image_metrics import evaluate, predict
from labelsmooth.experiment.tasks.lm import LanguageModel, TextSplits, evaluate_lm, prepare_text
from labelsmooth.experiment.tasks.registry import (
    Column,
    Grid,
    LoadedTask,
    Metric,
    ModelSpec,
    Task,
    TaskOption,
    TaskSpec,
    get_task,
    register_task,
    registered_tasks,
    resolve,
    task_names,
    unregister_task,
)

__all__ = [
    "Column",
    "Distillation",
    "Grid",
    "ImageClassification",
    "LanguageModel",
    "LoadedTask",
    "Metric",
    "ModelSpec",
    "Task",
    "TaskOption",
    "TaskSpec",
    "TextSplits",
    "build_model",
    "evaluate",
    "evaluate_lm",
    "get_task",
    "predict",
    "prepare_data",
    "prepare_text",
    "register_task",
    "registered_tasks",
    "resolve",
    "task_names",
    "unregister_task",
]
