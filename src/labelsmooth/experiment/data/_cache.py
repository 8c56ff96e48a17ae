"""The dataset cache: its folder, verifying what it holds, and installing verified files.

Layout: ``<data_dir>/<name>/<file>.gz`` (or the uncompressed ``<file>``) for the built-in
image datasets, ``<data_dir>/shakespeare/corpus.json.gz`` for the text corpus. ``data_dir``
is ``--data-dir``, else ``$LABELSMOOTH_DATA_DIR``, else the platformdirs user cache dir when
platformdirs is importable, else ``~/.cache/labelsmooth``.

Every file is checked against its pinned content (:mod:`._pins`) whenever it enters the cache
and again on every load: decompression is bounded by the pinned size, and hashing costs
little next to decompressing, which a load does anyway (Fashion-MNIST's 47 MB of training
images: SHA-256 about 0.05 s, gunzip about 0.7 s on this project's CPU machine), so there is
no sidecar file of cached digests to trust or keep in step.

The cache holds only regular files it wrote: an entry that is a FIFO, device, socket or
symbolic link is never opened (it is removed and fetched again, see :func:`remove_entry`); a
directory where a file belongs is left alone and reported. New files are written to a
temporary file created exclusively (a unique name per process and call) in the same folder,
verified, then renamed into place, so concurrent fetches never share a half-written file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from labelsmooth.experiment.data._common import (
    BadFile,
    DataUnavailableError,
    NotRegularFileError,
    open_regular,
)
from labelsmooth.experiment.data._pins import PinnedFile

__all__ = [
    "cache_problems",
    "cached_entry",
    "data_root",
    "default_data_dir",
    "install_bytes",
    "install_content",
    "install_file",
    "make_cache_dir",
    "read_content",
    "read_limited",
    "remove_entry",
    "write_atomic",
]


def default_data_dir() -> Path:
    """Cache directory: ``$LABELSMOOTH_DATA_DIR``, platformdirs user cache, or ``~/.cache``."""
    env = os.environ.get("LABELSMOOTH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".cache" / "labelsmooth"
    return Path(platformdirs.user_cache_dir("labelsmooth"))


def data_root(data_dir: str | os.PathLike[str] | None) -> Path:
    """``data_dir`` (``~`` expanded), else :func:`default_data_dir`."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


# --------------------------------------------------------------------------- verification


def read_limited(
    path: Path, limit: int, *, gzipped: bool | None = None, follow_symlinks: bool = False
) -> bytes:
    """At most ``limit`` bytes of a file's (uncompressed) content, else raise ``BadFile``.

    Args:
        path: The file; only a regular file is opened (a link too when ``follow_symlinks``:
            files the user names).
        limit: Bytes to read at most (decompression is bounded by it).
        gzipped: Decompress; ``None``: when the file starts with the gzip magic bytes.
        follow_symlinks: Accept a symbolic link to a regular file.

    Raises:
        BadFile: ``"missing"``, ``"a FIFO (named pipe), not a regular file"``, … or
            ``"unreadable (…)"``.
    """
    try:
        with open_regular(path, follow_symlinks=follow_symlinks) as f:
            if gzipped is None:
                gzipped = f.read(2) == b"\x1f\x8b"
                f.seek(0)
            if not gzipped:
                return f.read(limit)
            with gzip.GzipFile(fileobj=f) as g:
                return g.read(limit)
    except (FileNotFoundError, NotADirectoryError):
        raise BadFile("missing") from None
    except NotRegularFileError as e:
        raise BadFile(e.strerror) from None
    except (OSError, EOFError, zlib.error) as e:
        raise BadFile(f"unreadable ({type(e).__name__}: {e})") from e


def read_content(path: Path, pin: PinnedFile, *, follow_symlinks: bool = False) -> bytes:
    """The uncompressed content of ``path`` if it is the pinned file, else raise ``BadFile``.

    Gzip is recognised by its magic bytes; at most ``pin.size + 1`` bytes are decompressed.
    Only a regular file is opened (a link too when ``follow_symlinks``: files the user names).
    """
    raw = read_limited(path, pin.size + 1, follow_symlinks=follow_symlinks)
    if len(raw) != pin.size:
        raise BadFile(f"{'larger' if len(raw) > pin.size else 'smaller'} than the pinned content")
    got = hashlib.sha256(raw).hexdigest()
    if got != pin.sha256:
        raise BadFile(f"content SHA-256 {got} is not the pinned {pin.sha256}")
    return raw


def make_cache_dir(dest: Path) -> None:
    """Create a dataset's cache folder, or raise ``DataUnavailableError`` saying what to do."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataUnavailableError(
            f"cannot create the dataset cache {dest} ({e}); choose another with --data-dir "
            "or LABELSMOOTH_DATA_DIR"
        ) from e


def _mode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None


def cached_entry(directory: Path, pin: PinnedFile) -> Path:
    """The cache entry of ``pin``: its regular ``.gz`` or plain file, else whichever exists
    (to be reported), else the ``.gz`` name."""
    names = [directory / (pin.name + ".gz"), directory / pin.name]
    modes = [_mode(p) for p in names]
    for path, mode in zip(names, modes):
        if mode is not None and stat.S_ISREG(mode):
            return path
    return next((p for p, m in zip(names, modes) if m is not None), names[0])


def cache_problems(directory: Path, pins: tuple[PinnedFile, ...]) -> dict[str, str]:
    """``{file: problem}`` for each pinned file that the cache lacks or holds damaged."""
    problems = {}
    for pin in pins:
        try:
            read_content(cached_entry(directory, pin), pin)
        except BadFile as e:
            problems[pin.name] = str(e)
    return problems


def remove_entry(path: Path) -> None:
    """Delete a damaged cache entry (a file, FIFO, device, socket or link; never followed).

    Raises:
        DataUnavailableError: If ``path`` is a directory: the cache never made it and does
            not delete what it did not make.
    """
    mode = _mode(path)
    if mode is None:
        return
    if stat.S_ISDIR(mode):
        raise DataUnavailableError(
            f"{path} is a directory where the dataset cache keeps a file; remove it or choose "
            "another cache with --data-dir or LABELSMOOTH_DATA_DIR"
        )
    path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- installation


def write_atomic(
    final: Path, write: Callable[[BinaryIO], None], check: Callable[[Path], None] | None = None
) -> None:
    """Create ``final`` atomically: ``write(f)`` fills an exclusively created temporary file
    beside it, ``check(tmp)`` may refuse it (by raising), then it is renamed over ``final``.

    The temporary file is removed if anything fails; ``final`` is then left as it was.
    """
    fd, tmp_s = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    tmp = Path(tmp_s)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        if check is not None:
            check(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _install(
    dest: Path, pin: PinnedFile, gz: bool, write: Callable[[BinaryIO], None], verify: bool
) -> None:
    """Write a file into the cache under ``pin``'s name (``.gz`` or plain) atomically; with
    ``verify``, its content is checked before the rename. The other variant is removed."""
    final = dest / (pin.name + (".gz" if gz else ""))

    def check(tmp: Path) -> None:
        if verify:
            read_content(tmp, pin)
        remove_entry(final)  # a directory there is reported, not replaced

    write_atomic(final, write, check)
    remove_entry(dest / (pin.name if gz else pin.name + ".gz"))


def install_file(src: Path, dest: Path, pin: PinnedFile) -> None:
    """Copy the user's file ``src`` into the cache folder ``dest`` if it is the pinned file.

    Raises:
        BadFile: If ``src`` is not a regular file (or a link to one), cannot be read, or is
            not the pinned content (the cache is left as it was).
    """
    try:
        with open_regular(src) as f:
            gz = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            _install(dest, pin, gz, lambda out: shutil.copyfileobj(f, out), verify=True)
    except (FileNotFoundError, NotADirectoryError):
        raise BadFile("missing") from None
    except NotRegularFileError as e:
        raise BadFile(e.strerror) from None
    except OSError as e:
        raise BadFile(f"cannot copy it ({e})") from e


def install_bytes(data: bytes, dest: Path, pin: PinnedFile, gz: bool) -> None:
    """Store ``data``, a verified file (gzipped or not), under its cache name."""

    def write(f: BinaryIO) -> None:
        f.write(data)

    _install(dest, pin, gz, write, verify=False)


def install_content(content: bytes, dest: Path, pin: PinnedFile) -> None:
    """Verify uncompressed ``content`` and store it gzipped (mtime 0) in the cache folder."""
    if len(content) != pin.size or hashlib.sha256(content).hexdigest() != pin.sha256:
        raise BadFile(f"{pin.name}: content is not the pinned {pin.sha256}")
    install_bytes(gzip.compress(content, compresslevel=6, mtime=0), dest, pin, gz=True)
