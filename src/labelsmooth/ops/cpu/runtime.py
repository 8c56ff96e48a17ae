"""What the fused CPU path keeps between calls: a worker pool and one cached gradient buffer.

Both are process-level state, so both are explicit here (switches in
:data:`labelsmooth.runtime.config`):

* **The pool** runs the C row kernel on a few row ranges at once. Its workers call the
  C kernel through :mod:`ctypes` (which releases the GIL) or, for the eager fallback
  (``run_parallel(..., torch_ops=True)``), torch ops that run on the worker thread alone:
  each worker sets its own OpenMP team size to 1 (``omp_set_num_threads`` is a per-thread
  setting), so no op forks an OpenMP team whose barriers stall whenever one of its threads
  waits for a busy core (MKL's own thread setting is left as torch sets it). torch's thread
  count is never touched: other threads' torch calls keep theirs. Where torch's OpenMP
  runtime cannot be found (no ``/proc/self/maps``, not OpenMP, two runtimes loaded),
  ``torch_ops`` work runs in the calling thread with torch's threads instead. The pool is
  created on first use with ``torch.get_num_threads()`` workers and rebuilt in a forked child
  (``os.register_at_fork``), whose copy of the parent's pool has no threads. When the thread
  count a call asks for changes (another thread called ``torch.set_num_threads``), a pool of
  the new size takes over for later calls; the old one is shut down only once the last call
  still using it has returned (each call holds a reference while it submits and waits), so a
  change of torch's settings in one thread never breaks a call running in another.
* **The gradient buffer cache** works like a caching allocator holding at most one
  buffer. A fresh multi-GB buffer from ``torch.empty`` is backed by 4 KiB pages, and
  touching each for the first time (a page fault) costs more than computing the gradient,
  so large buffers are mapped with ``madvise(MADV_HUGEPAGE)`` (2 MiB pages), and the last
  one is handed out again once every tensor that used it is gone (a training step frees the
  logits' gradient before the next one asks). Whether it is free is decided by object
  lifetime: each hand-out is a small lease object exported to the tensor's storage, with a
  ``weakref.finalize`` that returns the buffer to the cache when the last view dies.
  :func:`empty_cache` drops it (its memory returns to the system once no tensor uses it),
  :func:`cached_bytes` reports its size, ``config.gradient_cache = False`` stops caching
  (each call then maps a fresh buffer) and ``config.hugepages = False`` uses plain
  ``torch.empty``.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from labelsmooth._config import config

__all__ = ["run_parallel", "empty_like_gradient", "empty_cache", "cached_bytes"]

#: Gradient buffers at least this large are mapped with transparent huge pages on Linux.
HUGEPAGE_MIN_BYTES = 1 << 26

_lock = threading.Lock()


def _find_omp_set_num_threads() -> Callable[[int], object] | None:
    """``omp_set_num_threads`` of torch's OpenMP runtime (a per-thread setting), or None where
    that runtime cannot be identified."""
    if not torch.backends.openmp.is_available():
        return None
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return None
    omp = [p for p in libs if os.path.basename(p).startswith(("libgomp", "libiomp5", "libomp"))]
    if len(omp) != 1:  # none found, or two runtimes: which one torch's ops use is unknown
        return None
    try:
        return ctypes.CDLL(omp[0]).omp_set_num_threads
    except (OSError, AttributeError):
        return None


_team_size: list[Callable[[int], object] | None] = []  # found once


def _team_size_setter() -> Callable[[int], object] | None:
    if not _team_size:
        _team_size.append(_find_omp_set_num_threads())
    return _team_size[0]


def _worker_init(set_team_size: Callable[[int], object] | None) -> None:
    """A pool worker's torch ops run on it alone: its OpenMP team size 1 (this thread only),
    set after torch's own first-use set-up of the thread, which would set it back."""
    if set_team_size is not None:
        torch.get_num_threads()  # torch's per-thread set-up, once per thread
        set_team_size(1)


class _Pool:
    """A worker pool and the number of calls using it (both guarded by ``_lock``)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.executor = ThreadPoolExecutor(
            threads, "labelsmooth", initializer=_worker_init, initargs=(_team_size_setter(),)
        )
        self.users = 0


_pool: _Pool | None = None  # the pool new calls get; older ones live while a call uses them


def _after_fork_in_child() -> None:
    global _pool, _lock, _cache, _cache_free
    _pool = None  # the parent's worker threads do not exist in the child
    _lock = threading.Lock()
    _cache, _cache_free = None, False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run_parallel(
    work: Callable[[int], None], n: int, threads: int, *, torch_ops: bool = False
) -> None:
    """``work(0) ... work(n-1)`` on the pool (in this thread if ``threads`` or ``n`` < 2).

    The pool adds threads, it does not change torch's thread count. ``torch_ops=True``: ``work``
    runs torch ops, each on its worker thread alone (see the module's docstring); where that
    cannot be arranged, all of ``work`` runs in this thread, with torch's threads.
    """
    global _pool
    if threads <= 1 or n < 2 or (torch_ops and _team_size_setter() is None):
        for k in range(n):
            work(k)
        return
    with _lock:
        if _pool is None or _pool.threads != threads:
            old = _pool
            _pool = _Pool(threads)
            if old is not None and old.users == 0:
                old.executor.shutdown(wait=False)  # else its last user shuts it down
        pool = _pool
        pool.users += 1
    try:
        # a few units per thread, handed out dynamically, balance a busy core
        futures = [pool.executor.submit(work, k) for k in range(n)]
        for f in futures:
            f.result()
    finally:
        with _lock:
            pool.users -= 1
            retired = pool is not _pool and pool.users == 0
        if retired:  # replaced while this call used it, and this was its last user
            pool.executor.shutdown(wait=False)


_cache: mmap.mmap | None = None
_cache_free = False


def _release(mapping: mmap.mmap) -> None:
    """Finalizer of a lease: the buffer is free again if it is still the cached one."""
    global _cache_free
    with _lock:
        if _cache is mapping:
            _cache_free = True


def empty_like_gradient(x: torch.Tensor) -> torch.Tensor:
    """An uninitialized contiguous buffer like ``x`` for the gradient, cheap to fault in."""
    global _cache, _cache_free
    nbytes = x.numel() * x.element_size()
    if (
        x.device.type != "cpu"
        or nbytes < HUGEPAGE_MIN_BYTES
        or not config.hugepages
        or not hasattr(mmap, "MADV_HUGEPAGE")
    ):
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    with _lock:
        mapping = _cache if (_cache is not None and _cache_free and len(_cache) == nbytes) else None
        if mapping is not None:
            _cache_free = False
    if mapping is None:
        try:
            mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            mapping.madvise(mmap.MADV_HUGEPAGE)
        except (OSError, ValueError):
            return torch.empty_like(x, memory_format=torch.contiguous_format)
        if config.gradient_cache:
            with _lock:
                _cache, _cache_free = mapping, False
    lease = (ctypes.c_char * nbytes).from_buffer(mapping)  # keeps the mapping alive
    weakref.finalize(lease, _release, mapping)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # frombuffer's note about non-resizable storage
        return torch.frombuffer(lease, dtype=x.dtype).view(x.shape)


def empty_cache() -> None:
    """Forget the cached buffer; its memory is unmapped once no tensor uses it."""
    global _cache, _cache_free
    with _lock:
        _cache, _cache_free = None, False


def cached_bytes() -> int:
    """Size of the cached buffer (in use or free), 0 if none."""
    with _lock:
        return 0 if _cache is None else len(_cache)
