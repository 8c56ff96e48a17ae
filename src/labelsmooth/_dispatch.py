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


#: "auto" takes the compiled kernel for 2-D CPU inputs with at least this many elements (the
#: one-time compilation, ~10-20 s cold and ~2 s from the on-disk cache, pays off there; see
#: benchmarks/results/cpu.md). Below it, and on other devices, the eager fused blocks.
AUTO_COMPILED_MIN_NUMEL = 1 << 22


def resolve_impl(
    impl: str, input: torch.Tensor, *, soft: bool, inplace_backward: bool = False
) -> str:
    """Map ``impl`` (possibly "auto") to the concrete implementation that will run.

    "auto": the reference for soft targets (the fused path would fall back to it anyway);
    for class indices the fused path — with the torch.compile'd kernel for large 2-D CPU
    inputs when a compiler is available, eager blocks otherwise. An explicit name that cannot
    run raises ``ValueError`` saying why.
    """
    if impl == "auto":
        if soft:
            return "reference"
        if (
            input.device.type == "cpu"
            and input.dim() == 2
            and not inplace_backward
            and input.numel() >= AUTO_COMPILED_MIN_NUMEL
            and _unavailable_reason("compiled", input, soft) is None
        ):
            return "compiled"
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
