"""PyTorch's own ``F.cross_entropy`` for the calls it covers, with the all-ignored mean fixed.

For small inputs the per-call Python overhead of the fused path (a few dozen small ops)
outweighs what it saves, and the built-in is the fastest correct path, so ``impl="auto"``
takes it there when the options are ones PyTorch implements: convention "uniform" without a
prior, class mask or KL form, in float32/float64 (half-precision inputs are excluded because
PyTorch sums the smoothing term in the input's dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy_builtin", "builtin_unsupported"]


def builtin_unsupported(
    input: torch.Tensor, convention: str, prior: object, class_mask: object, kl: bool
) -> str | None:
    """Why ``F.cross_entropy`` cannot compute this call exactly, or None if it can."""
    if convention != "uniform":
        return f"PyTorch implements only convention='uniform', got {convention!r}"
    if prior is not None or class_mask is not None:
        return "PyTorch has no smoothing prior or class mask"
    if kl:
        return "PyTorch has no KL form"
    if input.dtype not in (torch.float32, torch.float64):
        return f"PyTorch sums the smoothing term in {input.dtype}, which can overflow"
    return None


def cross_entropy_builtin(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    u: torch.Tensor,
    convention: str,
    kl: bool,
) -> torch.Tensor:
    """``F.cross_entropy``, except that a "mean" with every target ignored is 0, not NaN.

    Arguments as :func:`labelsmooth.ops.reference.cross_entropy_reference` (``u`` uniform,
    ``convention`` "uniform", ``kl`` False: checked by :func:`builtin_unsupported`).
    """
    if not target.is_floating_point():
        target = target.long()
    kw = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)
    if reduction == "mean":
        nothing = input.shape[0] == 0 or (
            not target.is_floating_point() and bool((target == ignore_index).all())
        )
        if nothing:  # PyTorch: 0/0 = NaN. Here 0, connected to the graph: zero gradients.
            return (input.sum() * 0).to(input.dtype)
    out: torch.Tensor = F.cross_entropy(input, target, reduction=reduction, **kw)  # type: ignore[arg-type]
    return out
