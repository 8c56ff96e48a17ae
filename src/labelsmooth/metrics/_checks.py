"""Argument checks shared by every metric family: one place for the error messages.

``_prepare_probs`` and ``_prepare_logits`` are the entry of every public metric function: they
check shapes, dtypes and values (naming the first offending entry and its exact value), drop the
rows whose target is ``ignore_index`` before any arithmetic, and check the target range.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_F64 = torch.float64


def _check_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got n_bins={n_bins!r}")


def _check_ignore_index(ignore_index: int | None) -> None:
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise ValueError(f"ignore_index must be an int or None, got ignore_index={ignore_index!r}")


def _check_probs_target(probs: Tensor, target: Tensor) -> None:
    """Check the shapes and dtypes of ``probs`` (N, C) floating point and ``target`` (N,)."""
    if not isinstance(probs, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            f"probs and target must be tensors, got probs={type(probs).__name__}, "
            f"target={type(target).__name__}"
        )
    if probs.dim() != 2:
        raise ValueError(
            f"probs must be 2-D (N, C), got probs of shape {tuple(probs.shape)}; "
            "flatten extra dimensions first (class dimension last)"
        )
    if not probs.is_floating_point():
        raise ValueError(f"probs must be a floating point tensor, got probs.dtype={probs.dtype}")
    if probs.shape[1] < 1:
        raise ValueError(f"probs must have at least one class, got shape {tuple(probs.shape)}")
    _check_target_dtype(target)
    if target.shape != probs.shape[:1]:
        raise ValueError(
            f"target must have shape (N,) = {tuple(probs.shape[:1])} to match probs of shape "
            f"{tuple(probs.shape)}, got target of shape {tuple(target.shape)}"
        )


def _exact(value: float, dtype: torch.dtype) -> str:
    """The shortest decimal that reads back as ``value`` in ``dtype`` (1.0000001 for float32)."""
    if not math.isfinite(value):
        return repr(value)  # nan, inf, -inf
    for digits in range(1, 18):
        text = f"{value:.{digits}g}"
        if torch.tensor(float(text), dtype=dtype).item() == value:
            return text
    return repr(value)


def _first_bad(bad: Tensor) -> tuple[tuple[int, ...], int]:
    """Index of the first True entry of ``bad`` (row-major) and the number of True entries."""
    flat = bad.reshape(-1)
    first = int(flat.nonzero()[0, 0])
    index = []
    for size in reversed(bad.shape):
        first, rest = divmod(first, size)
        index.append(rest)
    return tuple(reversed(index)), int(flat.sum())


def _check_probs_values(probs: Tensor, keep: Tensor | None) -> None:
    """Every probability of a counted row (``keep``, (N,) bool or None for all) is in [0, 1].

    NaN fails too. The message names the first offending entry and its exact value.
    """
    if probs.numel() == 0:
        return
    bad = ~((probs >= 0) & (probs <= 1))  # (N, C); also True for NaN
    if keep is not None:
        bad &= keep.unsqueeze(1)
    if not bool(bad.any()):
        return
    (i, j), count = _first_bad(bad)
    more = f" (and {count - 1} more outside [0, 1])" if count > 1 else ""
    raise ValueError(
        f"probs must hold probabilities in [0, 1], got probs[{i}, {j}]="
        f"{_exact(float(probs[i, j]), probs.dtype)}{more}; apply softmax first or use the "
        "*_from_logits / evaluate_calibration functions"
    )


def _check_target_dtype(target: Tensor) -> None:
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got target.dtype={target.dtype}")


def _check_target_range(target: Tensor, num_classes: int) -> None:
    """``target`` must already be stripped of ``ignore_index`` entries."""
    if target.numel() == 0:
        return
    lo, hi = int(target.min()), int(target.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"target values must be class indices in [0, {num_classes}) (or ignore_index), "
            f"got values in [{lo}, {hi}]"
        )


def _flatten_logits(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Accept ``cross_entropy``-style shapes: (N, C) with (N,), or (N, C, d1, …) with (N, d1, …).

    Returns the logits with the class dimension last and flattened, ``(N·d1·…, C)``, and the
    target flattened to match.
    """
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            f"logits and target must be tensors, got logits={type(logits).__name__}, "
            f"target={type(target).__name__}"
        )
    if logits.dim() < 2:
        raise ValueError(
            f"logits must have shape (N, C) or (N, C, d1, ...), got shape {tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating point tensor, got logits.dtype={logits.dtype}")
    _check_target_dtype(target)
    expected = logits.shape[:1] + logits.shape[2:]
    if target.shape != expected:
        raise ValueError(
            f"target must have shape {tuple(expected)} to match logits of shape "
            f"{tuple(logits.shape)}, got target of shape {tuple(target.shape)}"
        )
    num_classes = logits.shape[1]
    if logits.dim() > 2:
        logits = logits.movedim(1, -1).reshape(-1, num_classes)  # (N·d1·…, C)
        target = target.reshape(-1)
    return logits, target


def _kept(target: Tensor, ignore_index: int | None) -> Tensor | None:
    """(N,) bool mask of the entries that count, or None when nothing is ignored."""
    return None if ignore_index is None else target != ignore_index


def _drop_ignored(x: Tensor, target: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """Remove the rows whose target equals ``ignore_index``: (N, C), (N,) -> (N', C), (N',)."""
    if ignore_index is None:
        return x, target
    keep = target != ignore_index
    return x[keep], target[keep]


def _prepare_probs(
    probs: Tensor, target: Tensor, ignore_index: int | None, *, detach: bool = True
) -> tuple[Tensor, Tensor]:
    """Validate, drop ignored rows, check target range; returns probs in their own dtype.

    Ignored rows may hold anything (NaN included): they are left out before any arithmetic.
    """
    _check_ignore_index(ignore_index)
    _check_probs_target(probs, target)
    _check_probs_values(probs, _kept(target, ignore_index))
    probs, target = _drop_ignored(probs.detach() if detach else probs, target, ignore_index)
    _check_target_range(target, probs.shape[1])
    return probs, target


def _check_logits_values(flat: Tensor, keep: Tensor | None, shape: torch.Size) -> None:
    """Every counted row of ``flat`` (R, C) has a finite maximum: no NaN, no +inf, not all -inf.

    A ``-inf`` logit is allowed: it masks its class (probability 0), and the metrics are those
    of the remaining classes. NaN, ``+inf`` (no probability distribution: inf − inf) and rows
    whose every logit is ``-inf`` raise a ``ValueError`` naming the first offending entry in the
    caller's ``shape`` (N, C, d1, …). Rows not in ``keep`` (ignored targets) are not looked at.
    One reduction and one synchronization when everything is fine.
    """
    if flat.numel() == 0:
        return
    ok = torch.isfinite(flat.amax(1))  # (R,); amax propagates NaN
    if keep is not None:
        ok |= ~keep
    if bool(ok.all()):
        return
    bad_rows = ~ok
    entries = (torch.isnan(flat) | (flat == float("inf"))) & bad_rows.unsqueeze(1)  # (R, C)
    rest = shape[2:]

    def where(row: int, column: str) -> str:
        inner = []
        for size in reversed(rest):
            row, d = divmod(row, size)
            inner.append(str(d))
        return ", ".join([str(row), column, *reversed(inner)])

    if bool(entries.any()):
        (r, j), count = _first_bad(entries)
        more = f" (and {count - 1} more NaN or +inf)" if count > 1 else ""
        raise ValueError(
            f"logits must not hold NaN or +inf (a -inf logit masks its class), got "
            f"logits[{where(r, str(j))}]={_exact(float(flat[r, j]), flat.dtype)}{more}"
        )
    (r,), count = _first_bad(bad_rows)
    more = f" (and {count - 1} more such rows)" if count > 1 else ""
    raise ValueError(
        f"logits must keep at least one finite class per counted entry, got every logit of "
        f"logits[{where(r, ':')}] equal to -inf{more}"
    )


def _prepare_logits(
    logits: Tensor,
    target: Tensor,
    ignore_index: int | None,
    num_classes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Flatten to (N', C) and (N',), check values, drop ignored entries, check the target range.

    Args:
        logits: (N, C) or (N, C, d1, …) logits (any floating dtype, returned in it).
        target: (N,) or (N, d1, …) class indices.
        num_classes: if given, the C that ``logits`` must have.
    """
    _check_ignore_index(ignore_index)
    shape = logits.shape if isinstance(logits, Tensor) else torch.Size()
    flat, target = _flatten_logits(logits, target)  # (R, C), (R,)
    if num_classes is not None and flat.shape[1] != num_classes:
        raise ValueError(
            f"logits must have num_classes={num_classes} channels in dimension 1, "
            f"got {flat.shape[1]}"
        )
    _check_logits_values(flat, _kept(target, ignore_index), shape)
    flat, target = _drop_ignored(flat, target, ignore_index)
    _check_target_range(target, flat.shape[1])
    return flat, target
