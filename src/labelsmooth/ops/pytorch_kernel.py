"""``impl="torch"``: PyTorch's own ``F.cross_entropy`` for every call it can run exactly.

For small inputs the per-call cost of any path is its Python and dispatch, and PyTorch's own
kernel is the leanest correct path, so ``impl="auto"`` takes it there whenever it can run the
options (the registry's ``_torch_unsupported`` in ``labelsmooth/_dispatch.py`` says which).

With a uniform prior every convention is PyTorch's uniform one with another ε, up to a
constant factor (:func:`torch_smoothing`)::

    others:        q_y = 1-ε, q_k = ε/(C-1)    = uniform with ε' = ε·C/(C-1)
    unnormalized:  q_y = 1-ε, q_k = ε/C        = Z · (uniform with ε' = ε/Z), Z = 1 - ε/C

(check: uniform gives q_y = 1-ε'+ε'/C and q_k = ε'/C). Class weights enter both sides the
same way (Σ_k w_k q_k (−log p_k), the mean divided by Σ_i w_{y_i}), so the identity holds with
weights too; PyTorch needs ε' ≤ 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from labelsmooth.ops.reference import compute_dtype

if TYPE_CHECKING:
    from labelsmooth._validate import Spec

__all__ = ["cross_entropy_builtin", "torch_smoothing"]


def torch_smoothing(eps: float, convention: str, num_classes: int) -> tuple[float, float] | None:
    """(ε', factor) such that ``factor · F.cross_entropy(label_smoothing=ε')`` is the loss of
    ``convention`` with label smoothing ε and a uniform prior over ``num_classes``, or None
    when ε' would exceed 1 (PyTorch refuses it)."""
    C = num_classes
    if convention == "uniform":
        return eps, 1.0
    if convention == "others":
        if C == 1:  # no other class: the target keeps the whole mass
            return 0.0, 1.0
        e = eps * C / (C - 1)
        return (e, 1.0) if e <= 1.0 else None
    if convention == "unnormalized":
        z = 1.0 - eps / C
        e = eps / z
        return (e, z) if e <= 1.0 else None
    return None


def cross_entropy_builtin(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    spec: Spec,
    *,
    checked: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(loss, nll)`` by ``F.cross_entropy``, with this library's rules for ignored rows.

    ``spec`` is the validated call (its ε, convention, ignore_index, reduction and
    return_nll are used): a convention that :func:`torch_smoothing` maps, uniform prior,
    ``kl`` False. Differences from a bare ``F.cross_entropy``: an ignored row's gradient is 0
    whatever its logits hold (PyTorch's is NaN for a NaN/inf row: its logits are selected
    away), a "mean" with every target ignored is 0 with zero gradients (not NaN), and
    ``weight`` and soft targets of another float dtype are used in the input's dtype. With
    ``spec.return_nll`` the per-row unsmoothed NLL (in the compute dtype) comes from a second,
    gradient-free pass; else ``nll`` is None.

    Args:
        checked: ``(min, max)`` of the class-index targets when the caller read them on the
            host (eager ``validate_args=True``): then the selects above run only when a row
            is ignored. None: they always run, as tensor ops (traced or asynchronous calls).
    """
    convention, ignore_index, reduction = spec.convention, spec.ignore_index, spec.reduction
    label_smoothing, return_nll = spec.eps, spec.return_nll
    if convention == "uniform":
        eps, factor = label_smoothing, 1.0
    else:
        mapped = torch_smoothing(label_smoothing, convention, input.shape[1])
        assert mapped is not None  # the registry refuses what torch_smoothing cannot map
        eps, factor = mapped
    if weight is not None and weight.dtype != input.dtype:
        weight = weight.to(input.dtype)
    soft = target.is_floating_point()
    if soft and target.dtype != input.dtype:
        target = target.to(input.dtype)
    if soft:
        masked, all_ignored = input, None
    elif checked is not None:
        lo, hi = checked
        any_ignored = lo <= ignore_index <= hi
        masked = _select_counted(input, target, ignore_index) if any_ignored else input
        # every target ignored: min = max = ignore_index
        all_ignored = lo == hi == ignore_index or target.numel() == 0
    else:
        masked = _select_counted(input, target, ignore_index)
        all_ignored = None
    if factor != 1.0 and weight is None and all_ignored is False and masked is input:
        # eager, no row ignored, no class weights: no extra multiply node
        out, factor = _scaled(input, target, ignore_index, reduction, eps, factor), 1.0
    elif reduction == "mean" and all_ignored is True:
        # 0, connected to the graph: zero gradients (an empty sum: input.sum() * 0 is NaN
        # if a logit is infinite)
        out = input.flatten()[:0].sum()
    else:
        out = F.cross_entropy(
            masked, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
            label_smoothing=eps,
        )  # fmt: skip
        if reduction == "mean" and all_ignored is None and not soft:
            # traced or unchecked: the same rule as a select (no host synchronization)
            out = torch.where((target != ignore_index).any(), out, 0)
    if factor != 1.0:
        out = out * factor
    if out.dtype != input.dtype:
        out = out.to(input.dtype)
    if not return_nll:
        return out, None
    with torch.no_grad():  # a second pass: "torch" runs small inputs, where that is cheap
        cdt = compute_dtype(input.dtype)
        nll = F.cross_entropy(
            masked.to(cdt),
            target.to(cdt) if soft else target,
            reduction="none",
            ignore_index=ignore_index,
        )
    return out, nll


def _scaled(
    input: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    reduction: str,
    eps: float,
    factor: float,
) -> torch.Tensor:
    """``factor · F.cross_entropy(label_smoothing=eps)`` in one kernel, every row counted and
    no class weights given: the factor as uniform class weights ("mean" is the weighted sum
    with factor / N, as the weights would otherwise cancel in the mean)."""
    scale = factor / target.numel() if reduction == "mean" else factor
    w = torch.full((input.shape[1],), scale, dtype=input.dtype, device=input.device)
    return F.cross_entropy(
        input, target, weight=w, ignore_index=ignore_index,
        reduction="sum" if reduction == "mean" else reduction, label_smoothing=eps,
    )  # fmt: skip


def _select_counted(input: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The logits with every ignored row replaced by zeros (a select: NaN/inf there cannot
    reach the loss or its gradient)."""
    return torch.where((target != ignore_index).unsqueeze(1), input, 0)
