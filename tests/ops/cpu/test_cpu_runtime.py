"""The CPU runtime: no thread-count changes seen by other threads, the gradient buffer cache
as a documented caching allocator, fork safety."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import labelsmooth
from labelsmooth.ops.cpu import kernel as cpu_kernel
from labelsmooth.ops.cpu import runtime as _cpu_runtime


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_other_threads_keep_their_thread_count():
    if cpu_kernel.native_unavailable(torch.device("cpu")):
        pytest.skip("no native kernel: the eager path runs in the caller's thread anyway")
    x = torch.randn(512, 4000, requires_grad=True)
    y = torch.randint(0, 4000, (512,))
    before = torch.get_num_threads()
    seen: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.add(torch.get_num_threads())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(20):
            labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="fused").backward()
    finally:
        stop.set()
        watcher.join()
    assert seen == {before}
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_empty_cache_returns_the_memory(monkeypatch):
    monkeypatch.setattr(_cpu_runtime, "HUGEPAGE_MIN_BYTES", 1 << 20)
    labelsmooth.empty_cache()
    x = torch.randn(2048, 8192, requires_grad=True)  # 64 MiB
    y = torch.randint(0, 8192, (2048,))
    nbytes = x.numel() * 4
    with labelsmooth.runtime.options(gradient_cache=True, hugepages=True):
        (g,) = torch.autograd.grad(labelsmooth.cross_entropy(x, y, impl="fused"), x)
        del g  # the buffer is free again but kept
        assert labelsmooth.runtime.cached_bytes() == nbytes
        before = _rss_bytes()
        labelsmooth.empty_cache()
        after = _rss_bytes()
    assert labelsmooth.runtime.cached_bytes() == 0
    assert before - after >= nbytes * 0.9, (before, after)


def test_caching_off_gives_the_same_results(monkeypatch):
    monkeypatch.setattr(_cpu_runtime, "HUGEPAGE_MIN_BYTES", 0)
    labelsmooth.empty_cache()
    x = torch.randn(33, 257, requires_grad=True)
    y = torch.randint(0, 257, (33,))
    results = []
    for cache in (True, False):
        with labelsmooth.runtime.options(gradient_cache=cache):
            loss = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="fused")
            (g,) = torch.autograd.grad(loss, x)
            results.append((loss.detach(), g.clone()))
            if not cache:
                assert labelsmooth.runtime.cached_bytes() == 0
        labelsmooth.empty_cache()
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_a_freed_buffer_is_reused_and_a_live_one_is_not(monkeypatch):
    monkeypatch.setattr(_cpu_runtime, "HUGEPAGE_MIN_BYTES", 0)
    labelsmooth.empty_cache()
    x = torch.randn(8, 100)
    a = _cpu_runtime.empty_like_gradient(x)
    view = a[2:]  # a view keeps the buffer in use
    ptr = a.data_ptr()
    del a
    b = _cpu_runtime.empty_like_gradient(x)
    assert b.data_ptr() != ptr
    del view, b
    c = _cpu_runtime.empty_like_gradient(x)
    assert c.data_ptr() in (ptr,) or labelsmooth.runtime.cached_bytes() == c.numel() * 4
    labelsmooth.empty_cache()


def test_options_rejects_unknown_settings():
    with pytest.raises(TypeError, match="unknown settings"):
        with labelsmooth.runtime.options(native=False):
            pass


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_can_use_the_fused_path():
    # The parent's pool has worker threads; a forked child has none of them and must build its
    # own (os.register_at_fork). Data come from numpy and the thread count from the
    # environment: after an explicit torch.set_num_threads() in the parent, torch 2.13's own
    # ops hang in a forked child, with or without labelsmooth.
    if cpu_kernel.native_unavailable(torch.device("cpu")):
        pytest.skip("no native kernel: no pool")
    script = textwrap.dedent(
        """
        import faulthandler, multiprocessing as mp, numpy as np, torch, labelsmooth
        rng = np.random.default_rng(0)
        x = torch.from_numpy(rng.standard_normal((512, 4000), dtype=np.float32))
        y = torch.from_numpy(rng.integers(0, 4000, 512))

        def step():
            xr = x.detach().requires_grad_(True)
            return torch.autograd.grad(labelsmooth.cross_entropy(xr, y, impl="fused"), xr)[0]

        g0 = step()  # the pool exists now

        def child():
            faulthandler.dump_traceback_later(50, exit=True)
            assert torch.equal(step(), g0)

        p = mp.get_context("fork").Process(target=child)
        p.start()
        p.join(60)
        assert p.exitcode == 0, p.exitcode
        print("ok")
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
