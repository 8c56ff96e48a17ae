"""Shared fixtures of the application's tests: a tiny image dataset and tiny run settings."""

from __future__ import annotations

import dataclasses

import pytest

from labelsmooth.experiment.config import TrainConfig

#: Settings that make an image run take about a second: ResNet-8 (w4), batch 32, one thread.
TINY_FIELDS = {
    "depth": 8,
    "width": 4,
    "batch_size": 32,
    "train_size": None,
    "val_size": 20,
    "eval_batch_size": 256,
    "num_threads": 1,
}
#: The same as command-line options (short regime, so that the ResNet options apply).
_TINY_ARGS = ["--regime", "short", "--depth", "8", "--width", "4", "--batch-size", "32"]
_TINY_ARGS += ["--val-size", "20", "--train-size", "0", "--threads", "1", "--quiet"]


@pytest.fixture
def tiny_args() -> list[str]:
    """Command-line options of a one-second image run (short regime, ResNet-8 (w4))."""
    return list(_TINY_ARGS)


@pytest.fixture(scope="module")
def tiny_idx(tmp_path_factory, synthetic_idx) -> str:
    """``idx:DIR`` of a 200-image training / 60-image test synthetic dataset."""
    return f"idx:{synthetic_idx(tmp_path_factory.mktemp('idx'), 200, 60)}"


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(dataset, **fields)``: a :class:`TrainConfig` of a one-second image run."""

    def make(dataset: str, **fields: object) -> TrainConfig:
        return dataclasses.replace(TrainConfig(**TINY_FIELDS), dataset=dataset, **fields)

    return make
