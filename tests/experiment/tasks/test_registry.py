"""A task other than image classification runs through the same loop, resume included; the
registry refuses clashes, resolves a config's task options and applies a model's defaults."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import labelsmooth
from labelsmooth.experiment.config import FieldRule
from labelsmooth.experiment.tasks import (
    TaskOption,
    TaskSpec,
    get_task,
    register_task,
    resolve,
    task_names,
    unregister_task,
)
from labelsmooth.experiment.train import Task, TrainConfig, train


class VectorTask:
    """Four-dimensional points, three classes, a linear model: no images, no ResNet."""

    def __init__(self, n: int = 96, batch_size: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % 3  # (n,)
        self.x = torch.randn(n, 4, generator=g) + 2 * nn.functional.one_hot(self.y, 4)  # (n, 4)
        self.batch_size = batch_size

    def num_batches(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def build_model(self) -> nn.Module:
        return nn.Linear(4, 3)

    def train_batches(
        self, generator: torch.Generator, start: int, resume_state: torch.Tensor | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.y), generator=generator)
        if resume_state is not None:
            generator.set_state(resume_state)
        for s in range(start * self.batch_size, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            noise = 0.1 * torch.randn(len(idx), 4, generator=generator)  # "augmentation"
            yield self.x[idx] + noise, self.y[idx]

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        return labelsmooth.cross_entropy(model(x), y, label_smoothing=0.1), len(y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"accuracy": float((model(self.x).argmax(1) == self.y).float().mean())}

    def describe(self, metrics: dict[str, float]) -> str:
        return f"accuracy {100 * metrics['accuracy']:.1f}%"


CONFIG = TrainConfig(dataset="vectors", epochs=3, lr=0.05, warmup_epochs=0, num_threads=1)


def test_a_new_task_plugs_into_the_loop(tmp_path):
    task: Task = VectorTask()
    lines: list[str] = []
    result = train(CONFIG, task=task, out_dir=tmp_path, progress=False, log=lines.append)
    assert result.completed and result.metrics["accuracy"] > 0.8
    assert [sorted(h) for h in result.history] == [
        ["accuracy", "epoch", "loss", "lr", "seconds"]
    ] * 3
    assert "accuracy" in lines[-1] and "training loss" in lines[-1]
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["metrics"] == result.metrics


def test_a_new_task_resumes_bit_exactly(tmp_path):
    full = train(CONFIG, task=VectorTask(), progress=False, log=None)
    stop = CONFIG.__class__(**{**CONFIG.to_dict(), "epochs_stop": 1})
    train(stop, task=VectorTask(), out_dir=tmp_path, progress=False, log=None)
    resumed = train(
        CONFIG, task=VectorTask(), out_dir=tmp_path, resume=True, progress=False, log=None
    )
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])
    assert full.metrics == resumed.metrics


# --------------------------------------------------------------------------- the registry


def _spec(name: str, flag: str = "--toy-size", key: str = "size") -> TaskSpec:
    image = get_task("image")
    option = TaskOption(key, flag, int, FieldRule("an integer >= 1", lambda v: v >= 1), 2, "n")
    return dataclasses.replace(image, name=name, options=(option,))


def test_a_name_or_a_flag_of_another_meaning_is_refused():
    register_task(_spec("toy-a"))
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_task(_spec("toy-a"))
        with pytest.raises(ValueError, match="--toy-size is task 'toy-a'"):
            register_task(_spec("toy-b", key="width"))
    finally:
        unregister_task("toy-a")
    assert "toy-a" not in task_names() and task_names()[:2] == ("image", "lm")


def test_resolve_fills_and_checks_the_task_options():
    register_task(_spec("toy-c"))
    try:
        config = TrainConfig(task="toy-c")
        assert resolve(config).options == {"size": 2}
        with pytest.raises(ValueError, match="size must be an integer >= 1, got size=0"):
            resolve(dataclasses.replace(config, options={"size": 0}))
        with pytest.raises(ValueError, match="options has 'depth'"):
            resolve(dataclasses.replace(config, options={"depth": 8}))
    finally:
        unregister_task("toy-c")
    with pytest.raises(ValueError, match="task must be one of image, lm, got task='toy-c'"):
        resolve(TrainConfig(task="toy-c"))


def test_another_model_brings_its_own_defaults():
    image = get_task("image")
    fitted, short = image.regimes["fitted"], image.regimes["short"]
    assert image.configure(short, {"model": "mlp"}).width == 1200
    assert image.configure(short, {"model": "mlp", "width": 16}).width == 16
    resnet = image.configure(fitted, {"model": "resnet"})
    assert (resnet.depth, resnet.width, resnet.epochs) == (14, 8, fitted.epochs)
    assert image.configure(short, {"epochs": 1}).width == short.width  # same model: unchanged
