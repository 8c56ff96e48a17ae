"""CalibrationMeter.all_reduce under gloo with 2 CPU ranks equals one meter on all the data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from labelsmooth.metrics import CalibrationMeter, evaluate_calibration

WORLD = 2
N, C, BINS = 301, 7, 10


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(N, C, generator=g)
    target = torch.randint(0, C, (N,), generator=g)
    target = torch.where(torch.rand(N, generator=g) < 0.5, logits.argmax(1), target)
    target[::13] = -100
    return logits, target


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        logits, target = _data()
        meter = CalibrationMeter(C, n_bins=BINS, ignore_index=-100, classwise=True)
        # uneven shards, several batches per rank
        shard = slice(0, 120) if rank == 0 else slice(120, N)
        for x, y in zip(logits[shard].split(37), target[shard].split(37)):
            meter.update(x, y)
        meter.all_reduce()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(meter.compute()))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.timeout(60)
def test_all_reduce_gloo_two_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    init_file = tmp_path / "init"
    if "GLOO_SOCKET_IFNAME" not in os.environ:
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback; inherited by the ranks
    mp.spawn(_worker, args=(str(init_file), str(tmp_path)), nprocs=WORLD, join=True)
    logits, target = _data()
    want = evaluate_calibration(logits, target, n_bins=BINS, ignore_index=-100, classwise=True)
    for rank in range(WORLD):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (rank, key)
