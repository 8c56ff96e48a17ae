"""Checkpoints detect their own corruption; the atomic write leaves whole files or none."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
import torch

from labelsmooth.experiment.files import atomic_write
from labelsmooth.experiment.train import CheckpointError, load_checkpoint, save_checkpoint
from labelsmooth.experiment.train.checkpoint import CHECKPOINT_FIELDS, rng_state


def _state() -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return {
        "config": {"seed": 0},
        "epoch": 1,
        "step": 0,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": rng_state(),
        "generator": None,
        "history": [{"epoch": 1, "loss": 0.5}],
        "loss_sum": 0.0,
        "loss_count": 0,
        "seconds": 1.5,
    }


def _with_header(payload: bytes) -> bytes:
    digest = hashlib.sha256(payload).hexdigest()
    return (
        b"labelsmooth-checkpoint 2\n" + f"sha256 {digest} bytes {len(payload)}\n".encode() + payload
    )


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_round_trip(tmp_path: Path) -> None:
    state = _state()
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt")
    assert set(back) == set(CHECKPOINT_FIELDS)
    assert all(torch.equal(back["model"][k], v) for k, v in state["model"].items())
    assert back["history"] == state["history"] and back["seconds"] == 1.5
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left


@pytest.mark.parametrize("where", [0.3, 0.6, 0.99])
def test_one_flipped_byte_is_refused(tmp_path: Path, where: float) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, _state())
    data = bytearray(path.read_bytes())
    data[int(where * len(data))] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupted \(SHA-256 mismatch\)"):
        load_checkpoint(path)


def test_truncated_and_extended_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, _state())
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 100])
    with pytest.raises(CheckpointError, match=r"is truncated \(\d+ of \d+ bytes\)"):
        load_checkpoint(path)
    path.write_bytes(whole + b"x")
    with pytest.raises(CheckpointError, match="longer than written"):
        load_checkpoint(path)
    path.write_bytes(whole[:30])  # cut inside the header
    with pytest.raises(CheckpointError, match="damaged header"):
        load_checkpoint(path)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save(_state(), path)  # a plain torch file (how older versions wrote checkpoints)
    with pytest.raises(CheckpointError, match="not a labelsmooth checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_crafted_checkpoints_missing_or_wrong_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    state = _state()
    del state["optimizer"], state["history"]
    path.write_bytes(_with_header(_torch_bytes(state)))
    with pytest.raises(CheckpointError, match=r"lacks the field\(s\) optimizer, history"):
        load_checkpoint(path)
    state = _state()
    state["epoch"] = "1"
    path.write_bytes(_with_header(_torch_bytes(state)))
    with pytest.raises(CheckpointError, match=r"field 'epoch' is a str, expected int"):
        load_checkpoint(path)
    state = _state()
    del state["rng"]["numpy"]
    path.write_bytes(_with_header(_torch_bytes(state)))
    with pytest.raises(CheckpointError, match=r"rng\.numpy"):
        load_checkpoint(path)
    state = _state()
    state["history"] = []
    path.write_bytes(_with_header(_torch_bytes(state)))
    with pytest.raises(CheckpointError, match="inconsistent: epoch 1, step 0, 0 history rows"):
        load_checkpoint(path)
    state = _state()
    state["step"] = 3
    path.write_bytes(_with_header(_torch_bytes(state)))
    with pytest.raises(CheckpointError, match="mid-epoch but lacks the generator state"):
        load_checkpoint(path)
    path.write_bytes(_with_header(_torch_bytes([1, 2, 3])))
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(path)


class _Custom:  # not loadable with weights_only=True
    pass


def test_payload_that_weights_only_refuses(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(_with_header(_torch_bytes({"x": _Custom()})))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(path)
    path.write_bytes(_with_header(b"not a torch file"))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(path)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "sub" / "f.bin"
    atomic_write(path, b"old")
    assert path.read_bytes() == b"old"

    def no_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]
