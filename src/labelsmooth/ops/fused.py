"""Fused blockwise label-smoothed cross-entropy: loss and gradient in one forward sweep.

The forward pass walks over the logits in blocks of rows sized for the cache. For each block
it computes the per-row statistics (max ``m``, sum of exponentials ``s``, target logit
``x_y`` and the prior-weighted logit sum ``S``), the loss from them, and the gradient, which
it writes once into a buffer of the input's shape and dtype (or, opt-in, into the logits
themselves). Nothing of size (N, C) besides that gradient is allocated: no log-probabilities,
no smoothed target, no mask. Backward only scales the saved gradient by ``grad_output``.

Math (see :mod:`labelsmooth.ops.reference` for the notation). Every convention's smoothed
target has the form ``q = α·onehot(y) + β·u`` with per-row scalars

* uniform:       α = 1-ε,             β = ε
* others:        α = 1-ε - β·u_y,     β = ε / (1-u_y)   (α = 1, β = 0 if 1-u_y = 0)
* unnormalized:  α = 1-ε - ε·u_y,     β = ε

With class weights ``w`` and ``a_k = w_k·u_k``, ``A = Σ_k a_k``, ``lse = m + log s``:

    loss = Σ_k w_k q_k (lse - x_k) = α·w_y·(lse - x_y) + β·(A·lse - S),   S = Σ_k a_k x_k
    ∂loss/∂x_k = (α·w_y + β·A)·p_k - α·w_y·[k = y] - β·a_k,             p = softmax(x)

The KL form adds Σ_k w_k q_k log(q_k / Z) (Z = α + β = Σ_k q_k), a function of y only:
    A·β log β + β·L - β·a_y·log(β u_y) + w_y·q_y log q_y - (α w_y + β A)·log Z,
    with L = Σ_k a_k log u_k and q_y = α + β u_y; it does not change the gradient.

These statistics are what a vocabulary-parallel or chunked path combines: ``m`` by max,
``s`` by rescaled sum, ``x_y`` and ``S`` by sum.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from labelsmooth.ops import cpu_kernel
from labelsmooth.ops.reference import compute_dtype, cross_entropy_reference

__all__ = [
    "cross_entropy_fused",
    "compiled_available",
    "empty_like_gradient",
    "release_cached_gradient",
    "row_coefficients",
    "scalar_alpha_beta",
    "kl_constant",
    "loss_from_stats",
    "BLOCK_BYTES",
]

#: Target size in bytes of one block of (compute-dtype) logits: fits in a core's L2 cache.
BLOCK_BYTES = 1 << 21
#: Gradient buffers at least this large are allocated with transparent huge pages on Linux.
HUGEPAGE_MIN_BYTES = 1 << 26


#: The most recent huge-page gradient mapping; reused once no tensor uses it any more.
_cached_mapping: mmap.mmap | None = None


def release_cached_gradient() -> None:
    """Drop the cached gradient mapping (its memory is returned once no tensor uses it)."""
    global _cached_mapping
    _cached_mapping = None


def empty_like_gradient(x: torch.Tensor) -> torch.Tensor:
    """An uninitialized buffer like ``x`` for the gradient, cheap to fault in.

    A fresh multi-GB buffer from ``torch.empty`` is backed by 4 KiB pages, and touching each
    of them for the first time (a page fault) costs more than computing the gradient. On
    Linux, large CPU buffers are instead mapped with ``madvise(MADV_HUGEPAGE)`` (2 MiB pages,
    512× fewer faults), and — like CUDA's caching allocator — the last mapping is kept and
    handed out again once the tensor that used it is gone (a training step frees the logits'
    gradient before the next one asks), so a steady-state step faults in no pages at all.
    Between steps that keeps one gradient-sized mapping resident;
    :func:`release_cached_gradient` drops it. ``LABELSMOOTH_HUGEPAGES=0`` turns all of this
    off.
    """
    global _cached_mapping
    nbytes = x.numel() * x.element_size()
    if (
        x.device.type != "cpu"
        or nbytes < HUGEPAGE_MIN_BYTES
        or os.environ.get("LABELSMOOTH_HUGEPAGES", "1") == "0"
        or not hasattr(mmap, "MADV_HUGEPAGE")
    ):
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    buf = _cached_mapping
    # In use, a mapping is also referenced by the tensor storage exported from it; free, only
    # by the module global and the local name (+1 for getrefcount's own argument).
    if buf is None or len(buf) != nbytes or sys.getrefcount(buf) > 3:
        try:
            buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            buf.madvise(mmap.MADV_HUGEPAGE)
        except (OSError, ValueError):
            return torch.empty_like(x, memory_format=torch.contiguous_format)
        _cached_mapping = buf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # frombuffer's note about non-resizable storage
        return torch.frombuffer(buf, dtype=x.dtype).view(x.shape)


@dataclass
class RowCoefficients:
    """Per-row scalars of ``q = α·onehot(y) + β·u`` and the class-weight terms: (M,) tensors,
    or Python floats when every row has the same value (no weights, uniform prior)."""

    alpha: torch.Tensor | float
    beta: torch.Tensor | float
    w_y: torch.Tensor | float  # weight of the target class, 0 for ignored rows
    a_y: torch.Tensor | float  # a_y = w_y·u_y
    u_y: torch.Tensor | float
    A: torch.Tensor | float  # Σ_k w_k u_k


def row_coefficients(
    y: torch.Tensor,
    valid: torch.Tensor,
    weight: torch.Tensor | None,
    u: torch.Tensor,
    eps: float,
    convention: str,
) -> RowCoefficients:
    """α, β and the weight terms of every row, in ``u``'s dtype (use float64: O(M) work).

    Args:
        y: (M,) class indices with ignored rows replaced by any valid class.
        valid: (M,) bool, False for ignored rows (their coefficients are 0).
        weight: (C,) class weights or None.
        u: (C,) normalized smoothing prior.
        eps: ε.
        convention: "uniform", "others" or "unnormalized".
    """
    dt = u.dtype
    u_y = u[y]
    if convention == "uniform":
        alpha = torch.full_like(u_y, 1 - eps)
        beta = torch.full_like(u_y, eps)
    elif convention == "others":
        rest = 1 - u_y
        has_rest = rest > 0
        beta = torch.where(has_rest, eps / torch.where(has_rest, rest, 1), 0)
        alpha = torch.where(has_rest, 1 - eps - beta * u_y, 1)
    elif convention == "unnormalized":
        alpha = 1 - eps - eps * u_y
        beta = torch.full_like(u_y, eps)
    else:
        raise ValueError(f"unknown convention {convention!r}")
    vf = valid.to(dt)
    w = None if weight is None else weight.to(dt)
    w_y = vf if w is None else w[y] * vf
    a = u if w is None else w * u
    return RowCoefficients(
        alpha=alpha * vf, beta=beta * vf, w_y=w_y, a_y=a[y] * vf, u_y=u_y, A=a.sum()
    )


def scalar_alpha_beta(C: int, eps: float, convention: str) -> tuple[float, float]:
    """α and β of every row when the prior is uniform (u_k = 1/C): the cases above with
    u_y = 1/C."""
    if convention == "uniform":
        return 1 - eps, eps
    if convention == "others":
        u_y = 1 / C
        rest = 1 - u_y
        if rest <= 0:  # C = 1: no other class, all mass stays on the target
            return 1.0, 0.0
        beta = eps / rest
        return 1 - eps - beta * u_y, beta
    if convention == "unnormalized":
        return 1 - eps - eps / C, eps
    raise ValueError(f"unknown convention {convention!r}")


def kl_constant(rc: RowCoefficients, weight: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k q_k log(q_k / Σq) per row (M,): what turns the cross-entropy into the KL form."""
    a = u if weight is None else weight.to(u.dtype) * u
    L = torch.xlogy(a, u).sum()  # Σ_k a_k log u_k, 0·log 0 = 0
    alpha, beta, w_y, a_y, u_y, A = (
        torch.as_tensor(v, dtype=u.dtype, device=u.device)
        for v in (rc.alpha, rc.beta, rc.w_y, rc.a_y, rc.u_y, rc.A)
    )
    q_y = (alpha + beta * u_y).clamp_min(0)  # ≥ 0 exactly; rounding can leave -1e-17
    mass = alpha + beta  # Σ_k q_k (0 for ignored rows)
    total = alpha * w_y + beta * A  # Σ_k w_k q_k
    return (
        A * torch.xlogy(beta, beta)
        + beta * L
        - torch.xlogy(beta * a_y, beta * u_y)
        + w_y * torch.xlogy(q_y, q_y)
        - torch.xlogy(total, mass)
    )


def loss_from_stats(
    lse: torch.Tensor, x_y: torch.Tensor, S: torch.Tensor, rc: RowCoefficients
) -> torch.Tensor:
    """Per-row smoothed cross-entropy from the row statistics: α w_y (lse − x_y) + β (A lse − S)."""
    return rc.alpha * rc.w_y * (lse - x_y) + rc.beta * (rc.A * lse - S)


def _rows_kernel(
    x: torch.Tensor,
    y: torch.Tensor,
    g_p: torch.Tensor,
    g_a: torch.Tensor,
    g_y: torch.Tensor,
    a: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row statistics and gradient of a (M, C) block in one expression, for torch.compile.

    Inductor turns this into one parallel loop over rows that reads each row a few times
    while it is in cache (max, sum of exponentials, then the gradient) and writes the
    gradient once; the exponentials are recomputed, never stored.
    Returns (grad in x's dtype, lse, x_y, S), the statistics in the compute dtype. (Writing
    the gradient into a preallocated ``out`` instead made Inductor allocate a temporary and
    copy: twice the memory and slower.)
    """
    xf = x.to(g_p.dtype)
    m = xf.amax(1, keepdim=True)
    e = torch.exp(xf - m)
    s = e.sum(1, keepdim=True)
    lse = (m + s.log()).squeeze(1)
    x_y = xf.gather(1, y[:, None]).squeeze(1)
    S = (xf * a).sum(1)
    k = torch.arange(x.shape[1], device=x.device)
    onehot = torch.where(k == y[:, None], g_y[:, None], 0.0)
    grad = e * (g_p[:, None] / s) - g_a[:, None] * a - onehot
    return grad.to(x.dtype), lse, x_y, S


_compiled_kernel: Any = None
_compile_failed: str | None = None


def compiled_available(device: torch.device) -> str | None:
    """Why the torch.compile'd kernel cannot run on ``device``, or None if it can."""
    if _compile_failed is not None:
        return f"torch.compile failed earlier in this process: {_compile_failed}"
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    if device.type == "cpu":
        import shutil

        if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
            return "torch.compile on CPU needs a C++ compiler (g++ or clang++) on PATH"
    return None


def _run_compiled(*args: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """The compiled kernel, compiled once per process; None (and eager from then on) if the
    compilation fails."""
    global _compiled_kernel, _compile_failed
    if _compile_failed is not None:
        return None
    try:
        if _compiled_kernel is None:
            _compiled_kernel = torch.compile(_rows_kernel, dynamic=True)
        out: tuple[torch.Tensor, ...] = _compiled_kernel(*args)
        return out
    except Exception as err:  # noqa: BLE001 - any compiler failure means: use eager
        _compile_failed = f"{type(err).__name__}: {str(err)[:200]}"
        warnings.warn(
            f"labelsmooth: torch.compile of the fused kernel failed ({_compile_failed}); "
            "using the eager fused path",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _blocks(x: torch.Tensor, rows_per_block: int):
    """Yield (row_start, row_stop, view) over the rows of x, each view (B, C) possibly strided.

    2-D input: row blocks. N-D input (N, C, D...): per sample, chunks of positions, viewed
    transposed as (B, C) (a strided view; the caller copies it into a block buffer).
    """
    if x.dim() == 2:
        M = x.shape[0]
        for r0 in range(0, M, rows_per_block):
            r1 = min(M, r0 + rows_per_block)
            yield r0, r1, x[r0:r1]
        return
    N, C = x.shape[0], x.shape[1]
    x3 = x.reshape(N, C, -1)  # a view for contiguous inputs
    D = x3.shape[2]
    for n in range(N):
        for d0 in range(0, D, rows_per_block):
            d1 = min(D, d0 + rows_per_block)
            yield n * D + d0, n * D + d1, x3[n, :, d0:d1].t()


def _blockwise(
    x: torch.Tensor,
    y_safe: torch.Tensor,
    g_p: torch.Tensor,
    g_a: torch.Tensor,
    g_y: torch.Tensor,
    a: torch.Tensor,
    a0: float | None,
    inplace_backward: bool,
    need_grad: bool = True,
    native: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row statistics and gradient, block by block (any device, any layout).

    ``a0`` is the common value of ``a`` when it is constant (uniform prior, no weights), which
    replaces the matrix-vector product and the rank-1 update by scalar operations. Returns
    (grad, lse, x_y, S); grad is ``x`` itself when ``inplace_backward`` and None when not
    ``need_grad`` (statistics only: no (N, C) allocation at all).

    With ``native`` (CPU, float32 compute) each row is done by the C kernel of
    :mod:`labelsmooth.ops.cpu_kernel`: a contiguous 2-D float32 or bfloat16 input
    directly, in a few large row ranges; float16 and N-D layouts through a float32 block
    buffer (:func:`_native_block`). Otherwise every block is a handful of eager torch ops
    (:func:`_one_block`).

    On CPU the work is shared out to ``torch.get_num_threads()`` Python threads, each
    running its ops single-threaded (ATen and ctypes release the GIL). Letting every small op
    fork and join an OpenMP team instead costs a barrier per op, and when another process
    holds a core each barrier waits for a scheduler time slice: measured 10-40× slower on a
    busy 2-core machine, against no loss on an idle one.
    """
    C = x.shape[1]
    M = y_safe.shape[0]
    cdt, dev = g_p.dtype, x.device
    if not need_grad:
        grad = None
    else:
        grad = x if inplace_backward else empty_like_gradient(x)
    m = torch.empty(M, dtype=cdt, device=dev)
    s = torch.empty(M, dtype=cdt, device=dev)
    x_y = torch.empty(M, dtype=cdt, device=dev)
    S = torch.empty(M, dtype=cdt, device=dev)
    threads = torch.get_num_threads() if dev.type == "cpu" else 1

    if native and x.dim() == 2 and x.dtype in cpu_kernel.native_dtypes():
        # rows straight from the logits into the gradient (half dtypes are converted in the
        # kernel, with one float32 work row per unit): a few row ranges, no block buffer
        a_vec = None if a0 is not None else a.contiguous()
        n_units = max(1, min(4 * threads, M * C // (1 << 17)))
        bounds = [M * k // n_units for k in range(n_units + 1)]

        def unit(k: int) -> None:
            r0, r1 = bounds[k], bounds[k + 1]
            gb = None if grad is None else grad[r0:r1]
            _kernel_rows(r0, r1, x[r0:r1], gb, y_safe, g_p, g_a, g_y, a_vec, a0, m, s, x_y, S)

        _run_parallel(unit, n_units, threads)
        if inplace_backward:  # the C kernel wrote into x: autograd must see the mutation
            torch.autograd.graph.increment_version(x)
        return grad, _lse(m, s), x_y, S

    rows = max(1, BLOCK_BYTES // (C * torch.finfo(cdt).bits // 8))
    # compute straight into the gradient rows where the layouts allow it
    direct = x.dim() == 2 and cdt == x.dtype and grad is not None and not native
    blocks = list(_blocks(x, rows))
    grad_views = [b[2] for b in _blocks(grad, rows)] if grad is not None else [None] * len(blocks)
    n_chunks = max(1, min(len(blocks), 4 * threads))
    chunk_bounds = [len(blocks) * k // n_chunks for k in range(n_chunks + 1)]

    def chunk(k: int) -> None:
        buf = torch.empty(min(rows, M), C, dtype=cdt, device=dev)
        todo = zip(blocks[chunk_bounds[k] : chunk_bounds[k + 1]], grad_views[chunk_bounds[k] :])
        with torch.no_grad():  # grad mode is per thread
            for (r0, r1, xb), gb in todo:
                if native:
                    _native_block(r0, r1, xb, gb, buf, y_safe, g_p, g_a, g_y, a, a0, m, s, x_y, S)
                else:
                    _one_block(
                        r0, r1, xb, gb, buf, direct, y_safe, g_p, g_a, g_y, a, a0, m, s, x_y, S
                    )

    _run_parallel(chunk, n_chunks, threads)
    return grad, _lse(m, s), x_y, S


def _lse(m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """log-sum-exp per row from the row max and the sum of exp(x - max), in float64."""
    return m.double() + s.double().log()


def _run_parallel(work: Callable[[int], None], n: int, threads: int) -> None:
    """``work(0) ... work(n-1)`` on the process-wide pool, ops single-threaded inside."""
    if threads <= 1 or n < 2:
        for k in range(n):
            work(k)
        return
    # One caller at a time: the pool is shared, and two callers saving and restoring torch's
    # thread count around each other could leave it at 1.
    with _PARALLEL_LOCK:
        pool = _thread_pool(threads)
        previous = torch.get_num_threads()
        torch.set_num_threads(1)  # workers start their ATen thread state from this value
        try:
            # a few units per thread, handed out dynamically, balance a busy core
            for f in [pool.submit(work, k) for k in range(n)]:
                f.result()
        finally:
            torch.set_num_threads(previous)


_PARALLEL_LOCK = threading.Lock()


def _native_block(
    r0: int,
    r1: int,
    xb: torch.Tensor,
    gb: torch.Tensor | None,
    buf: torch.Tensor,
    y_safe: torch.Tensor,
    g_p: torch.Tensor,
    g_a: torch.Tensor,
    g_y: torch.Tensor,
    a: torch.Tensor,
    a0: float | None,
    m: torch.Tensor,
    s: torch.Tensor,
    x_y: torch.Tensor,
    S: torch.Tensor,
) -> None:
    """One block through the C kernel via the float32 buffer (upcast / strided layouts)."""
    tmp = buf[: r1 - r0]
    tmp.copy_(xb)
    a_vec = None if a0 is not None else a
    _kernel_rows(
        r0, r1, tmp, None if gb is None else tmp, y_safe, g_p, g_a, g_y, a_vec, a0, m, s, x_y, S
    )
    if gb is not None:
        gb.copy_(tmp)


def _kernel_rows(
    r0: int,
    r1: int,
    xb: torch.Tensor,
    gb: torch.Tensor | None,
    y_safe: torch.Tensor,
    g_p: torch.Tensor,
    g_a: torch.Tensor,
    g_y: torch.Tensor,
    a_vec: torch.Tensor | None,
    a0: float | None,
    m: torch.Tensor,
    s: torch.Tensor,
    x_y: torch.Tensor,
    S: torch.Tensor,
) -> None:
    """The C kernel on rows r0:r1 (logits ``xb``, gradient ``gb``) of the per-row vectors."""
    rows = slice(r0, r1)
    cpu_kernel.rows(
        xb, gb, y_safe[rows], a_vec, a0 or 0.0, g_p[rows], g_a[rows], g_y[rows], m[rows],
        s[rows], x_y[rows], S[rows],
    )  # fmt: skip


_POOL: ThreadPoolExecutor | None = None


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``threads`` workers (recreated if the count changes)."""
    global _POOL
    if _POOL is None or _POOL._max_workers != threads:
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        _POOL = ThreadPoolExecutor(threads, thread_name_prefix="labelsmooth")
    return _POOL


def _one_block(
    r0: int,
    r1: int,
    xb: torch.Tensor,
    gb: torch.Tensor | None,
    buf: torch.Tensor,
    direct: bool,
    y_safe: torch.Tensor,
    g_p: torch.Tensor,
    g_a: torch.Tensor,
    g_y: torch.Tensor,
    a: torch.Tensor,
    a0: float | None,
    m_out: torch.Tensor,
    s_out: torch.Tensor,
    x_y: torch.Tensor,
    S: torch.Tensor,
) -> None:
    """Statistics of rows r0:r1 into m/s/x_y/S and, if ``gb`` is given, their gradient."""
    B = r1 - r0
    if not (direct and xb.is_contiguous()):
        tmp = buf[:B]
        tmp.copy_(xb)  # upcast / gather the strided block
        xb = tmp
    yb = y_safe[r0:r1, None]
    # statistics read from the logits before anything is overwritten
    x_y[r0:r1] = xb.gather(1, yb).squeeze(1)
    S[r0:r1] = xb.sum(1).mul_(a0) if a0 is not None else xb @ a
    m = xb.amax(1, keepdim=True)
    # the probabilities and then the gradient are built in the gradient block itself when it
    # can hold them (with inplace_backward that is the logits block: exp in place)
    pb = gb if (gb is not None and direct) else buf[:B]
    if pb.data_ptr() == xb.data_ptr():
        pb.sub_(m).exp_()
        s = pb.sum(1, keepdim=True)
        pb.div_(s)
    else:
        torch.softmax(xb, 1, out=pb)
        s = pb.amax(1, keepdim=True).reciprocal_()  # p_max = 1/s exactly at argmax
    m_out[r0:r1] = m.squeeze(1)
    s_out[r0:r1] = s.squeeze(1)
    if gb is None:
        return
    # gradient: g_p·p − g_a·a − g_y·onehot(y)
    if a0 is not None:  # one pass: p·g_p − g_a·a0
        torch.addcmul((g_a[r0:r1] * -a0)[:, None], pb, g_p[r0:r1, None], out=pb)
    else:
        pb.mul_(g_p[r0:r1, None]).addr_(g_a[r0:r1], a, alpha=-1)
    pb.scatter_add_(1, yb, -g_y[r0:r1, None])
    if pb.data_ptr() != gb.data_ptr():
        gb.copy_(pb)


class _FusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        input: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        u: torch.Tensor,
        ignore_index: int,
        reduction: str,
        eps: float,
        convention: str,
        kl: bool,
        inplace_backward: bool,
        compiled: bool,
        need_grad: bool,
        uniform_prior: bool,
    ) -> torch.Tensor:
        cdt = compute_dtype(input.dtype)
        dev = input.device
        x = input if input.is_contiguous() else input.contiguous()
        y = target.reshape(-1)
        M = y.shape[0]
        valid = y != ignore_index
        y_safe = torch.where(valid, y, 0).long()  # the C kernel reads int64 indices

        # O(M) coefficients in float64, then the reduction's scale folded into them.
        u64 = u.to(torch.float64)
        if weight is None and uniform_prior:
            # The common case: α, β and the weight terms are the same for every row (w_y = 1,
            # u_y = a_y = 1/C, A = 1), so the per-row work is a few vector ops.
            alpha, beta = scalar_alpha_beta(x.shape[1], eps, convention)
            rc = RowCoefficients(alpha, beta, 1.0, 1 / x.shape[1], 1 / x.shape[1], 1.0)
            vf = valid.to(torch.float64)
            row_mask: torch.Tensor | None = vf
            scale: torch.Tensor | None = 1 / vf.sum().clamp_min(1) if reduction == "mean" else None
            per_row = vf if scale is None else vf * scale
            g_p = (per_row * (alpha + beta)).to(cdt)
            g_y = (per_row * alpha).to(cdt)
            g_a = (per_row * beta).to(cdt)
            a = u64.to(cdt)
            a0: float | None = 1 / x.shape[1]
        else:
            rc = row_coefficients(y_safe, valid, weight, u64, eps, convention)
            row_mask = None  # ignored rows have zero coefficients already
            alpha_r, beta_r, w_y = (torch.as_tensor(v) for v in (rc.alpha, rc.beta, rc.w_y))
            if reduction == "mean":
                denom = w_y.sum()
                scale = 1 / torch.where(valid.any(), denom, torch.ones_like(denom))
            else:
                scale = None
            g_p = alpha_r * w_y + beta_r * rc.A  # coefficient of p_k
            g_y = alpha_r * w_y  # subtracted at the target
            g_a = beta_r  # times a_k, subtracted everywhere
            if scale is not None:
                g_p, g_y, g_a = g_p * scale, g_y * scale, g_a * scale
            g_p, g_y, g_a = g_p.to(cdt), g_y.to(cdt), g_a.to(cdt)
            a = (u64 if weight is None else weight.to(torch.float64) * u64).to(cdt)
            uniform_a = weight is None and bool((u64 == u64[0]).all())
            a0 = float(a[0]) if uniform_a else None

        grad: torch.Tensor | None
        result = None
        if compiled and need_grad and x.dim() == 2 and M > 0 and not inplace_backward:
            result = _run_compiled(x, y_safe, g_p, g_a, g_y, a)
        if result is not None:
            grad, lse, x_y, S = result
        else:
            native = (
                cdt == torch.float32
                and dev.type == "cpu"
                and M > 0
                and cpu_kernel.native_unavailable(dev) is None
            )
            grad, lse, x_y, S = _blockwise(
                x, y_safe, g_p, g_a, g_y, a, a0, inplace_backward, need_grad, native
            )

        loss = loss_from_stats(lse.double(), x_y.double(), S.double(), rc)
        if kl:
            loss = loss + kl_constant(rc, weight, u64)
        if row_mask is not None:
            loss = loss * row_mask
        if reduction == "none":
            out = loss.reshape(target.shape)
        else:
            out = loss.sum() if scale is None else loss.sum() * scale
        ctx.reduction = reduction
        ctx.consumed = False
        if grad is not None:
            ctx.save_for_backward(grad)
        return out.to(input.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "impl='fused' does not support double backward (create_graph=True): its "
                "gradient is computed in the forward pass; use impl='reference'"
            )
        if ctx.consumed:
            raise RuntimeError(
                "impl='fused' cannot backward twice through the same loss (retain_graph=True): "
                "the saved gradient is scaled in place; use impl='reference'"
            )
        ctx.consumed = True
        (grad,) = ctx.saved_tensors
        if ctx.reduction == "none":  # (N, C, d...) * (N, 1, d...)
            grad.mul_(grad_output.unsqueeze(1).to(grad.dtype))
        elif grad_output.device.type != "cpu" or float(grad_output) != 1.0:
            grad.mul_(grad_output.to(grad.dtype))
        return (grad,) + (None,) * 12


def cross_entropy_fused(
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
    inplace_backward: bool = False,
    compiled: bool = False,
    uniform_prior: bool = False,
) -> torch.Tensor:
    """Fused blockwise label-smoothed cross-entropy (arguments already validated).

    Same arguments and result as :func:`labelsmooth.ops.reference.cross_entropy_reference`.
    Soft targets fall back to the reference: mixing a dense (N, C) target needs a second
    dense operand in every block, which gains nothing over the reference's dense math.

    Args:
        inplace_backward: write the gradient into ``input``'s storage (the logits are
            overwritten; extra memory O(N)). Autograd's version counter then makes any other
            use of the overwritten logits in backward raise instead of reading garbage. A
            non-contiguous input is first copied, and the copy is overwritten instead.
        compiled: compute the statistics and gradient of a 2-D input with the
            torch.compile'd kernel (:func:`_rows_kernel`) instead of eager blocks. It is
            compiled once per process; if compilation fails the eager path is used (with a
            warning). N-D inputs and ``inplace_backward`` use the eager blocks.
        uniform_prior: the caller guarantees that ``u`` is uniform (no prior, no class
            mask), which makes every row's coefficients the same scalars: less O(N) work.
    """
    if target.is_floating_point():
        return cross_entropy_reference(
            input, target, weight, ignore_index, reduction, label_smoothing, u, convention, kl
        )
    out: torch.Tensor = _FusedCrossEntropy.apply(
        input, target, weight, u, ignore_index, reduction, label_smoothing, convention, kl,
        inplace_backward, compiled, torch.is_grad_enabled() and input.requires_grad,
        uniform_prior,
    )  # fmt: skip
    return out
