"""Load and launch the native CPU row kernel (``kernels.c``).

The fused path's eager blocks spend most of their time in separate torch ops (max, exp,
sum, scale), each a sweep over the block with its own dispatch. The C kernel does the
statistics and the gradient of a row in three sweeps while the row is in cache, with one
exponential per element, which brings the fused forward + backward close to the cost of one
read and one write of the logits.

It is compiled on first use with the system C compiler for this machine (``-march=native``;
vectorization via ``-fopenmp-simd``, no OpenMP runtime), which takes about half a second, and
cached on disk: :mod:`labelsmooth.ops.cpu.build` builds, verifies and caches it (the cache
folder, and the threat model the cache is built against, are described there). It is loaded
with :mod:`ctypes`, whose calls release the GIL, so the fused path's worker threads run it
in parallel. :func:`launcher` checks every argument before the C code sees a pointer.

With ``labelsmooth.runtime.config.native_kernel = False`` (``LABELSMOOTH_NATIVE=0`` at
import) the fused path uses its eager torch blocks (same results within rounding) and
:func:`native_unavailable` says so. When the kernel cannot be used for any other reason (no
compiler, a failed or timed-out compile, no trusted folder) the fused path also uses the
eager blocks, :func:`native_unavailable` gives the reason, and one :class:`RuntimeWarning`
per process says so.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

import torch

from labelsmooth import runtime
from labelsmooth.ops.cpu import build

__all__ = [
    "native_unavailable",
    "native_dtypes",
    "launcher",
    "Launch",
    "check_targets",
    "kernel_path",
]

_lib: ctypes.CDLL | None = None
_path: Path | None = None
_failure: str | None = None
_state_lock = threading.Lock()


def _load(quiet: bool = False) -> ctypes.CDLL | None:
    global _lib, _path, _failure
    if _lib is not None or _failure is not None:
        if _lib is None:
            _unavailable(quiet)
        return _lib
    with _state_lock:
        if _lib is None and _failure is None:
            try:
                lib, kernels, path = build.open_library(_FUNCTIONS)
            except (build.BuildError, OSError) as err:  # OSError: e.g. the source is unreadable
                _failure = (str(err) if isinstance(err, build.BuildError) else repr(err))[:1000]
                _unavailable(quiet)
                return None
            P, I = ctypes.c_void_p, ctypes.c_int64
            for fn in kernels.values():
                fn.argtypes = [I, I, P, I, P, I, P, P, P, I, ctypes.c_float, P, P, P, P, P, P, P]
                fn.restype = None
            _kernels.clear()
            _kernels.update(kernels)
            _lib, _path = lib, path
    return _lib


def _unavailable(quiet: bool) -> None:
    """No kernel (``_failure`` says why): the one warning, unless the caller only asks (auto's
    rule consults the kernel and may then run PyTorch's), so that it comes with the first call
    that runs the eager blocks instead."""
    if not quiet:
        build.warn_once(
            "unavailable",
            f"labelsmooth: the native CPU kernel is unavailable ({_failure}). "
            "impl='fused' uses its eager torch blocks instead (same results, 2-4x "
            "slower). Fix the cause, or set labelsmooth.runtime.config.native_kernel "
            "= False (LABELSMOOTH_NATIVE=0) to choose them without this warning.",
        )


#: The C function for each logits dtype (gradient in the same dtype, arithmetic in float32).
_FUNCTIONS = {torch.float32: "ls_rows_f32", torch.bfloat16: "ls_rows_bf16"}
_kernels: dict[torch.dtype, Any] = {}


def native_dtypes() -> tuple[torch.dtype, ...]:
    """Logits dtypes the loaded kernel reads and writes directly (empty if not loaded or
    disabled by ``labelsmooth.runtime.config.native_kernel``)."""
    if not runtime.config.native_kernel:
        return ()
    return tuple(_kernels) if _load() is not None else ()


def native_unavailable(device: torch.device, *, quiet: bool = False) -> str | None:
    """Why the native kernel cannot run on ``device``, or None if it can (builds it once).

    A kernel that cannot be built or loaded is reported by one :class:`RuntimeWarning` per
    process, at the first call without ``quiet`` (the fused path, about to run its eager
    blocks); ``quiet=True`` only asks (impl="auto"'s rule)."""
    if device.type != "cpu":
        return f"the native kernel runs on CPU tensors, got device {device}"
    if not runtime.config.native_kernel:
        return "disabled: labelsmooth.runtime.config.native_kernel is False (LABELSMOOTH_NATIVE=0)"
    if _load(quiet) is None:
        return f"the native CPU kernel is unavailable: {_failure}"
    return None


def kernel_path() -> str | None:
    """The loaded shared library's path (None if not loaded), for diagnostics. A library
    built in a one-off folder (see the module docstring) has been deleted since loading."""
    return None if _path is None else str(_path)


class Launch:
    """The kernel's call on rows of a block whose arguments :func:`launcher` checked: calling
    it with ``(r0, r1[, slot])`` runs rows r0:r1 (slot: which scratch row, one per
    concurrent call) with pointer arithmetic only, no torch op (for worker threads)."""

    def __init__(
        self, fn: Any, shape: tuple[int, int], ptrs: tuple[Any, ...], slots: int, keep: tuple
    ) -> None:
        self.fn, (self.B, self.C), self.slots = fn, shape, slots
        (self.x, self.ldx, self.x_size, self.g, self.ldg, self.work, self.y, self.a,
         self.lda, self.a0, self.vecs) = ptrs  # fmt: skip
        self._keep = keep  # the tensors behind the pointers

    def __call__(self, r0: int, r1: int, slot: int = 0) -> None:
        """The kernel on rows r0:r1 (0 ≤ r0 ≤ r1 ≤ B; 0 ≤ ``slot`` < the launcher's ``slots``)."""
        if not (0 <= r0 <= r1 <= self.B and 0 <= slot < self.slots):
            raise ValueError(f"rows: bad row range {r0}:{r1} (slot {slot}) of {self.B}")
        if r1 == r0:
            return
        step = self.ldx * self.x_size * r0  # x and g: same dtype
        g = None if self.g is None else self.g + self.ldg * self.x_size * r0
        work = None if self.work is None else self.work + slot * self.C * 4
        self.fn(  # -1: an ignored row (neutral statistics, zero gradient)
            r1 - r0, self.C, self.x + step, self.ldx, g, self.ldg, work, self.y + r0 * 8,
            self.a, self.lda, self.a0, *[p + r0 * 4 for p in self.vecs],  # float32 vectors
        )  # fmt: skip


def launcher(
    x: torch.Tensor,
    g: torch.Tensor | None,
    y: torch.Tensor,
    a: torch.Tensor | None,
    a0: float,
    g_p: torch.Tensor,
    g_a: torch.Tensor,
    g_y: torch.Tensor,
    m: torch.Tensor,
    s: torch.Tensor,
    x_y: torch.Tensor,
    S: torch.Tensor,
    *,
    work: torch.Tensor | None = None,
    slots: int = 1,
    targets_checked: bool = False,
) -> Launch:
    """Check every argument for the whole (B, C) block once and return the :class:`Launch`
    of its rows (``launcher(...)(0, B)`` runs the whole block).

    The kernel writes statistics into m, s, x_y, S (B,) and, if ``g`` is given, the gradient
    into ``g`` (B, C, ``x``'s dtype), which may be ``x`` itself. The statistics are relative
    to the row max (see ``kernels.c``): m = max_k x_k, s = Σ_k exp(x_k − m), ``x_y``
    receives d_y = x_y − m, and S = Σ_{a_k≠0} a_k (x_k − m). A row with y = −1 is ignored:
    m = 0, s = 1, d_y = S = 0 and a zero gradient row. ``x`` is float32 or bfloat16 (float16
    callers convert to float32 first), rows with unit stride; the coefficient and statistic
    vectors are float32, ``y`` int64. ``a`` is (C,), (C, C) (a class-conditional prior: a
    row with target y reads row y) or None when every a_k equals ``a0``. Every argument is
    checked here (shapes, dtypes, strides, index range), because the C code trusts them;
    ``targets_checked=True`` skips only the index range check (a torch op) for a caller that
    checked the whole ``y`` once. For a gradient in a half dtype, ``work`` (``slots`` float32
    scratch rows of C elements, allocated here if not given) serves ``slots`` concurrent
    calls. The tensors must stay alive while the launch is used."""
    lib = _load()
    if lib is None:
        raise RuntimeError(f"the native CPU kernel is unavailable: {_failure}")
    fn = _kernels.get(x.dtype)
    if fn is None:
        raise ValueError(f"rows: x must be one of {list(_kernels)}, got {x.dtype}")
    B, C = x.shape
    _check_vectors(B, y, (g_p, g_a, g_y, m, s, x_y, S))
    for name, t2 in (("x", x), ("g", g)):
        if t2 is not None and (
            t2.shape != (B, C) or t2.dtype != x.dtype or t2.stride(1) != 1 or t2.is_cuda
        ):
            raise ValueError(
                f"rows: {name} must be a ({B}, {C}) {x.dtype} CPU tensor with unit stride"
            )  # noqa: E501
    lda = _row_stride_of_a(a, C)
    if g is not None and x.dtype != torch.float32:
        work = torch.empty(slots, C, dtype=torch.float32) if work is None else work
        _check_work(work, C, slots)
    else:
        work = None
    if B and C == 0:
        raise ValueError("rows: the logits have no classes")
    if B and not targets_checked:
        check_targets(y, C)
    vecs = (g_p, g_a, g_y, m, s, x_y, S)
    ptrs = (
        x.data_ptr(), x.stride(0), x.element_size(), None if g is None else g.data_ptr(),
        0 if g is None else g.stride(0), None if work is None else work.data_ptr(),
        y.data_ptr(), None if a is None else a.data_ptr(), lda, float(a0),
        [t.data_ptr() for t in vecs],
    )  # fmt: skip
    return Launch(fn, (B, C), ptrs, slots, (x, g, y, a, work, *vecs))


def _check_vectors(B: int, y: torch.Tensor, vecs: tuple[torch.Tensor, ...]) -> None:
    """Raise unless ``y`` is a contiguous (B,) int64 and every vector a contiguous (B,)
    float32 CPU tensor (in the kernel's order g_p, g_a, g_y, m, s, x_y, S)."""
    names = ("y", "g_p", "g_a", "g_y", "m", "s", "x_y", "S")
    f32 = torch.float32
    for name, t in zip(names, (y, *vecs)):
        dt = torch.int64 if name == "y" else f32
        if t.shape != (B,) or t.dtype != dt or (B > 1 and t.stride(0) != 1) or t.is_cuda:
            raise ValueError(f"rows: {name} must be a contiguous ({B},) {dt} CPU tensor")


def _check_work(work: torch.Tensor, C: int, slots: int) -> None:
    """Raise unless ``work`` holds ``slots`` float32 scratch rows of C elements."""
    f32 = torch.float32
    if work.dtype != f32 or work.numel() < C * slots or not work.is_contiguous() or work.is_cuda:
        raise ValueError(
            f"rows: work must be a contiguous float32 CPU tensor of ≥ {C * slots} elements"
        )


def _row_stride_of_a(a: torch.Tensor | None, C: int) -> int:
    """The kernel's ``lda`` for ``a``: 0 for a (C,) vector (or None), C for the (C, C) matrix
    of a class-conditional prior (a row with target y reads row y); raises for anything else."""
    if a is not None and (
        a.shape not in ((C,), (C, C)) or a.dtype != torch.float32 or not a.is_contiguous()
    ):
        raise ValueError(f"rows: a must be a contiguous ({C},) or ({C}, {C}) float32 tensor")
    if a is not None and a.is_cuda:
        raise ValueError("rows: a must be a CPU tensor")
    return C if a is not None and a.dim() == 2 else 0


def check_targets(y: torch.Tensor, C: int) -> None:
    """Raise unless every entry of ``y`` lies in [-1, C) (-1: an ignored row)."""
    if y.numel() == 0:
        return
    lo, hi = torch.aminmax(y)
    lo_i, hi_i = int(lo), int(hi)
    if lo_i < -1 or hi_i >= C:  # -1: an ignored row (neutral statistics, zero gradient)
        raise ValueError(f"rows: target indices must be in [-1, {C}), got [{lo_i}, {hi_i}]")
