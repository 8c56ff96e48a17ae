"""Test-wide settings."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


def _write_synthetic_idx(directory, n_train, n_test, classes=5, seed=0):
    """28x28 noisy stripe images; the stripes' orientation (or a checkerboard) is the class."""
    from labelsmooth.data import write_idx_dir

    rng = np.random.default_rng(seed)
    i, j = np.mgrid[0:28, 0:28]
    patterns = [i, j, i + j, i - j, (i // 2) + (j // 2)]

    def gen(n):
        y = rng.permutation(np.arange(n) % classes)
        phase = rng.integers(0, 4, n)[:, None, None]
        on = ((np.stack([patterns[c] for c in y]) + phase) % 4) < 2
        x = np.where(on, 200, 30) + rng.integers(0, 50, (n, 28, 28))
        return x.astype(np.uint8), y.astype(np.uint8)

    (xtr, ytr), (xte, yte) = gen(n_train), gen(n_test)
    write_idx_dir(directory, {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte})
    return directory


@pytest.fixture(scope="session")
def synthetic_idx():
    """Writes a small learnable IDX dataset: ``synthetic_idx(directory, n_train, n_test)``."""
    return _write_synthetic_idx
