"""A task other than image classification runs through the same loop, resume included."""

from __future__ import annotations

import json
from collections.abc import Iterator

import torch
from torch import nn

import labelsmooth
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
