"""Implementation names, their availability and the choice made by ``impl="auto"``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

__all__ = ["IMPLS", "available_impls", "resolve_impl", "lookup"]

#: Every name ``impl=`` accepts.
IMPLS = ("auto", "reference", "fused", "compiled")


def _unavailable_reason(impl: str, input: torch.Tensor, soft: bool) -> str | None:
    """Why ``impl`` cannot run on this call, or None if it can."""
    if impl == "compiled":
        from labelsmooth.ops.fused import compiled_available

        return compiled_available(input.device)
    return None


def available_impls(device: torch.device | str = "cpu") -> list[str]:
    """Concrete implementation names that can run on ``device``."""
    probe = torch.zeros(1, 2, device=device)
    return [n for n in IMPLS if n != "auto" and _unavailable_reason(n, probe, False) is None]


def resolve_impl(impl: str, input: torch.Tensor, *, soft: bool) -> str:
    """Map ``impl`` (possibly "auto") to the concrete implementation that will run.

    "auto" takes the fused blockwise path for class-index targets (it is exact and the
    fastest on every device we measured) and the reference for soft targets. An explicit name
    that cannot run raises ``ValueError`` saying why.
    """
    if impl == "auto":
        if soft:
            return "reference"
        return "fused"
    reason = _unavailable_reason(impl, input, soft)
    if reason is not None:
        raise ValueError(f"impl={impl!r} cannot run here: {reason}")
    return impl


def lookup(impl: str) -> Callable[..., torch.Tensor]:
    """The callable behind a concrete implementation name."""
    if impl == "reference":
        from labelsmooth.ops.reference import cross_entropy_reference

        return cross_entropy_reference
    from labelsmooth.ops.fused import cross_entropy_fused

    if impl == "compiled":
        return functools.partial(cross_entropy_fused, compiled=True)
    return cross_entropy_fused
