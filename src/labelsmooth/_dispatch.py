"""Implementation names, their availability and the choice made by ``impl="auto"``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

__all__ = ["IMPLS", "GENERAL_IMPLS", "available_impls", "resolve_impl", "lookup"]

#: Every name ``impl=`` accepts.
IMPLS = ("auto", "reference", "fused", "compiled", "torch")
#: Implementations that support every option (the tests run all of them over the full grid).
GENERAL_IMPLS = ("reference", "fused", "compiled")


def _unavailable_reason(
    impl: str, input: torch.Tensor, soft: bool, builtin_reason: str | None = None
) -> str | None:
    """Why ``impl`` cannot run on this call, or None if it can."""
    if impl == "torch":
        return builtin_reason
    if impl == "compiled":
        from labelsmooth.ops.fused import compiled_available

        return compiled_available(input.device)
    return None


def available_impls(device: torch.device | str = "cpu") -> list[str]:
    """Implementations supporting every option that can run on ``device``."""
    probe = torch.zeros(1, 2, device=device)
    return [n for n in GENERAL_IMPLS if _unavailable_reason(n, probe, False) is None]


#: Below this many elements "auto" takes PyTorch's own kernel when it covers the options:
#: the fused path's fixed Python overhead (a few dozen small ops, ~0.2 ms) dominates there.
#: With the native CPU row kernel (float32 on CPU) the fused path overtakes the built-in
#: sooner: measured at 128×1000 0.8×, 256×1000 0.5×, 128×256 1.7× the built-in's time.
AUTO_TORCH_MAX_NUMEL = 1 << 19
AUTO_TORCH_MAX_NUMEL_NATIVE = 1 << 16


def _torch_limit(input: torch.Tensor) -> int:
    """Size under which "auto" prefers PyTorch's kernel for this input."""
    if input.device.type == "cpu" and input.dtype == torch.float32:
        from labelsmooth.ops.cpu_kernel import native_unavailable

        if native_unavailable(input.device) is None:
            return AUTO_TORCH_MAX_NUMEL_NATIVE
    return AUTO_TORCH_MAX_NUMEL


def resolve_impl(
    impl: str,
    input: torch.Tensor,
    *,
    soft: bool,
    inplace_backward: bool = False,
    builtin_reason: str | None = "not checked",
) -> str:
    """Map ``impl`` (possibly "auto") to the concrete implementation that will run.

    "auto": PyTorch's kernel ("torch") for inputs under ``AUTO_TORCH_MAX_NUMEL`` elements
    (``AUTO_TORCH_MAX_NUMEL_NATIVE`` for float32 on CPU with the native kernel) when it
    covers the options (``builtin_reason`` is None); else the reference for soft
    targets (the fused path would fall back to it anyway) and the fused path for class
    indices. ("compiled" is never chosen: on CPU it measured slower than the eager blocks and
    costs a compilation; see benchmarks/results/cpu.md.) An explicit name that cannot run
    raises ``ValueError`` saying why.
    """
    if impl == "auto":
        n = input.numel()
        if builtin_reason is None and not inplace_backward:
            if n < AUTO_TORCH_MAX_NUMEL_NATIVE or n < _torch_limit(input):
                return "torch"
        if soft:
            return "reference"
        return "fused"
    reason = _unavailable_reason(impl, input, soft, builtin_reason)
    if reason is not None:
        raise ValueError(f"impl={impl!r} cannot run here: {reason}")
    return impl


def lookup(impl: str) -> Callable[..., torch.Tensor]:
    """The callable behind a concrete implementation name."""
    if impl == "reference":
        from labelsmooth.ops.reference import cross_entropy_reference

        return cross_entropy_reference
    if impl == "torch":
        from labelsmooth.ops.builtin import cross_entropy_builtin

        return cross_entropy_builtin
    from labelsmooth.ops.fused import cross_entropy_fused

    if impl == "compiled":
        return functools.partial(cross_entropy_fused, compiled=True)
    return cross_entropy_fused
