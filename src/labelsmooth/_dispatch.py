"""The backend registry: every loss asks here which code runs a call.

Two levels, one table each:

* :data:`REGISTRY` — one entry per ``impl=`` name of :func:`labelsmooth.cross_entropy`:
  ``unsupported(spec) -> reason | None`` (why it cannot run a call described by a
  :class:`labelsmooth._validate.Spec`), the keyword options it accepts, and ``rows``: the row
  backend it runs (the fused family) or None (whole-tensor impls: the reference and
  PyTorch's kernel). ``"auto"`` picks among the entries that can run by the measured rules
  in :func:`choose_auto`; an explicitly named impl that cannot run raises a ``ValueError``
  with its reason — never a quiet fallback.
* :data:`ROW_BACKENDS` — the kernels that compute rowmath's per-row statistics (and the
  gradient in the same pass): ``"fused"`` (the C kernel on CPU, eager torch blocks
  elsewhere) and ``"triton"``. The fused op of :mod:`labelsmooth.ops.library`, the chunked
  linear head and the vocabulary-parallel losses all take their rows from here
  (:func:`row_backend_for`), so a new kernel is one entry.

Nothing here imports a backend: each is loaded on first use.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from labelsmooth._validate import Spec

__all__ = [
    "Impl",
    "RowBackend",
    "ROW_BACKENDS",
    "row_backend_for",
    "REGISTRY",
    "IMPLS",
    "GENERAL_IMPLS",
    "available_impls",
    "resolve",
    "choose_auto",
    "AUTO_TORCH_MAX_NUMEL",
    "AUTO_TORCH_MAX_NUMEL_NATIVE",
    "AUTO_TRITON_MIN_NUMEL_CUDA",
]


@dataclass(frozen=True)
class Impl:
    """One implementation: how to get its function, what it refuses, which options it takes."""

    name: str
    unsupported: Callable[[Spec], str | None]
    options: frozenset[str] = frozenset()
    #: supports every loss option (the tests run it over the whole grid)
    general: bool = False
    #: the row backend (a key of ROW_BACKENDS) of a fused-family impl; None otherwise
    rows: str | None = None


@dataclass(frozen=True)
class RowBackend:
    """A kernel family computing per-row statistics: ``load()`` returns its module, which
    has ``statistics(x, rows, grad) -> RowStats`` and ``gradient_into(x, rows, stats)``."""

    name: str
    module: str

    def load(self) -> Any:
        return importlib.import_module(self.module)


ROW_BACKENDS: dict[str, RowBackend] = {
    b.name: b
    for b in (
        RowBackend("fused", "labelsmooth.ops.fused"),
        RowBackend("triton", "labelsmooth.ops.triton.launch"),
    )
}


def row_backend_for(device: torch.device) -> RowBackend:
    """The row backend for chunks of logits on ``device`` (the linear head, the parallel
    losses): Triton on CUDA when triton is installed, the fused driver otherwise."""
    if device.type == "cuda" and not _triton_missing():
        return ROW_BACKENDS["triton"]
    return ROW_BACKENDS["fused"]


def _param_grad_reason(spec: Spec) -> str | None:
    if spec.param_grads:
        names = " and ".join(spec.param_grads)
        return (
            f"it computes no gradient for {names} ({names}.requires_grad=True); "
            f"use impl='reference', or detach {names}"
        )
    return None


def _reference_unsupported(spec: Spec) -> str | None:
    if spec.inplace_backward:
        return "inplace_backward=True needs impl='fused' or 'triton' (the reference has a graph)"
    return None


def _fused_unsupported(spec: Spec) -> str | None:
    if spec.soft:
        return (
            "it takes class-index targets only; soft (probability) targets run on "
            "impl='reference' (or impl='torch')"
        )
    return _param_grad_reason(spec)


@functools.cache
def _triton_missing() -> bool:
    return importlib.util.find_spec("triton") is None  # finds it without importing it


def _triton_unsupported(spec: Spec) -> str | None:
    if spec.device_type == "cuda" and not _triton_missing():
        return _fused_unsupported(spec)
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if spec.device_type != "cuda" and not (interpreted and spec.device_type == "cpu"):
        return (
            f"it runs on CUDA tensors, got a {spec.device_type} tensor (CPU tensors only under "
            "the Triton interpreter, TRITON_INTERPRET=1)"
        )
    if _triton_missing():
        return "triton is not installed (pip install 'labelsmooth[triton]')"
    return _fused_unsupported(spec)


def _torch_unsupported(spec: Spec) -> str | None:
    if spec.torch_smoothing is None:
        return (
            f"convention={spec.convention!r} with label_smoothing={spec.eps} needs PyTorch's "
            "label_smoothing above 1"
        )
    if spec.prior or spec.class_mask:
        return "PyTorch has no smoothing prior or class mask"
    if spec.kl:
        return "PyTorch has no KL form"
    if spec.dtype not in (torch.float32, torch.float64):
        return f"PyTorch sums the smoothing term in {spec.dtype}, which can overflow"
    if spec.inplace_backward:
        return "inplace_backward=True needs impl='fused' or 'triton'"
    if spec.param_grads:
        return f"PyTorch computes no gradient for {' and '.join(spec.param_grads)}"
    return None


REGISTRY: dict[str, Impl] = {
    impl.name: impl
    for impl in (
        Impl("reference", _reference_unsupported, frozenset({"return_nll"}), general=True),
        Impl(
            "fused",
            _fused_unsupported,
            frozenset({"inplace_backward", "return_nll"}),
            general=True,
            rows="fused",
        ),
        Impl("torch", _torch_unsupported, frozenset({"return_nll"})),
        Impl(
            "triton",
            _triton_unsupported,
            frozenset({"inplace_backward", "return_nll"}),
            rows="triton",
        ),
    )
}

#: Every name ``impl=`` accepts.
IMPLS = ("auto", *REGISTRY)
#: Implementations that support every option (the tests run all of them over the full grid).
GENERAL_IMPLS = tuple(name for name, impl in REGISTRY.items() if impl.general)


def available_impls() -> list[str]:
    """Implementations supporting every option (all of them run on any device)."""
    return list(GENERAL_IMPLS)


#: On CPU, below this many elements "auto" takes PyTorch's own kernel when it covers the
#: options: the fused path's fixed Python overhead (a few dozen small ops, ~0.2 ms) dominates
#: there. With the native C row kernel (float32 on CPU) the fused path overtakes the built-in
#: sooner: measured at 128×1000 0.8×, 256×1000 0.5×, 128×256 1.7× the built-in's time
#: (benchmarks/results/cpu.md).
AUTO_TORCH_MAX_NUMEL = 1 << 19
AUTO_TORCH_MAX_NUMEL_NATIVE = 1 << 16


def _cpu_takes_torch(spec: Spec) -> bool:
    """CPU: whether "auto" runs PyTorch's kernel (which covers the call) at this size. The C
    kernel is consulted (built on first use) only between the two thresholds, where the
    answer depends on it, and quietly: a call that runs PyTorch's kernel never warns that
    the C kernel is unavailable (the fused path does, when it runs its eager blocks)."""
    if spec.numel < AUTO_TORCH_MAX_NUMEL_NATIVE:
        return True
    if spec.numel >= AUTO_TORCH_MAX_NUMEL:
        return False
    if spec.dtype != torch.float32:
        return True
    from labelsmooth.ops.cpu.kernel import native_unavailable

    return native_unavailable(torch.device("cpu"), quiet=True) is not None


#: On CUDA, from this many elements "auto" runs impl="triton" instead of PyTorch's kernel for
#: the calls both cover: on an H200 triton took 0.29-0.55x PyTorch's time from 4096 x 128256
#: (5.3e8 elements) up, was mixed at 8192 x 32000 (0.61x fp32, 1.06x bf16) and slower below
#: (benchmarks/results/gpu.md).
AUTO_TRITON_MIN_NUMEL_CUDA = 1 << 28


def choose_auto(spec: Spec) -> str:
    """The impl ``"auto"`` runs for this call.

    * CPU (measured, benchmarks/results/cpu.md): PyTorch's kernel for inputs it covers under
      :data:`AUTO_TORCH_MAX_NUMEL` elements (:data:`AUTO_TORCH_MAX_NUMEL_NATIVE` for float32
      with the C kernel), else ``"fused"``.
    * CUDA (measured on an H200, benchmarks/results/gpu.md), when triton is installed:
      PyTorch's kernel for calls it covers under :data:`AUTO_TRITON_MIN_NUMEL_CUDA`
      elements, ``"triton"`` otherwise (the fused eager blocks measured 30-150x slower than
      triton there). Without triton: PyTorch's kernel where it covers the options, else
      ``"fused"``.
    * Any other device (no committed benchmark yet): PyTorch's kernel whenever it covers the
      options, else ``"fused"`` (eager blocks).
    * ``"reference"`` when none of these can run the call (soft targets PyTorch does not
      cover, gradients for ``weight`` or ``prior``).
    """
    torch_ok = _torch_unsupported(spec) is None
    triton_ok = spec.device_type == "cuda" and _triton_unsupported(spec) is None
    if torch_ok:
        if spec.device_type == "cpu" and _cpu_takes_torch(spec):
            return "torch"
        if spec.device_type == "cuda" and not (
            triton_ok and spec.numel >= AUTO_TRITON_MIN_NUMEL_CUDA
        ):
            return "torch"
        if spec.device_type not in ("cpu", "cuda"):
            return "torch"
    if triton_ok:
        return "triton"
    for name in ("fused", "reference", "torch"):
        if REGISTRY[name].unsupported(spec) is None:
            return name
    reasons = "; ".join(f"{n}: {REGISTRY[n].unsupported(spec)}" for n in REGISTRY)
    raise ValueError(f"no implementation can run this call ({reasons})")


def resolve(impl: str, spec: Spec) -> Impl:
    """The registry entry for ``impl`` (``"auto"`` resolved), or ``ValueError`` saying why
    the named one cannot run these arguments."""
    if impl == "auto":
        return REGISTRY[choose_auto(spec)]
    entry = REGISTRY[impl]
    reason = entry.unsupported(spec)
    if reason is not None:
        raise ValueError(f"impl={impl!r} cannot run here: {reason}")
    return entry
