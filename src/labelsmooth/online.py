"""Online label smoothing (Zhang et al., "Delving Deep into Label Smoothing", IEEE TIP 2021).

A per-class soft label S[y] (a (C, C) matrix, row y for target class y) replaces the fixed
ε·u of label smoothing. During epoch t the softmax outputs of the training samples the model
classifies correctly are summed per target class; :meth:`OnlineLabelSmoothing.next_epoch`
turns the sums into the rows of S for epoch t + 1 (their mean). The hard part of the loss is
:func:`labelsmooth.cross_entropy`; the soft part is a dense soft cross-entropy here (it reads
the (N, C) rows once more, as any soft target does).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from labelsmooth import _validate
from labelsmooth.functional import cross_entropy

__all__ = ["OnlineLabelSmoothing"]


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got num_classes={num_classes!r}")
    return num_classes


def _check_mask(class_mask: torch.Tensor | None, C: int) -> torch.Tensor | None:
    if class_mask is None:
        return None
    if not isinstance(class_mask, torch.Tensor) or class_mask.dtype != torch.bool:
        raise ValueError(f"class_mask must be a bool tensor of shape ({C},), got {class_mask!r}")
    if tuple(class_mask.shape) != (C,):
        raise ValueError(
            f"class_mask must have shape ({C},), got class_mask.shape={tuple(class_mask.shape)}"
        )
    if not bool(class_mask.any()):
        raise ValueError("class_mask allows no class (all entries False): S needs one")
    return class_mask


def _masked_rows(rows: torch.Tensor, class_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the masked columns of (R, C) rows and normalize each row to sum 1 (float64);
    a row left with no mass is all zeros (the caller decides what it becomes)."""
    rows = rows.to(torch.float64)
    if class_mask is not None:
        rows = rows * class_mask.to(device=rows.device, dtype=torch.float64)
    total = rows.sum(-1, keepdim=True)
    return torch.where(total > 0, rows / torch.where(total > 0, total, 1.0), 0.0)


def _initial_soft_labels(
    prior: torch.Tensor | None, C: int, class_mask: torch.Tensor | None
) -> torch.Tensor:
    """The first epoch's S (C, C): uniform, or a (C,) prior in every row, or a (C, C) prior
    normalized row-wise; masked columns zeroed before the normalization."""
    if prior is None:
        return _masked_rows(torch.ones(C, C, dtype=torch.float64), class_mask)
    if not isinstance(prior, torch.Tensor) or not prior.is_floating_point():
        raise ValueError(f"prior must be a floating-point tensor of shape ({C},) or ({C}, {C})")
    if tuple(prior.shape) not in ((C,), (C, C)):
        raise ValueError(
            f"prior must have shape ({C},) or ({C}, {C}), got prior.shape={tuple(prior.shape)}"
        )
    if not bool(torch.isfinite(prior).all()) or bool((prior < 0).any()):
        raise ValueError(
            "prior must be finite and non-negative, got a negative or non-finite value"
        )
    rows = _masked_rows(prior.detach().expand(C, C), class_mask)
    empty = (rows.sum(-1) == 0).nonzero().flatten()
    if empty.numel():
        raise ValueError(
            f"prior must have positive mass on the allowed classes in every row, got none in "
            f"row {int(empty[0])}"
        )
    return rows


def _class_rows(input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, C) logits and (M,) targets: the class dimension last, every other one flattened."""
    if input.dim() == 1:  # (C,) with a () target
        return input.unsqueeze(0), target.reshape(1)
    C = input.shape[1]
    return input.movedim(1, -1).reshape(-1, C), target.reshape(-1)


def _soft_targets(S_y: torch.Tensor, y: torch.Tensor, convention: str) -> torch.Tensor:
    """The soft part t (M, C) of q = α·onehot(y) + (1 − α)·t, from the rows S[y] (M, C).

    uniform: t = S[y]. others: S[y] without the target class, renormalized (onehot if no
    other allowed class has mass). unnormalized: S[y] without the target class, as is.
    """
    if convention == "uniform":
        return S_y
    onehot = torch.zeros_like(S_y).scatter_(1, y.unsqueeze(1), 1.0)
    off = S_y * (1.0 - onehot)
    if convention == "unnormalized":
        return off
    total = off.sum(1, keepdim=True)
    return torch.where(total > 0, off / torch.where(total > 0, total, 1.0), onehot)


class OnlineLabelSmoothing(nn.Module):
    r"""Online label smoothing: a loss whose soft labels are learned from the model itself.

    Zhang et al., "Delving Deep into Label Smoothing" (IEEE TIP 2021). Each row (logits x,
    target y, :math:`p = \mathrm{softmax}(x)`) contributes

    .. math::
        \ell = \alpha\,\mathrm{CE}(\mathrm{onehot}(y), p) + (1-\alpha)\,\mathrm{CE}(t_y, p),
        \qquad \mathrm{CE}(t, p) = -\textstyle\sum_k t_k \log p_k,

    where :math:`t_y` comes from the soft-label matrix :math:`S` (C, C) of the current epoch.
    With ``convention="uniform"`` (the paper) :math:`t_y = S_y`. The other conventions apply as
    in :func:`labelsmooth.cross_entropy` with ε = 1 − α and the per-target prior
    :math:`u = S_y`: ``"others"`` takes :math:`S_y` without the target class, renormalized
    (so q_y = α exactly), ``"unnormalized"`` takes it without the target class as it is.

    The update (training mode only): during epoch t, for every counted row with
    :math:`\arg\max_k x_k = y`, :math:`p` is added to row y of an accumulator (C, C) and 1 to
    count y (detached, float64). :meth:`next_epoch` sets, for every class c with count > 0,

    .. math:: S^{t+1}_c = \frac{1}{n_c} \sum_{i:\,y_i = c,\ \hat y_i = c} p_i

    (masked columns zeroed, renormalized); a class with no correct sample keeps its row.
    The first epoch's S is uniform (1/C in every row) or ``prior`` ((C,) for every row, or
    (C, C) row-wise), normalized. With ``torch.distributed`` initialized, :meth:`next_epoch`
    all-reduces the accumulator and counts over ``process_group`` (data-parallel ranks) first,
    so every rank gets the same S.

    S, the accumulator, the counts and the epoch are buffers: they follow ``.to(device)`` and
    a ``state_dict`` resumes exactly, also in the middle of an epoch. Note that the widely
    copied community implementation differs from this (the paper's) update in two ways: it
    starts from an ε-smoothed identity, and a class with no correct sample gets an all-zero
    soft label.

    Args:
        num_classes: C.
        alpha: α in [0, 1], the weight of the hard (one-hot) part; 0.5 in the paper.
        prior: the first epoch's soft labels, (C,) or (C, C), non-negative (None: uniform).
        convention: "uniform" (the paper), "others" or "unnormalized" (above).
        class_mask: (C,) bool; False classes get no soft mass (their columns of S are zero).
        ignore_index: target value that contributes 0, is left out of the mean and of the
            statistics.
        reduction: "none" (the target's shape), "mean" (over the counted rows; 0 if none)
            or "sum".
        process_group: the data-parallel group of :meth:`next_epoch`'s all-reduce (None: the
            default group when ``torch.distributed`` is initialized).

    Example:
        >>> import torch, labelsmooth
        >>> criterion = labelsmooth.OnlineLabelSmoothing(num_classes=3, alpha=0.5)
        >>> logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
        >>> loss = criterion(logits, torch.tensor([0, 1]))  # both correct: accumulated
        >>> criterion.next_epoch()
        >>> torch.allclose(criterion.soft_labels[0], logits[0].softmax(0).double())
        True
        >>> criterion.soft_labels[2].tolist()  # no correct sample: still uniform
        [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """

    soft_labels: torch.Tensor
    accumulator: torch.Tensor
    counts: torch.Tensor
    epoch: torch.Tensor
    class_mask: torch.Tensor | None

    def __init__(
        self,
        num_classes: int,
        alpha: float = 0.5,
        *,
        prior: torch.Tensor | None = None,
        convention: str = "uniform",
        class_mask: torch.Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        C = _check_num_classes(num_classes)
        self.num_classes = C
        self.alpha = _validate.check_fraction("alpha", alpha)
        _validate.check_loss_options(0.0, reduction, convention, ignore_index)
        self.convention, self.reduction, self.ignore_index = convention, reduction, ignore_index
        self.process_group = process_group
        mask = _check_mask(class_mask, C)
        S = _initial_soft_labels(prior, C, mask)
        device = prior.device if prior is not None else None
        self.register_buffer("class_mask", None if mask is None else mask.clone())
        self.register_buffer("soft_labels", S.to(device))
        self.register_buffer("accumulator", torch.zeros_like(self.soft_labels))
        self.register_buffer("counts", torch.zeros(C, dtype=torch.float64, device=device))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.int64, device=device))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of logits (N, C), (C,) or (N, C, d1, ..., dk) and class indices (N,), ()
        or (N, d1, ..., dk); in training mode the correct rows are also accumulated."""
        _validate.check_input(input)
        C = input.shape[0] if input.dim() == 1 else input.shape[1]
        if C != self.num_classes:
            raise ValueError(
                f"input must have num_classes={self.num_classes} classes, got "
                f"input.shape={tuple(input.shape)}"
            )
        hard = cross_entropy(input, target, ignore_index=self.ignore_index, reduction="none")
        assert isinstance(hard, torch.Tensor)  # no return_nll
        x, y = _class_rows(input, target.long())  # (M, C), (M,)
        valid = y != self.ignore_index
        if self.training:
            self._accumulate(x.detach(), y, valid)
        soft = self._soft_part(x, y, valid)  # (M,)
        per_row = self.alpha * hard.to(soft.dtype) + (1.0 - self.alpha) * soft.reshape(hard.shape)
        if self.reduction == "none":
            return per_row.to(input.dtype)
        total = per_row.sum()
        if self.reduction == "mean":
            total = total / valid.sum().clamp_min(1)
        return total.to(input.dtype)

    def _soft_part(self, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """−Σ_k t_k log p_k per row (M,), 0 on ignored rows (whose logits are never read)."""
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        safe_y = torch.where(valid, y, 0)
        x = torch.where(valid.unsqueeze(1), x.to(cdt), 0.0)  # padding rows: never read
        logp = torch.log_softmax(x, dim=1)
        S_y = self.soft_labels.to(device=x.device)[safe_y]  # (M, C) float64
        t = _soft_targets(S_y, safe_y, self.convention).to(cdt) * valid.unsqueeze(1)
        # select log p by 0 where t = 0 before the product: no 0·(−inf) in forward or backward
        return -(t * torch.where(t > 0, logp, 0.0)).sum(1)

    @torch.no_grad()
    def _accumulate(self, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> None:
        """Add the softmax of the correctly classified counted rows to their class's row."""
        correct = valid & (x.argmax(1) == y)
        p = x[correct].to(torch.float64).softmax(1)  # (K, C)
        finite = torch.isfinite(p).all(1)
        p, yc = p[finite], y[correct][finite]
        self.accumulator.index_add_(0, yc.to(self.accumulator.device), p.to(self.accumulator))
        self.counts.index_add_(
            0, yc.to(self.counts.device), torch.ones_like(yc, dtype=torch.float64).to(self.counts)
        )

    @torch.no_grad()
    def next_epoch(self) -> None:
        """End the epoch: (all-reduce the statistics,) set S to the mean prediction of each
        class's correct samples (classes with none keep their row), reset the statistics."""
        if dist.is_available() and dist.is_initialized():
            C = self.num_classes
            packed = torch.cat([self.accumulator.reshape(-1), self.counts])
            dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=self.process_group)
            self.accumulator.copy_(packed[: C * C].reshape(C, C))
            self.counts.copy_(packed[C * C :])
        elif self.process_group is not None:
            raise ValueError("process_group was given but torch.distributed is not initialized")
        mean = self.accumulator / self.counts.clamp_min(1).unsqueeze(1)
        rows = _masked_rows(mean, self.class_mask)
        keep = (self.counts == 0) | (rows.sum(1) == 0)
        self.soft_labels.copy_(torch.where(keep.unsqueeze(1), self.soft_labels, rows))
        self.accumulator.zero_()
        self.counts.zero_()
        self.epoch += 1

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, alpha={self.alpha}, convention={self.convention!r}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )
