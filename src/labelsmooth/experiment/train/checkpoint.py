"""Training checkpoints that detect their own corruption.

File layout (one file, written atomically by
:func:`~labelsmooth.experiment.files.atomic_write`)::

    labelsmooth-checkpoint 2\\n
    sha256 <64 hex digits> bytes <payload length>\\n
    <payload: torch.save of the state dict>

:func:`load_checkpoint` refuses, with one :class:`CheckpointError` line each, a missing file, a
file without that header (another program's, or an older labelsmooth's without a checksum), a
truncated or extended payload, a payload whose SHA-256 differs (one flipped bit is enough), a
payload ``torch.load(weights_only=True)`` cannot read, and a state that lacks a field the
trainer needs or holds one of the wrong type. Nothing is written while checking, so a refused
resume leaves the checkpoint as it was.

The state also carries every random-number generator the trainer uses
(:func:`rng_state` / :func:`set_rng_state`), so a resumed run continues bit for bit.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelsmooth.experiment.files import atomic_write

__all__ = [
    "CheckpointError",
    "CHECKPOINT_FIELDS",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
]

_MAGIC = b"labelsmooth-checkpoint 2\n"
_HEADER = re.compile(rb"sha256 ([0-9a-f]{64}) bytes ([0-9]{1,15})\n")

#: What a training checkpoint holds: field -> accepted type(s).
CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "config": dict,  # TrainConfig.to_dict()
    "epoch": int,  # the epoch in progress (== epochs when finished)
    "step": int,  # the next step of that epoch
    "model": dict,  # state_dict()s
    "optimizer": dict,
    "scheduler": dict,
    "rng": dict,  # rng_state()
    "generator": (torch.Tensor, type(None)),  # the epoch generator's state mid-epoch
    "history": list,  # one dict per finished epoch
    "loss_sum": float,  # running training loss of the epoch in progress
    "loss_count": int,
    "seconds": float,  # training time so far
}


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read, is corrupted, or does not match the requested run."""


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write ``state`` with its SHA-256 header, atomically (the old file stays until the new
    one is complete)."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    header = _MAGIC + f"sha256 {digest} bytes {len(payload)}\n".encode("ascii")
    atomic_write(path, header + payload)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Returns:
        The state, with every field of :data:`CHECKPOINT_FIELDS`.

    Raises:
        CheckpointError: If the file is missing, truncated, corrupted, not a labelsmooth
            checkpoint, or lacks a field (the message says which and what to do).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"no checkpoint at {p} to resume from; run without --resume")
    payload = _verified_payload(p, p.read_bytes())
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (UnpicklingError, RuntimeError, EOFError, ...)
        detail = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"checkpoint {p} passed its checksum but cannot be loaded ({type(e).__name__}: "
            f"{detail}); it was not written by this labelsmooth"
        ) from e
    _check_fields(p, state)
    return dict(state)


def _verified_payload(p: Path, data: bytes) -> bytes:
    fix = "delete it and start again without --resume"
    if not data.startswith(_MAGIC):
        raise CheckpointError(
            f"{p} is not a labelsmooth checkpoint (no 'labelsmooth-checkpoint 2' header; "
            f"older versions wrote checkpoints without a checksum); {fix}"
        )
    header = _HEADER.match(data, len(_MAGIC))
    if header is None:
        raise CheckpointError(f"checkpoint {p} has a damaged header; {fix}")
    payload = data[header.end() :]
    expected = int(header.group(2))
    if len(payload) != expected:
        what = "truncated" if len(payload) < expected else "longer than written"
        raise CheckpointError(
            f"checkpoint {p} is {what} ({len(payload)} of {expected} bytes); {fix}"
        )
    if hashlib.sha256(payload).hexdigest().encode("ascii") != header.group(1):
        raise CheckpointError(f"checkpoint {p} is corrupted (SHA-256 mismatch); {fix}")
    return payload


def _check_fields(p: Path, state: Any) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {p} holds a {type(state).__name__}, not a state dict")
    missing = [k for k in CHECKPOINT_FIELDS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {p} lacks the field(s) {', '.join(missing)}")
    for key, kind in CHECKPOINT_FIELDS.items():
        value = state[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(
                f"checkpoint {p}: field {key!r} is a {type(value).__name__}, "
                f"expected {_type_names(kind)}"
            )
    for key in ("torch", "numpy", "python"):
        if key not in state["rng"]:
            raise CheckpointError(f"checkpoint {p} lacks the field(s) rng.{key}")
    epoch, step = state["epoch"], state["step"]
    if epoch < 0 or step < 0 or len(state["history"]) != epoch:
        raise CheckpointError(
            f"checkpoint {p} is inconsistent: epoch {epoch}, step {step}, "
            f"{len(state['history'])} history rows (one per finished epoch)"
        )
    if step > 0 and state["generator"] is None:
        raise CheckpointError(f"checkpoint {p} stops mid-epoch but lacks the generator state")


def _type_names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("None" if k is type(None) else k.__name__ for k in kinds)


# --------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """The torch, numpy and Python global generators' states (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
