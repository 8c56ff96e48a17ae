"""PyTorch's own ``F.cross_entropy`` for the calls it covers, with the all-ignored mean fixed.

For small inputs the per-call Python overhead of the fused path (a few dozen small ops)
outweighs what it saves, and the built-in is the fastest correct path, so ``impl="auto"``
takes it there when the options are ones PyTorch implements (the registry's
``_torch_unsupported`` in ``labelsmooth/_dispatch.py`` says which).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy_builtin"]


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
    *,
    return_nll: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``F.cross_entropy``, except that a "mean" with every target ignored is 0, not NaN.

    Arguments as :func:`labelsmooth.ops.reference.cross_entropy_reference` (``u`` uniform,
    ``convention`` "uniform", ``kl`` False: the registry refuses anything else). The dtype
    rules are the other impls': ``weight`` and soft targets of another float dtype are used
    in the input's dtype (PyTorch would raise, or promote the result), and the loss has the
    input's dtype.
    """
    if weight is not None and weight.dtype != input.dtype:
        weight = weight.to(input.dtype)
    if target.is_floating_point() and target.dtype != input.dtype:
        target = target.to(input.dtype)
    if not target.is_floating_point():
        # an ignored row's logits are replaced (a select) so that NaN/inf there cannot reach
        # its gradient (PyTorch's own gradient of such a row is NaN); one cheap pass, and
        # "auto" then gives the same answers below and above its size threshold
        input = torch.where((target != ignore_index).unsqueeze(1), input, 0)
    out = _builtin(input, target, weight, ignore_index, reduction, label_smoothing)
    if not return_nll:
        return out
    with torch.no_grad():  # a second pass: "torch" runs small inputs, where that is cheap
        nll = F.cross_entropy(
            input.float(),
            target.float() if target.is_floating_point() else target,
            reduction="none",
            ignore_index=ignore_index,
        )
    return out, nll


def _builtin(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> torch.Tensor:
    kw = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)
    if reduction == "mean":
        nothing = input.shape[0] == 0 or (
            not target.is_floating_point() and bool((target == ignore_index).all())
        )
        if nothing:  # PyTorch: 0/0 = NaN. Here 0, connected to the graph: zero gradients.
            # (an empty sum, not input.sum() * 0: that is NaN if a logit is infinite)
            return input.flatten()[:0].sum().to(input.dtype)
    out: torch.Tensor = F.cross_entropy(input, target, reduction=reduction, **kw)  # type: ignore[arg-type]
    return out.to(input.dtype)
