"""Placeholder, replaced by the Core implementation within minutes."""

from typing import Any

import torch
import torch.nn.functional as F


def cross_entropy(input: torch.Tensor, target: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
    kw.pop("convention", None)
    kw.pop("impl", None)
    return F.cross_entropy(input, target, *args, **kw)


def smooth_labels(*args: Any, **kw: Any) -> torch.Tensor:
    raise NotImplementedError
