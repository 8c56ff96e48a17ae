"""Online label smoothing under ``torchrun --nproc-per-node 2`` (gloo on CPU) equals one process:
each rank accumulates the correct predictions of its shard, ``next_epoch`` all-reduces the sums,
so every rank trains with the soft labels of the whole epoch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labelsmooth.experiment import cli
from labelsmooth.experiment.train import load_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(args: list[str], cwd: Path) -> None:
    """``python -m torch.distributed.run --nproc-per-node 2 ARGS`` (gloo on the local host)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    run = subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=180)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def _args(data: Path) -> list[str]:
    args = ["train", "--regime", "short", "--dataset", f"idx:{data}", "--depth", "8"]
    args += ["--width", "4", "--epochs", "3", "--batch-size", "32", "--train-size", "0"]
    return [*args, "--val-size", "0", "--threads", "1", "--loss", "ols", "--quiet"]


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_ols_equals_one_process(tmp_path: Path, synthetic_idx, capsys) -> None:
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    data = synthetic_idx(tmp_path / "idx", 121, 50)  # batches 32, 32, 32, 25 (13 + 12)
    args = _args(data)
    assert cli.main([*args, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    _torchrun(["-m", "labelsmooth", *args, "--out", "two"], tmp_path)
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    for a, b in zip(one["history"], two["history"], strict=True):
        for key in ("loss", "top1", "nll", "ece"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["epoch"], key)
    sa = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["criterion"]
    sb = load_checkpoint(tmp_path / "two" / "checkpoint.pt")["criterion"]
    assert int(sb["epoch"]) == 3
    torch.testing.assert_close(sb["soft_labels"], sa["soft_labels"], rtol=1e-4, atol=1e-6)


_SUMS_SCRIPT = '''
"""Under torchrun: rank r accumulates its own rows, saves, restores, ends the epoch."""
import sys

import torch
import torch.distributed as dist

import labelsmooth
from labelsmooth.experiment.train.loss_state import restore_state, state_to_save

dist.init_process_group("gloo")
rank = dist.get_rank()
logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 4.0]]) * (rank + 1)
ols = labelsmooth.OnlineLabelSmoothing(3)
ols(logits[rank:], torch.tensor([0, 1, 2])[rank:])  # rank 0: three correct rows, rank 1: two
state = state_to_save(ols, dist.get_world_size())  # a mid-epoch checkpoint
resumed = labelsmooth.OnlineLabelSmoothing(3)
restore_state(resumed, state, rank)
restored = {k: v.clone() for k, v in resumed.state_dict().items()}
rest = torch.tensor([[0.0, 5.0, 1.0]]) * (rank + 1)  # the rest of the epoch: one more row each
for criterion in (ols, resumed):
    criterion(rest, torch.tensor([1]))
    criterion.next_epoch()
out = {"saved": state, "restored": restored, "resumed": resumed.state_dict()}
torch.save({**out, "uninterrupted": ols.state_dict()}, f"{sys.argv[1]}/rank{rank}.pt")
dist.destroy_process_group()
'''


@pytest.mark.distributed
def test_a_mid_epoch_checkpoint_holds_every_ranks_sums(tmp_path: Path) -> None:
    """What the loop saves mid-epoch under torchrun: the running sums of both ranks; restored
    (rank 0 takes them, rank 1 starts from zero), the epoch ends with the uninterrupted S."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    script = tmp_path / "sums.py"
    script.write_text(_SUMS_SCRIPT)
    _torchrun([str(script), str(tmp_path)], tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert float(r0["saved"]["counts"].sum()) == 5  # 3 rows of rank 0 + 2 of rank 1
    torch.testing.assert_close(r0["saved"]["accumulator"], r1["saved"]["accumulator"])
    assert float(r0["restored"]["counts"].sum()) == 5 and float(r1["restored"]["counts"].sum()) == 0
    for r in (r0, r1):
        torch.testing.assert_close(r["resumed"]["soft_labels"], r["uninterrupted"]["soft_labels"])
        assert float(r["resumed"]["counts"].sum()) == 0
