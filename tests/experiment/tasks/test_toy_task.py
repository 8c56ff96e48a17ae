"""A task added by the test suite alone: one task declaration (below), its model, its data and
this test; trained through the command line (``train`` and ``compare``) without a change to
the CLI, the trainer, the comparison or the report."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import labelsmooth
from labelsmooth.experiment.cli import main
from labelsmooth.experiment.config import FieldRule, TrainConfig
from labelsmooth.experiment.tasks import (
    Column,
    Grid,
    Metric,
    ModelSpec,
    TaskOption,
    TaskSpec,
    register_task,
    unregister_task,
)

# --------------------------------------------------------------------------- its data


@dataclass
class Blobs:
    """``dim``-dimensional Gaussian blobs of 3 classes: (N, dim) points, (N,) labels."""

    x: torch.Tensor
    y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_blobs(config: TrainConfig, log=None) -> Blobs:
    dim = config.options.get("dim", 4)
    g = torch.Generator().manual_seed(config.data_seed)
    centers = 3 * torch.randn(3, dim, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 3
        return centers[y] + torch.randn(n, dim, generator=g), y

    (x, y), (tx, ty) = draw(90), draw(30)
    return Blobs(x, y, tx, ty)


# --------------------------------------------------------------------------- its model and run


class Linear(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)  # (B, 3)


@dataclass
class BlobTask:
    config: TrainConfig
    data: Blobs

    def num_batches(self) -> int:
        return math.ceil(len(self.data.y) / self.config.batch_size)

    def build_model(self) -> nn.Module:
        return Linear(self.config.options["dim"])

    def train_batches(self, generator, start, resume_state) -> Iterator[tuple]:
        order = torch.randperm(len(self.data.y), generator=generator)
        if resume_state is not None:
            generator.set_state(resume_state)
        b = self.config.batch_size
        for s in range(start * b, len(order), b):
            yield self.data.x[order[s : s + b]], self.data.y[order[s : s + b]]

    def loss(self, model, batch):
        x, y = batch
        loss = labelsmooth.cross_entropy(model(x), y, label_smoothing=self.config.label_smoothing)
        return loss, len(y)

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        logits = model(self.data.test_x)
        return {"accuracy": float((logits.argmax(1) == self.data.test_y).float().mean())}

    def describe(self, metrics) -> str:
        return f"accuracy {100 * metrics['accuracy']:.1f}%"


def summarize_run(task, result, arrays_path) -> dict:
    return {
        "metrics": result.metrics,
        "temperature": 1.0,
        "metrics_after_temperature": result.metrics,
        "sizes": {"train": len(task.data.y), "test": len(task.data.test_y)},
    }


# --------------------------------------------------------------------------- its declaration

SPEC = TaskSpec(
    name="blobs",
    help="Gaussian blobs, a linear model (a test's task)",
    models=(ModelSpec("linear"),),
    datasets=("blobs",),
    accepts=lambda dataset: dataset == "blobs",
    regimes={"quick": TrainConfig(task="blobs", model="linear", dataset="blobs", epochs=1,
                                  batch_size=15, lr=0.1, warmup_epochs=0.0, num_threads=1)},
    load_data=load_blobs,
    make_task=BlobTask,
    summarize_run=summarize_run,
    metrics={"accuracy": Metric(lambda r: r["metrics"]["accuracy"], 100.0, "accuracy (%)"),
             "seconds": Metric(lambda r: r["seconds"], 1.0, "training time (s)")},
    columns=(Column("Accuracy (%)", "accuracy", 1), Column("Δ", "accuracy", 1, delta=True)),
    table_header=lambda dataset, regime, rs, model, s: f"**Blobs, {regime}**: {model}",
    grid=Grid("blobs", (0.0, 0.1), ("uniform",), (0,)),
    options=(TaskOption("dim", "--blob-dim", int, FieldRule("an integer >= 1",
                        lambda v: isinstance(v, int) and v >= 1), 4, "point dimension", "D"),),
)  # fmt: skip


@pytest.fixture
def blobs_task():
    register_task(SPEC)
    yield SPEC
    unregister_task(SPEC.name)


def test_a_registered_task_trains_one_epoch_through_the_command(blobs_task, tmp_path, capsys):
    out = tmp_path / "one"
    args = ["train", "--task", "blobs", "--blob-dim", "5", "--quiet", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    result = json.loads((out / "result.json").read_text())
    assert result["completed"] and len(result["history"]) == 1
    assert result["config"]["task"] == "blobs" and result["config"]["options"] == {"dim": 5}
    assert 0 <= result["metrics"]["accuracy"] <= 1


def test_a_registered_task_compares_through_the_command(blobs_task, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--task", "blobs", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    table = (out / "results.md").read_text()
    assert "**Blobs, quick**: linear" in table and "| Accuracy (%)" in table
    assert "LS ε=0.1 (uniform)" in table and "baseline" in table


def test_its_options_and_datasets_are_checked_in_one_line(blobs_task, tmp_path, capsys):
    assert main(["train", "--task", "blobs", "--blob-dim", "0", "--out", str(tmp_path)]) == 2
    assert "--blob-dim: must be an integer >= 1" in capsys.readouterr().err
    assert main(["train", "--blob-dim", "3", "--out", str(tmp_path)]) == 2  # an image run
    assert "an option of --task blobs" in capsys.readouterr().err
    assert main(["train", "--task", "blobs", "--depth", "8", "--out", str(tmp_path)]) == 2
    assert "--depth" in capsys.readouterr().err
