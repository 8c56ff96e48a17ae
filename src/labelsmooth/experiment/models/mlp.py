"""Fully connected classifier (Hinton et al. 2015; Müller et al. 2019, section 5).

``MLP(hidden=(1200, 1200))`` is the distillation teacher of Hinton et al. on MNIST and
``(800, 800)`` their student: the image is flattened, passed through ``len(hidden)`` linear +
ReLU layers (no dropout, so that it can fit its training data) and a linear classifier ``fc``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "mlp"]


class MLP(nn.Module):
    """Flatten → (Linear → ReLU) × len(hidden) → Linear ``fc``.

    Args:
        in_features: Input size after flattening (784 for 28x28 grey images).
        hidden: Widths of the hidden layers (at least one, each >= 1).
        num_classes: Number of classes ``C``.

    Example:
        >>> model = mlp(784, (1200, 1200), num_classes=10)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> model.forward_features(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 1200])
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int = 10) -> None:
        super().__init__()
        widths = [int(in_features), *(int(h) for h in hidden)]
        if len(widths) < 2 or min(widths) < 1 or num_classes < 1:
            raise ValueError(
                f"MLP needs in_features >= 1, at least one hidden width >= 1 and num_classes "
                f">= 1, got in_features={in_features!r}, hidden={tuple(hidden)!r}, "
                f"num_classes={num_classes!r}"
            )
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations: ``(N, ...)`` → ``(N, hidden[-1])`` (after the last ReLU)."""
        return self.body(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C)`` of images ``(N, C_in, H, W)`` (or any ``(N, ...)``)."""
        return self.fc(self.forward_features(x))


def mlp(in_features: int, hidden: Sequence[int], num_classes: int = 10) -> MLP:
    """An :class:`MLP` with hidden widths ``hidden``."""
    return MLP(in_features, hidden, num_classes)
