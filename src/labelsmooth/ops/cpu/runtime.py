"""What the fused CPU path keeps between calls: a worker pool and one cached gradient buffer.

Both are process-level state, so both are explicit here (switches in
:data:`labelsmooth.runtime.config`):

* **The pool** runs the C row kernel on a few row ranges at once. Its workers call only the
  C kernel through :mod:`ctypes` (which releases the GIL), never a torch op, so torch's
  thread count is never touched: other threads' torch calls keep theirs. The pool is
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


class _Pool:
    """A worker pool and the number of calls using it (both guarded by ``_lock``)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="labelsmooth")
        self.users = 0


_pool: _Pool | None = None  # the pool new calls get; older ones live while a call uses them


def _after_fork_in_child() -> None:
    global _pool, _lock, _cache, _cache_free
    _pool = None  # the parent's worker threads do not exist in the child
    _lock = threading.Lock()
    _cache, _cache_free = None, False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run_parallel(work: Callable[[int], None], n: int, threads: int) -> None:
    """``work(0) ... work(n-1)`` on the pool (in this thread if ``threads`` or ``n`` < 2).

    ``work`` must not call torch ops that use torch's intra-op threads (the C kernel only):
    the pool adds threads, it does not change torch's thread count.
    """
    global _pool
    if threads <= 1 or n < 2:
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
