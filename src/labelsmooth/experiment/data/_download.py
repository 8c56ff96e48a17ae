"""HTTP(S) download of one pinned file: mirrors in order, resume, retries, progress, SHA-256.

Standard library only (:mod:`urllib.request`). One file is tried at each URL in turn:

* a **broken transfer** (connection reset, timeout, fewer bytes than announced, HTTP 5xx,
  408, 429) is retried at the same URL up to ``attempts`` times, resuming the partial file
  with an HTTP ``Range`` request (a server that answers ``200`` instead of ``206`` restarts
  it from the beginning);
* a **failed mirror** (HTTP 4xx, no connection at all: refused, unknown host, TLS failure,
  connect timeout; a file longer than pinned, a SHA-256 mismatch) moves on to the next URL at
  once, emptying the partial file;
* the file is accepted only when its size and SHA-256 equal the pinned values, and only then
  renamed to its final name.

The partial file is ``<name>.part`` beside it, locked (``flock``) while this process writes
it, so an interrupted download resumes on the next run. A second process fetching the same
file at the same time, or a ``.part`` that is not a regular file (a FIFO would block the
open), gets its own exclusively created ``.<name>.<random>.part`` instead (not resumed,
removed when the download fails): two processes never write into one file.

Progress goes to stderr: a ``tqdm`` bar when tqdm is installed (the ``experiment`` extra),
else one line rewritten in place.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

from labelsmooth.experiment.data._common import open_regular

try:
    import fcntl
except ImportError:  # not POSIX: every download gets its own partial file, never resumed
    fcntl = None  # type: ignore[assignment]

__all__ = ["UNREACHABLE", "DownloadError", "download", "sha256_file"]

#: Seconds to wait before the second, third, ... attempt at one URL (then capped at 10 s).
RETRY_DELAY = 1.0
CHUNK = 1 << 16
#: How a failure to connect at all starts (callers may skip that host for other files).
UNREACHABLE = "unreachable"
USER_AGENT = "labelsmooth-data-fetch (Python urllib)"


class DownloadError(OSError):
    """No URL gave the file; ``attempts`` lists ``(url, reason)`` for each URL tried."""

    def __init__(self, name: str, attempts: list[tuple[str, str]]) -> None:
        self.name = name
        self.attempts = attempts
        lines = "".join(f"\n  {url}: {reason}" for url, reason in attempts)
        super().__init__(f"could not download {name}:{lines or ' no URL to try'}")


class _Transient(Exception):
    """A broken transfer worth retrying at the same URL (resuming what arrived)."""


class _MirrorFailed(Exception):
    """This URL cannot give the file; try the next one."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a regular file (read in 1 MiB blocks; a FIFO or device is refused)."""
    with open_regular(path) as f:
        return _sha256_open(f)


def _sha256_open(f: BinaryIO) -> str:
    """Hex SHA-256 of an open file's whole content."""
    f.seek(0)
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- progress


class _Progress:
    """A byte counter drawn with tqdm when importable, else one ``\\r`` line on stderr."""

    def __init__(self, label: str, total: int, initial: int, enabled: bool) -> None:
        self.label, self.total, self.done = label, total, initial
        self.enabled = enabled
        self._bar: Any = None
        self._last = 0.0
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self._draw(force=True)
            return
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            leave=True,
            file=sys.stderr,
        )

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled:
            self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.2 and self.done < self.total:
            return
        self._last = now
        pct = 100.0 * self.done / self.total if self.total else 100.0
        mb = 1024 * 1024
        sys.stderr.write(
            f"\r{self.label}: {self.done / mb:.1f}/{self.total / mb:.1f} MiB ({pct:3.0f}%)"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._draw(force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()


# --------------------------------------------------------------------------- one attempt


def _describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"{e.reason}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _attempt(
    url: str, part: BinaryIO, size: int, timeout: float, new_bar: Callable[[int], _Progress]
) -> None:
    """Transfer (the rest of) ``url`` into the open partial file; return when it has ``size``
    bytes.

    ``new_bar(initial)`` makes the progress bar once the server has answered.
    """
    offset = os.fstat(part.fileno()).st_size
    if offset > size:  # not a prefix of the pinned file
        part.truncate(0)
        offset = 0
    if offset == size:
        return
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # our partial file does not fit: start again
            part.truncate(0)
            raise _Transient("HTTP 416 to a resume request; restarting") from e
        if e.code >= 500 or e.code in (408, 429):
            raise _Transient(_describe(e)) from e
        raise _MirrorFailed(_describe(e)) from e
    except urllib.error.URLError as e:  # refused, unknown host, TLS failure, connect timeout
        raise _MirrorFailed(f"{UNREACHABLE} ({_describe(e)})") from e
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Transient(_describe(e)) from e
    with response:
        if offset and response.status == 206:
            first = response.headers.get("Content-Range", "").partition(" ")[2].partition("-")[0]
            if first != str(offset):
                raise _MirrorFailed(
                    f"asked for bytes {offset}-, got Content-Range "
                    f"{response.headers.get('Content-Range')!r}"
                )
        elif response.status != 200:
            raise _MirrorFailed(f"unexpected HTTP status {response.status}")
        else:
            offset = 0  # the server sent the whole file
        part.truncate(offset)
        part.seek(offset)
        bar = new_bar(offset)
        try:
            _copy_body(response, part, size, offset, bar)
        finally:
            part.flush()
            bar.close()
    got = os.fstat(part.fileno()).st_size
    if got < size:
        raise _Transient(f"connection closed after {got} of {size} bytes")


def _copy_body(response: IO[bytes], f: IO[bytes], size: int, offset: int, bar: _Progress) -> None:
    written = offset
    try:
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                return
            written += len(chunk)
            if written > size:
                raise _MirrorFailed(f"the server sent more than the pinned {size} bytes")
            f.write(chunk)
            bar.update(len(chunk))
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        f.flush()
        raise _Transient(f"transfer broken after {written} of {size} bytes ({_describe(e)})") from e


# --------------------------------------------------------------------------- public


def download(
    urls: Sequence[str],
    dest: str | os.PathLike[str],
    *,
    sha256: str,
    size: int,
    attempts: int = 3,
    timeout: float = 30.0,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
) -> str:
    """Download one file from the first URL that gives it with the pinned size and SHA-256.

    Args:
        urls: Candidate URLs, tried in order.
        dest: Final path; the transfer goes to ``dest + ".part"`` (resumed if present) and is
            renamed only after the checks pass.
        sha256: Pinned hex SHA-256 of the file.
        size: Pinned size in bytes.
        attempts: Tries per URL for broken transfers (each resumes the partial file).
        timeout: Socket timeout in seconds for connecting and for each read.
        progress: Draw a progress bar on stderr (``None``: only when stderr is a terminal).
        log: Where one line per failed attempt goes (``None`` for silence).
        on_failure: Called with ``(url, reason)`` for each URL given up on, also when a later
            URL then works.

    Returns:
        The URL the file came from.

    Raises:
        DownloadError: If no URL gave the file; it lists each URL with its last failure.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else progress
    failures: list[tuple[str, str]] = []
    f, part, resumable = _claim_partial(dest)
    with f:  # the lock is held until the partial file is renamed or given up
        try:
            for url in urls:
                reason = _try_url(url, f, part, dest, sha256, size, attempts, timeout, show, log)
                if reason is None:
                    return url
                failures.append((url, reason))
                if on_failure is not None:
                    on_failure(url, reason)
                if log is not None:
                    log(f"{dest.name}: {url}: {reason}")
        except BaseException:
            if not resumable:  # a one-off name is never left behind
                part.unlink(missing_ok=True)
            raise
        if not resumable or os.fstat(f.fileno()).st_size == 0:
            part.unlink(missing_ok=True)  # a one-off name, or nothing to resume: tidy up
    raise DownloadError(dest.name, failures)


def _try_url(
    url: str,
    f: BinaryIO,
    part: Path,
    dest: Path,
    sha256: str,
    size: int,
    attempts: int,
    timeout: float,
    show: bool,
    log: Callable[[str], None] | None,
) -> str | None:
    """Up to ``attempts`` transfers from one URL into the open partial file ``f`` (at
    ``part``); on success it is renamed to ``dest`` and ``None`` returned, else the reason."""
    reason = ""
    resumed_stale = os.fstat(f.fileno()).st_size > 0
    for i in range(max(1, attempts)):
        if i:
            time.sleep(min(RETRY_DELAY * 2 ** (i - 1), 10.0))
        try:
            _attempt(url, f, size, timeout, lambda n: _Progress(dest.name, size, n, show))
        except _Transient as e:
            reason = str(e)
            if log is not None:
                log(f"{dest.name}: {url}: {reason}; retrying")
            continue
        except _MirrorFailed as e:
            f.truncate(0)
            return str(e)
        got = _sha256_open(f)
        if got == sha256:
            os.replace(part, dest)  # still holding the lock: nobody writes into it
            return None
        f.truncate(0)
        reason = f"SHA-256 {got} does not match the pinned {sha256}"
        if not resumed_stale:
            return reason
        resumed_stale = False  # the old partial file may have come from elsewhere: once more
    return f"gave up after {max(1, attempts)} attempts ({reason})"


def _claim_partial(dest: Path) -> tuple[BinaryIO, Path, bool]:
    """The partial file of ``dest``, opened read-write (and locked by this process), its path,
    and whether it is the resumable ``<dest>.part``.

    ``<dest>.part`` is used (and an earlier run's leftover resumed) when it is a regular file
    that this process can lock (``flock``). When another process holds it (the same file
    fetched into the same cache at once), or something other than a regular file stands
    there (a FIFO is never opened for writing, which would block), a fresh partial file with
    a unique name is created exclusively instead, never resumed: two processes never write
    into one file, and each renames only its own verified file into place.
    """
    part = dest.with_name(dest.name + ".part")
    try:
        regular = stat.S_ISREG(os.lstat(part).st_mode)
    except FileNotFoundError:
        regular = True  # created below
    if regular and fcntl is not None:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(part, flags | getattr(os, "O_NONBLOCK", 0), 0o644)
        except OSError:
            fd = -1
        if fd >= 0:
            st = os.fstat(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if stat.S_ISREG(st.st_mode) and os.lstat(part).st_ino == st.st_ino:
                    return os.fdopen(fd, "r+b"), part, True
            except OSError:  # locked by another process, or renamed away meanwhile
                pass
            os.close(fd)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    return os.fdopen(fd, "r+b"), Path(name), False
