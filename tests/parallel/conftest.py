"""Shared fixture of the distributed tests: ``run_ranks`` forks gloo ranks on CPU.

``run_ranks(worker, world, *args)`` forks ``world`` processes (fork: they inherit the imported
modules and the loaded C row kernel; spawn would re-import torch in each, seconds), joins
a gloo process group in each (``file://`` rendezvous under the test's ``tmp_path``,
loopback), runs ``worker(rank, world, *args)`` there and fails the test with what the
worker returned: a list of failure texts per rank (an empty list passes). A worker runs its
whole grid of cases in one group: forking costs seconds, a case milliseconds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import labelsmooth


def _entry(rank: int, world: int, init: str, out: str, worker: Callable, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    failures: list[str] = ["the worker raised before it returned"]
    try:
        failures = worker(rank, world, *args)
    finally:
        Path(out, f"rank{rank}.json").write_text(json.dumps(failures))
        dist.destroy_process_group()


@pytest.fixture
def run_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``run_ranks(worker, world, *args)``: fork ``world`` gloo ranks running ``worker``."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    if "GLOO_SOCKET_IFNAME" not in os.environ:
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback; inherited by the ranks
    # load the C row kernel here, so that the forked ranks inherit it
    labelsmooth.cross_entropy(torch.zeros(4, 300), torch.zeros(4, dtype=torch.long), impl="fused")

    def run(worker: Callable[..., list[str]], world: int, *args: object) -> None:
        mp.start_processes(
            _entry,
            args=(world, str(tmp_path / "init"), str(tmp_path), worker, args),
            nprocs=world,
            join=True,
            start_method="fork",
        )
        failures = {r: json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)}
        bad = {r: f for r, f in failures.items() if f}
        assert not bad, "\n".join(f"rank {r}: {x}" for r, fs in bad.items() for x in fs[:3])

    return run
