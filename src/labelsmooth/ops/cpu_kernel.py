"""Build, load and launch the native CPU row kernel (``_cpu_kernels.c``).

The fused path's eager blocks spend most of their time in separate torch ops (max, exp,
sum, scale), each a sweep over the block with its own dispatch. The C kernel does the
statistics and the gradient of a row in three sweeps while the row is in cache, with one
exponential per element, which brings the fused forward + backward close to the cost of one
read and one write of the logits.

It is compiled on first use with the system C compiler (``$CC``, else ``cc``, ``gcc`` or
``clang``) for this machine (``-march=native``; vectorization via ``-fopenmp-simd``, no
OpenMP runtime), which takes about half a second, and cached on disk under
``$LABELSMOOTH_CACHE`` (default ``$XDG_CACHE_HOME/labelsmooth`` or ``~/.cache/labelsmooth``),
keyed by the source, the compiler, its flags and the CPU. It is loaded with :mod:`ctypes`,
whose calls release the GIL, so the fused path's worker threads run it in parallel.

Without a compiler, or with ``LABELSMOOTH_NATIVE=0``, :func:`native_unavailable` says why and
the fused path uses its eager torch blocks instead (same results within rounding).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["native_unavailable", "native_dtypes", "rows", "kernel_path", "compiler_version"]

_SOURCE = Path(__file__).with_name("_cpu_kernels.c")
_FLAGS = [
    "-O3",
    "-std=c99",
    "-fPIC",
    "-shared",
    "-fopenmp-simd",
    "-fno-math-errno",
    "-fno-trapping-math",
]
_ARCH_FLAGS = ["-march=native"]

_lib: ctypes.CDLL | None = None
_failure: str | None = None


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def _cache_dir() -> Path:
    if os.environ.get("LABELSMOOTH_CACHE"):
        return Path(os.environ["LABELSMOOTH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "labelsmooth"


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


_versions: dict[str, str] = {}


def _cc_version(cc: str) -> str:
    """First line of ``cc --version`` (cached per compiler)."""
    if cc not in _versions:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
        _versions[cc] = (out.stdout.splitlines() or ["unknown version"])[0].strip()
    return _versions[cc]


def compiler_version() -> str:
    """The compiler's version and the flags (for benchmark records)."""
    cc = _compiler()
    if cc is None:
        return "no C compiler"
    return f"{_cc_version(cc)} {' '.join(_FLAGS + _ARCH_FLAGS)}"


def _build(cc: str) -> Path:
    """Compile the kernel (or find it in the cache) and return the shared library's path."""
    about = [cc, _cc_version(cc), " ".join(_FLAGS), _cpu_id(), platform.machine()]
    digest = hashlib.sha256(b"\0".join([_SOURCE.read_bytes(), *(t.encode() for t in about)]))
    key = digest.hexdigest()[:20]
    name = f"cpu_kernels-{key}.so"
    directory = _cache_dir()
    if (directory / name).exists():
        return directory / name
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory)  # writable?
        probe.close()
    except OSError:  # a read-only home: build per user in the temporary directory
        directory = (
            Path(tempfile.gettempdir()) / f"labelsmooth-{getattr(os, 'getuid', lambda: 0)()}"
        )
        directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    if target.exists():
        return target
    last_error = ""
    for arch in (_ARCH_FLAGS, []):  # -march=native is not known to every compiler
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [cc, *_FLAGS, *arch, "-o", tmp, str(_SOURCE), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            os.replace(tmp, target)  # atomic: concurrent builders each install a whole file
            return target
        os.unlink(tmp)
        last_error = (proc.stderr or proc.stdout).strip()[-400:]
    raise RuntimeError(f"{cc} failed to compile {_SOURCE.name}: {last_error}")


def _load() -> ctypes.CDLL | None:
    global _lib, _failure
    if _lib is not None or _failure is not None:
        return _lib
    cc = _compiler()
    if cc is None:
        _failure = "no C compiler found ($CC, cc, gcc or clang on PATH)"
        return None
    P, I = ctypes.c_void_p, ctypes.c_int64
    try:
        lib = ctypes.CDLL(str(_build(cc)))
        kernels = {dtype: getattr(lib, name) for dtype, name in _FUNCTIONS.items()}
    except Exception as err:  # noqa: BLE001 - any build or load failure means: eager blocks
        _failure = f"{type(err).__name__}: {err}"[:500]
        return None
    for fn in kernels.values():
        fn.argtypes = [I, I, P, I, P, I, P, P, P, ctypes.c_float, P, P, P, P, P, P, P]
        fn.restype = None
    _kernels.clear()
    _kernels.update(kernels)
    _lib = lib
    return _lib


#: The C function for each logits dtype (gradient in the same dtype, arithmetic in float32).
_FUNCTIONS = {torch.float32: "ls_rows_f32", torch.bfloat16: "ls_rows_bf16"}
_kernels: dict[torch.dtype, Any] = {}


def native_dtypes() -> tuple[torch.dtype, ...]:
    """Logits dtypes the loaded kernel reads and writes directly (empty if not loaded)."""
    return tuple(_kernels) if _load() is not None else ()


def native_unavailable(device: torch.device) -> str | None:
    """Why the native kernel cannot run on ``device``, or None if it can (builds it once)."""
    if device.type != "cpu":
        return f"the native kernel runs on CPU tensors, got device {device}"
    if os.environ.get("LABELSMOOTH_NATIVE", "1") == "0":
        return "disabled by LABELSMOOTH_NATIVE=0"
    if _load() is None:
        return f"the native CPU kernel could not be built: {_failure}"
    return None


def kernel_path() -> str | None:
    """The loaded shared library's path (None if not loaded), for diagnostics."""
    return None if _lib is None else str(_lib._name)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def rows(
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
    work: torch.Tensor | None = None,
) -> None:
    """Run the kernel on a (B, C) block: statistics into m, s, x_y, S (B,) and, if ``g`` is
    given, the gradient into ``g`` (B, C, ``x``'s dtype), which may be ``x`` itself.

    ``x`` is float32 or bfloat16 (float16 callers convert to float32 first), rows with unit
    stride; the coefficient and statistic vectors are float32, ``y`` int64. For a
    gradient in a half dtype, ``work`` is a float32 scratch row of at least C elements
    (allocated here if not given). ``a`` is (C,) or None when every a_k equals ``a0``.
    Every argument is checked here (shapes, dtypes, strides, index range), because the C
    code trusts them.
    """
    lib = _load()
    if lib is None:
        raise RuntimeError(f"the native CPU kernel is unavailable: {_failure}")
    fn = _kernels.get(x.dtype)
    if fn is None:
        raise ValueError(f"rows: x must be one of {list(_kernels)}, got {x.dtype}")
    B, C = x.shape
    f32 = torch.float32
    vecs = [("y", y, torch.int64), ("g_p", g_p, f32), ("g_a", g_a, f32), ("g_y", g_y, f32)]
    vecs += [("m", m, f32), ("s", s, f32), ("x_y", x_y, f32), ("S", S, f32)]
    for name, t, dt in vecs:
        if t.shape != (B,) or t.dtype != dt or (B > 1 and t.stride(0) != 1) or t.is_cuda:
            raise ValueError(f"rows: {name} must be a contiguous ({B},) {dt} CPU tensor")
    for name, t2 in (("x", x), ("g", g)):
        if t2 is not None and (
            t2.shape != (B, C) or t2.dtype != x.dtype or t2.stride(1) != 1 or t2.is_cuda
        ):
            raise ValueError(
                f"rows: {name} must be a ({B}, {C}) {x.dtype} CPU tensor with unit stride"
            )  # noqa: E501
    if a is not None and (a.shape != (C,) or a.dtype != f32 or a.stride(0) != 1):
        raise ValueError(f"rows: a must be a contiguous ({C},) float32 tensor")
    if g is not None and x.dtype != f32:
        if work is None:
            work = torch.empty(C, dtype=f32)
        if work.dtype != f32 or work.numel() < C or not work.is_contiguous() or work.is_cuda:
            raise ValueError(
                f"rows: work must be a contiguous float32 CPU tensor of ≥ {C} elements"
            )  # noqa: E501
    else:
        work = None
    if B == 0:
        return
    if C == 0:
        raise ValueError("rows: the logits have no classes")
    lo, hi = torch.aminmax(y)
    lo_i, hi_i = int(lo), int(hi)
    if lo_i < 0 or hi_i >= C:
        raise ValueError(f"rows: target indices must be in [0, {C}), got [{lo_i}, {hi_i}]")
    fn(
        B, C, x.data_ptr(), x.stride(0), _ptr(g), 0 if g is None else g.stride(0), _ptr(work),
        y.data_ptr(), _ptr(a), float(a0), g_p.data_ptr(), g_a.data_ptr(), g_y.data_ptr(),
        m.data_ptr(), s.data_ptr(), x_y.data_ptr(), S.data_ptr(),
    )  # fmt: skip
