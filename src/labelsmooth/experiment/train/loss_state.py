"""The state of a task's stateful training loss in checkpoints, data-parallel runs included.

Online label smoothing (:class:`labelsmooth.OnlineLabelSmoothing`) keeps running sums over the
epoch (``accumulator``, ``counts``: each rank's over its own shard until ``next_epoch``
all-reduces them). A checkpoint written in the middle of an epoch under torchrun must hold the
sums of every rank, not rank 0's alone: :func:`state_to_save` adds them over the ranks (every
rank calls it), and :func:`restore_state` gives them to rank 0 only, the other ranks starting
from zero, so that the epoch's final all-reduce sees each sample once, whatever the world size
of the run that resumes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["RUNNING_SUMS", "state_to_save", "restore_state"]

#: The buffers of a stateful loss that add over data-parallel ranks.
RUNNING_SUMS = ("accumulator", "counts")


def state_to_save(criterion: nn.Module, world_size: int) -> dict[str, Any]:
    """``criterion.state_dict()``, its :data:`RUNNING_SUMS` added over the ranks when
    ``world_size`` > 1 (a collective: every rank calls it)."""
    state = dict(criterion.state_dict())
    if world_size > 1:
        for name in RUNNING_SUMS:
            if isinstance(state.get(name), torch.Tensor):
                total = state[name].detach().clone()
                dist.all_reduce(total)
                state[name] = total
    return state


def restore_state(criterion: nn.Module, state: dict[str, Any], rank: int) -> None:
    """Load ``state``; on ranks other than 0 the :data:`RUNNING_SUMS` start from zero (rank 0
    holds the sums of every rank of the run that saved them)."""
    criterion.load_state_dict(state)
    if rank == 0:
        return
    with torch.no_grad():
        for name in RUNNING_SUMS:
            buffer = getattr(criterion, name, None)
            if isinstance(buffer, torch.Tensor):
                buffer.zero_()
