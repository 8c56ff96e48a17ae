"""Build-and-trust of the native CPU kernel: compile ``kernels.c``, cache the shared library,
verify it before every load, load it (:func:`open_library`).

Long file: one concern, the threat model below and every check it needs, kept in one place
so that a reviewer reads what is trusted and why without jumping between files.
:mod:`labelsmooth.ops.cpu.kernel` asks for the library and launches it.

The cache folder is ``labelsmooth.runtime.config.kernel_cache_dir`` (default from
``$LABELSMOOTH_CACHE``, else ``$XDG_CACHE_HOME/labelsmooth`` or ``~/.cache/labelsmooth``;
read when the kernel is first needed); the library's name is keyed by the source, the
compiler, its flags and the CPU. The compiler is ``$CC``, else ``cc``, ``gcc`` or ``clang``.

Threat model
------------
Loading a shared library runs its code (constructors) in this process, so the cache is
treated as an attack surface. **Who**: another local, non-root user who can write to shared
places — ``/tmp``, a group- or world-writable folder someone set as the cache, a folder
pre-created under the name we would use (``$TMPDIR/labelsmooth-<uid>``) — and who can
compute the library's file name (it depends only on public facts). **Also**: accidents — a
truncated or partly copied file (full disk, killed build), flipped bytes — which would make
``dlopen`` die with SIGBUS/SIGSEGV. **Out of scope**: root and your own user (they can edit
labelsmooth's Python files directly), the compiler and the package's own files (trusted as
installed); the library is not secret (others may read it).

What is checked, before anything in a folder is used:

* **The folder** (its path resolved once; everything afterwards uses the real path): a
  directory owned by you (or root), not writable by group or others; every folder above it,
  and every folder and symbolic link on the path as given, owned by you or root and not
  writable by group or others unless sticky (like ``/tmp``). So nobody else can replace the
  folder, its contents, or where its path leads.
* **The files** (the library ``cpu_kernels-<key>.so`` and its record ``<name>.sha256``): a
  symbolic link is refused; opened with ``O_NOFOLLOW`` and checked on the open descriptor: a
  regular file owned by you (or root), not writable by group or others.
* **Integrity**: the SHA-256 of the library is written at build time to ``<name>.sha256``
  (``sha256sum`` format, replaced atomically); immediately before every ``dlopen`` the file
  is hashed and compared. A missing record, a short, empty or altered file is rebuilt and
  atomically replaced, never loaded. A verified file that fails to load or lacks the
  kernel's symbols is rebuilt once; if that does not help, the kernel is reported
  unavailable.
* **Builds**: one at a time per folder (an ``flock`` on ``.cpu_kernels.lock``), written to a
  temporary ``.cpu_kernels-<pid>-<random>.tmp`` in the same folder (created exclusively,
  ``O_EXCL``), made mode 0700, then renamed over the target (atomic). ``$CC --version``
  must answer within 5 s and the compile finish within 60 s, otherwise the compiler's whole
  process group is killed and the reason recorded.
* **Leftovers** of killed builds: the cache folder may be one the user also keeps other files
  in (``LABELSMOOTH_CACHE`` can point anywhere), so nothing is removed because of its name
  alone. Each temporary file's name is appended to the folder's manifest
  ``.cpu_kernels.tmp-files`` *before* the file is created; a later build (holding the lock)
  removes only files that are listed there, still have the temporary pattern, are regular
  files of yours and are older than five minutes, and drops the entries whose file is gone.
  A file the cache did not create is never listed, so it is never deleted.
* **Refusal**: a folder or file that fails a check is never used (nor deleted); one
  :class:`RuntimeWarning` per process names it and the reason, and the kernel is built in the
  private fallback ``tempfile.gettempdir()/labelsmooth-<uid>`` (created with mode 0700; if it
  already exists it must pass the same checks and must not be a symbolic link). If that is
  refused too, a fresh ``tempfile.mkdtemp()`` folder serves this process only and is removed
  once the library is loaded (so a planted fallback costs a compile, never a load).

What remains: between the hash check and ``dlopen`` the file could be swapped only by
someone who can write the checked folder, i.e. you or root.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import hmac
import os
import platform
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from labelsmooth import runtime

__all__ = ["BuildError", "open_library", "warn_once"]

K = TypeVar("K")

_SOURCE = Path(__file__).with_name("kernels.c")
_FLAGS = [
    "-O3",
    "-std=c99",
    "-fPIC",
    "-shared",
    "-fopenmp-simd",
    "-fno-math-errno",
    "-fno-trapping-math",
]
_ARCH_FLAGS = ["-march=native"]

#: seconds for ``$CC --version`` to answer, and for one compile
_PROBE_TIMEOUT_S = 5.0
_COMPILE_TIMEOUT_S = 60.0
#: a build's temporary file older than this is a leftover (a build takes at most 2 compiles)
_STALE_TEMP_S = 300.0
_TEMP_PREFIX, _TEMP_SUFFIX = ".cpu_kernels-", ".tmp"
_LOCK_NAME = ".cpu_kernels.lock"
#: the temporary files this cache created in a folder, one name a line (module docstring)
_MANIFEST_NAME = ".cpu_kernels.tmp-files"
_NO_LINKS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_OPEN_FLAGS = os.O_RDONLY | _NO_LINKS

_warned: set[str] = set()


class _Untrusted(Exception):
    """A folder or file that someone other than you (or root) could have written."""


class BuildError(Exception):
    """The kernel cannot be built or loaded; the message is the reason."""


# --- the compiler -----------------------------------------------------------------------------


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def _kill(proc: subprocess.Popen[str]) -> None:
    """Kill the process and everything it started (it leads its own process group)."""
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()  # not read: a grandchild outside the group could hold it open


def _run(cmd: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` for at most ``timeout`` seconds; on timeout kill its process group."""
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group, so that killing reaches all of it
        )
    except OSError as err:
        raise BuildError(f"{what} could not start: {err}") from None
    try:
        out, errout = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise BuildError(f"{what} did not finish within {timeout:g} s and was killed") from None
    except BaseException:  # KeyboardInterrupt: do not leave the compiler running
        _kill(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, errout)


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


_versions: dict[str, str] = {}
_version_errors: dict[str, str] = {}


def _cc_version(cc: str) -> str:
    """First line of ``cc --version`` (asked once per compiler, within _PROBE_TIMEOUT_S)."""
    if cc not in _versions and cc not in _version_errors:
        try:
            out = _run(
                [cc, "--version"], _PROBE_TIMEOUT_S, f"the C compiler probe `{cc} --version`"
            )
            _versions[cc] = (out.stdout.splitlines() or ["unknown version"])[0].strip()
        except BuildError as err:
            _version_errors[cc] = str(err)
    if cc in _version_errors:
        raise BuildError(_version_errors[cc])
    return _versions[cc]


def _library_name(cc: str) -> str:
    """``cpu_kernels-<key>.so``, the key a hash of the source, compiler, flags and CPU."""
    about = [cc, _cc_version(cc), " ".join(_FLAGS), _cpu_id(), platform.machine()]
    digest = hashlib.sha256(b"\0".join([_SOURCE.read_bytes(), *(t.encode() for t in about)]))
    return f"cpu_kernels-{digest.hexdigest()[:20]}.so"


# --- what may be trusted ----------------------------------------------------------------------


def _trusted_owners() -> tuple[int, int]:
    return (os.getuid(), 0)  # root can replace any file anyway


def _writers(st: os.stat_result) -> str:
    return {0o020: "its group", 0o002: "others", 0o022: "its group and others"}[st.st_mode & 0o022]


def _check_owner_and_mode(path: Path | str, st: os.stat_result) -> None:
    if st.st_uid not in _trusted_owners():
        raise _Untrusted(f"{path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()})")
    if st.st_mode & 0o022:
        mode = oct(stat.S_IMODE(st.st_mode))
        raise _Untrusted(f"{path} is writable by {_writers(st)} (mode {mode})")


def _check_folder(path: Path, *, allow_link: bool) -> Path:
    """Check that only you (or root) can change the folder ``path`` names, and what is in it;
    return its resolved path (use only that afterwards). Raises _Untrusted or OSError."""
    given = Path(os.path.abspath(path))
    real = Path(os.path.realpath(given))
    if not allow_link and given != real:
        raise _Untrusted(f"{given} is (or passes through) a symbolic link")
    # every folder above, on the path as given and on the real path; a symbolic link on the
    # given path counts by its own owner (whoever owns it can point it elsewhere)
    above: list[Path] = []
    for p in [*reversed(given.parents), given, *reversed(real.parents)]:
        if p not in above and p != real:
            above.append(p)
    for p in above:
        st = os.lstat(p)
        if st.st_uid not in _trusted_owners():
            raise _Untrusted(
                f"{p} (on the way to {real}) is owned by uid {st.st_uid}, not by you or root"
            )
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            mode = oct(stat.S_IMODE(st.st_mode))
            raise _Untrusted(
                f"{p} (on the way to {real}) is writable by {_writers(st)} and not sticky "
                f"(mode {mode})"
            )
    st = os.lstat(real)
    if not stat.S_ISDIR(st.st_mode):
        raise _Untrusted(f"{real} is not a directory")
    _check_owner_and_mode(real, st)
    return real


def _read_checked(path: Path) -> bytes | None:
    """The contents of a trusted regular file, None if there is none. Raises _Untrusted."""
    try:
        fd = os.open(path, _OPEN_FLAGS | os.O_NONBLOCK)  # a planted FIFO must not block
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _Untrusted(f"{path} is a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())  # the file actually opened, not whatever the name means now
        if not stat.S_ISREG(st.st_mode):
            raise _Untrusted(f"{path} is not a regular file")
        _check_owner_and_mode(path, st)
        return f.read()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified(target: Path) -> str | None:
    """The library's SHA-256 if the file matches its record, else None (build it)."""
    data = _read_checked(target)
    record = _read_checked(_record(target))
    if not data or record is None:
        return None
    fields = record.split()  # "<hex digest>  <name>", as sha256sum writes it
    digest = _sha256(data)
    return digest if fields and hmac.compare_digest(digest.encode(), fields[0]) else None


def _record(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


# --- building ---------------------------------------------------------------------------------


def _is_temp_name(name: str) -> bool:
    """A name this module gives its temporary files (never a path, never the manifest)."""
    return (
        name.startswith(_TEMP_PREFIX)
        and name.endswith(_TEMP_SUFFIX)
        and "/" not in name
        and "\0" not in name
    )


def _new_temp(folder: Path) -> tuple[int, Path]:
    """Create a temporary file in ``folder`` for a build (call with the build lock); return
    its descriptor (open for writing) and path.

    Its name is unique (pid and 64 random bits) and appended to the folder's manifest before
    the file is created, so that cleanup can tell the cache's own leftovers from anything the
    user keeps in the folder; ``O_EXCL`` makes sure it is a new file, not someone's.
    """
    name = f"{_TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{_TEMP_SUFFIX}"
    manifest = folder / _MANIFEST_NAME
    # O_NONBLOCK: a FIFO in its place fails at once (ENXIO) instead of blocking the build
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | _NO_LINKS
    fd = os.open(manifest, flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Untrusted(f"{manifest} is not a regular file")
        os.write(fd, (name + "\n").encode())
    finally:
        os.close(fd)
    path = folder / name
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_LINKS, 0o600), path


def _remove_stale_temps(folder: Path) -> None:
    """Delete leftovers of killed builds: only files listed in the manifest (call with the
    build lock). A listed file younger than five minutes is kept (a build whose lock did not
    work, on a file system without ``flock``)."""
    manifest = folder / _MANIFEST_NAME
    try:
        data = _read_checked(manifest)
    except (_Untrusted, OSError):
        return  # not ours to interpret: leave everything as it is
    if data is None:
        return
    names = [n for n in data.decode(errors="replace").splitlines() if n]
    now = time.time()
    keep: list[str] = []
    for name in dict.fromkeys(names):  # each once, in order
        if not _is_temp_name(name):
            continue  # not a name the cache gives: never acted on
        path = folder / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue  # renamed into place or removed: forget it
        except OSError:
            keep.append(name)
            continue
        ours = stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()
        if ours and now - st.st_mtime > _STALE_TEMP_S:
            with contextlib.suppress(OSError):
                os.unlink(path)
                continue
        keep.append(name)
    with contextlib.suppress(OSError):
        if keep:
            fd = os.open(manifest, os.O_WRONLY | os.O_TRUNC | _NO_LINKS)
            try:
                os.write(fd, "".join(n + "\n" for n in keep).encode())
            finally:
                os.close(fd)
        else:
            os.unlink(manifest)


@contextlib.contextmanager
def _build_lock(folder: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold the folder's build lock (OSError if the folder is not writable). With
    ``wait=False``, yield False at once if another process holds it."""
    import fcntl  # POSIX only; this module builds nothing elsewhere

    fd = os.open(folder / _LOCK_NAME, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
    try:
        patience = 2 * _COMPILE_TIMEOUT_S + _PROBE_TIMEOUT_S + 10
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                if time.monotonic() > deadline:
                    raise BuildError(
                        f"another process held {folder / _LOCK_NAME} for more than {patience:g} s"
                    ) from None
                time.sleep(0.05)
            except OSError:  # no locks on this file system: builds may overlap, still verified
                break
        yield True
    finally:
        os.close(fd)  # releases the lock


def _clean_if_listed(folder: Path) -> None:
    """Remove this cache's stale leftovers when its manifest lists any, without waiting for
    a build in progress (it cleans up itself) and without failing the load."""
    if not os.path.lexists(folder / _MANIFEST_NAME):
        return
    with contextlib.suppress(OSError, BuildError), _build_lock(folder, wait=False) as held:
        if held:
            _remove_stale_temps(folder)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = _new_temp(path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _compile(cc: str, target: Path) -> str:
    """Compile into a temporary file beside ``target``, record its hash, rename it."""
    fd, tmp = _new_temp(target.parent)
    os.close(fd)  # the compiler writes it
    tmp_name = str(tmp)
    try:
        error = ""
        for arch in (_ARCH_FLAGS, []):  # -march=native is not known to every compiler
            cmd = [cc, *_FLAGS, *arch, "-o", tmp_name, str(_SOURCE), "-lm"]
            proc = _run(cmd, _COMPILE_TIMEOUT_S, f"compiling {_SOURCE.name} with {cc}")
            if proc.returncode == 0:
                break
            error = (proc.stderr or proc.stdout).strip()[-400:]
        else:
            raise BuildError(f"{cc} failed to compile {_SOURCE.name}: {error}")
        os.chmod(tmp, 0o700)  # the linker may have re-created it with the umask's mode
        data = tmp.read_bytes()
        if not data:
            raise BuildError(f"{cc} wrote an empty library")
        digest = _sha256(data)
        _write_atomic(_record(target), f"{digest}  {target.name}\n".encode())
        os.replace(tmp, target)  # atomic: a reader sees the old file or the whole new one
        return digest
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _remove_stale_temps(target.parent)  # forget this build's temporaries (gone now)


def _find_or_build(cc: str, target: Path, *, rebuild: bool = False) -> str:
    """Make ``target`` a verified build; return its SHA-256. Raises _Untrusted (refused
    file), OSError (folder not writable) or BuildError."""
    folder = target.parent
    _clean_if_listed(folder)
    if not rebuild and (digest := _verified(target)):
        return digest
    with _build_lock(folder):
        _remove_stale_temps(folder)
        if not rebuild and (digest := _verified(target)):  # built meanwhile by another process
            return digest
        return _compile(cc, target)


# --- loading ----------------------------------------------------------------------------------


def _dlclose(lib: ctypes.CDLL) -> None:
    import _ctypes

    close = getattr(_ctypes, "dlclose", None)
    if close is not None:
        close(lib._handle)


def _dlopen_verified(
    target: Path, digest: str, functions: Mapping[K, str]
) -> tuple[ctypes.CDLL, dict[K, Any]]:
    """Hash the file, then load it; BuildError if it changed, fails to load or lacks one of
    ``functions``."""
    data = _read_checked(target)
    if not data or not hmac.compare_digest(_sha256(data), digest):
        raise BuildError(f"{target} changed after it was verified")
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as err:
        raise BuildError(f"{target} could not be loaded: {err}") from None
    missing = [name for name in functions.values() if not hasattr(lib, name)]
    if missing:
        _dlclose(lib)  # otherwise dlopen would hand back this library for the rebuilt file
        raise BuildError(f"{target} lacks the kernel functions {missing}")
    return lib, {key: getattr(lib, name) for key, name in functions.items()}


def _load_from(
    cc: str, target: Path, functions: Mapping[K, str]
) -> tuple[ctypes.CDLL, dict[K, Any]]:
    digest = _find_or_build(cc, target)
    try:
        return _dlopen_verified(target, digest, functions)
    except BuildError:  # loads badly or lacks a kernel: rebuild once
        digest = _find_or_build(cc, target, rebuild=True)
        try:
            return _dlopen_verified(target, digest, functions)
        except BuildError as err:
            raise BuildError(f"{err} (also after rebuilding it)") from None


def _stacklevel() -> int:
    """The warning's stack level: the first frame outside labelsmooth and torch (autograd)."""
    inside = (str(Path(__file__).resolve().parent.parent.parent), os.path.dirname(torch.__file__))
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        level, frame = level + 1, frame.f_back  # type: ignore[assignment]
    return level


def warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, RuntimeWarning, stacklevel=_stacklevel())


def _warn_refused(refused: list[str], built_in: Path | None) -> None:
    where = f"built in {built_in.parent} instead" if built_in else "not built"
    warn_once(
        "cache",
        "labelsmooth: refused for the native CPU kernel: " + "; ".join(refused) + ". Another "
        f"user could have planted a library there, so it was not loaded (the kernel was {where}). "
        "Make the folder and its files yours and not writable by group or others (chown, chmod "
        "go-w), remove what you did not build, or set labelsmooth.runtime.config."
        "kernel_cache_dir (LABELSMOOTH_CACHE) to a private folder.",
    )


def open_library(functions: Mapping[K, str]) -> tuple[ctypes.CDLL, dict[K, Any], Path]:
    """Find or build the library in the first usable trusted folder and load it: the
    library, its function for each key of ``functions`` (key -> symbol name) and its path.
    Raises BuildError (with the reason) or OSError."""
    if os.name != "posix":
        raise BuildError("the native kernel is built and loaded on POSIX systems only")
    cc = _compiler()
    if cc is None:
        raise BuildError("no C compiler found ($CC, cc, gcc or clang on PATH)")
    name = _library_name(cc)
    refused: list[str] = []
    unusable: list[str] = []
    found: Path | None = None
    try:
        fallback = Path(tempfile.gettempdir()) / f"labelsmooth-{os.getuid()}"
        configured = Path(runtime.config.kernel_cache_dir).expanduser()
        for folder, shared in [(configured, False), (fallback, True)]:
            try:
                try:  # the configured folder may be new (~/.cache/labelsmooth); $TMPDIR exists
                    folder.mkdir(mode=0o700, parents=not shared)
                except FileExistsError:
                    pass
                # in a shared temporary folder the name itself must not lead elsewhere
                real = _check_folder(folder, allow_link=not shared)
                lib, kernels = _load_from(cc, real / name, functions)
                found = real / name
                return lib, kernels, found
            except _Untrusted as err:
                refused.append(str(err))
            except OSError as err:  # cannot create or write it (read-only home, full disk, ...)
                unusable.append(f"{folder} is unusable: {err}")
        # both refused or unusable: a folder for this process only, removed once loaded
        try:
            one_off = Path(tempfile.mkdtemp(prefix="labelsmooth-"))
        except OSError as err:
            unusable.append(f"no private temporary folder: {err}")
            raise BuildError("no folder to build in: " + "; ".join(refused + unusable)) from None
        try:
            real = _check_folder(one_off, allow_link=False)
            lib, kernels = _load_from(cc, real / name, functions)
            found = real / name
            return lib, kernels, found
        except _Untrusted as err:
            refused.append(str(err))
        except OSError as err:
            unusable.append(f"{one_off} is unusable: {err}")
        finally:
            shutil.rmtree(one_off, ignore_errors=True)
        raise BuildError("no trusted folder to build in: " + "; ".join(refused + unusable))
    finally:
        if refused:
            _warn_refused(refused, found)
