"""The one way the experiment writes a file: whole or not at all.

Every checkpoint, result JSON, table and CSV goes through :func:`atomic_write`: the bytes go to
a temporary file in the destination's folder, are flushed to disk, and replace the destination
with ``os.replace`` (atomic on POSIX and Windows). A reader therefore sees the old file or the
new one, never half of one, even when the process is killed or the disk fills mid-write.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_text", "write_json", "write_csv"]


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically, creating its parent folders.

    The temporary file (``.<name>.<random>.tmp`` beside ``path``) is removed if anything fails.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write through a file (or link) that is already there; mode 0o666 less the
    # umask, as for any file the user creates.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """:func:`atomic_write` of ``obj`` as indented, key-sorted JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> None:
    """:func:`atomic_write` of ``rows`` as CSV (columns: the first row's keys); nothing if empty."""
    if not rows:
        return
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())
