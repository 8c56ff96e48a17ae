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


class _LockThatLetsAnotherCallIn:
    """Stands in for the runtime's lock: on the first release by the main call (after it has
    picked its pool, before it submits), another thread runs a call with a different thread
    count to completion. That is the window in which a call of the old runtime shut down the
    pool the first call was about to use."""

    def __init__(self, intruder) -> None:
        self._lock = threading.Lock()
        self._intruder = intruder
        self._owner = threading.get_ident()
        self.fired = False

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
        if not self.fired and threading.get_ident() == self._owner:
            self.fired = True
            t = threading.Thread(target=self._intruder)
            t.start()
            t.join()


def test_a_call_with_another_thread_count_never_shuts_down_a_pool_in_use(monkeypatch):
    done: list[int] = []
    errors: list[BaseException] = []

    def intruder() -> None:
        try:
            _cpu_runtime.run_parallel(lambda k: done.append(-1), 4, 3)  # 3 threads: a new pool
        except BaseException as e:  # pragma: no cover - the failure being tested
            errors.append(e)

    monkeypatch.setattr(_cpu_runtime, "_pool", None)
    lock = _LockThatLetsAnotherCallIn(intruder)
    monkeypatch.setattr(_cpu_runtime, "_lock", lock)
    _cpu_runtime.run_parallel(done.append, 8, 2)  # 2 threads: picks a pool, then submits
    assert lock.fired and not errors
    assert sorted(k for k in done if k >= 0) == list(range(8)) and done.count(-1) == 4
    # the intruder's pool took over for later calls; nobody holds it now
    current = _cpu_runtime._pool
    assert current is not None and current.threads == 3 and current.users == 0
    current.executor.shutdown(wait=True)


def test_fused_calls_survive_another_thread_changing_torch_threads():
    # Threads run impl="fused" while another thread keeps changing torch.set_num_threads
    # (which changes the pool size the next call asks for). In a subprocess: this process's
    # thread count stays as conftest set it (forked tests depend on it).
    if cpu_kernel.native_unavailable(torch.device("cpu")):
        pytest.skip("no native kernel: no pool")
    script = textwrap.dedent(
        """
        import threading, torch, labelsmooth
        torch.manual_seed(0)
        x = torch.randn(256, 4096)
        y = torch.randint(0, 4096, (256,))
        truth = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="reference")
        errors, stop = [], threading.Event()

        def caller():
            try:
                for _ in range(60):
                    got = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="fused")
                    torch.testing.assert_close(got, truth)
            except BaseException as e:
                errors.append(repr(e))

        def changer():
            k = 0
            while not stop.is_set():
                torch.set_num_threads(2 + k % 3)
                k += 1

        callers = [threading.Thread(target=caller) for _ in range(3)]
        ch = threading.Thread(target=changer)
        ch.start()
        for t in callers:
            t.start()
        for t in callers:
            t.join()
        stop.set()
        ch.join()
        assert not errors, errors[:3]
        print("ok")
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0 and "ok" in out.stdout, (out.stdout[-500:], out.stderr[-2000:])


def test_eager_fallback_runs_each_torch_op_on_one_worker_thread(monkeypatch):
    """Without the C kernel, the eager blocks run on the pool, whose workers' torch ops use no
    OpenMP team (team size 1 on those threads only); every other thread keeps torch's count."""
    from labelsmooth.ops import fused

    if _cpu_runtime._team_size_setter() is None:
        pytest.skip("torch's OpenMP runtime not found: the eager blocks run in the caller")
    monkeypatch.setattr(labelsmooth.runtime.config, "native_kernel", False)
    monkeypatch.setattr(fused, "BLOCK_BYTES", 64 * 1000 * 4)  # 64 rows a block: 8 blocks
    before = torch.get_num_threads()
    if before < 2:
        pytest.skip("torch runs 1 thread: the eager blocks run in the caller")
    seen: list[tuple[str, int]] = []
    real = fused._eager_block

    def block(*args, **kwargs):  # noqa: ANN002, ANN003
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return real(*args, **kwargs)

    monkeypatch.setattr(fused, "_eager_block", block)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 1000, generator=g, requires_grad=True)
    y = torch.randint(0, 1000, (512,), generator=g)
    loss = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="fused")
    loss.backward()
    ref = x.detach().clone().requires_grad_(True)
    expected = labelsmooth.cross_entropy(ref, y, label_smoothing=0.1, impl="reference")
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(x.grad, ref.grad)
    assert len(seen) == 8
    assert all(name.startswith("labelsmooth") and n == 1 for name, n in seen), seen
    assert torch.get_num_threads() == before  # the caller's count is untouched
    fresh: list[int] = []
    t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert fresh == [before]  # and so is a new thread's


def test_eager_fallback_on_the_pool_under_inference_mode(monkeypatch):
    """The workers take the caller's inference mode (a per-thread state, like grad mode):
    inference tensors are written to only inside it."""
    from labelsmooth.ops import fused

    monkeypatch.setattr(labelsmooth.runtime.config, "native_kernel", False)
    monkeypatch.setattr(fused, "BLOCK_BYTES", 64 * 1000 * 4)  # several blocks on the pool
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 1000, (512,), generator=g)
    with torch.inference_mode():
        x = torch.randn(512, 1000, generator=g)
        got = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="fused")
        want = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="reference")
    torch.testing.assert_close(got, want)
    # an inference tensor used outside inference mode: read only
    torch.testing.assert_close(
        labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="fused"), want
    )
