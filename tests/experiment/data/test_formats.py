"""IDX / NPZ readers and writers, dataset specs, subsets and augmentation."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from labelsmooth.experiment.data import (
    DataUnavailableError,
    ImageDataset,
    augment,
    idx_bytes,
    iterate_batches,
    load_dataset,
    parse_idx,
    read_idx,
    read_idx_dir,
    read_npz,
    split_off,
    subset,
    with_val,
    write_idx,
    write_idx_dir,
    write_npz,
)


def _arrays(n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-3, 0, 7], dtype=np.int32),
        np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
        np.array([1.5, -2.25], dtype=np.float64),
        np.array([-5, 5], dtype=np.int16),
    ],
)
def test_idx_round_trip(tmp_path, suffix, array):
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_idx_gz_detected_by_content_and_header_layout(tmp_path):
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    raw = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + arr.tobytes()
    (tmp_path / "noext").write_bytes(gzip.compress(raw))  # gzipped without a .gz name
    np.testing.assert_array_equal(read_idx(tmp_path / "noext"), arr)
    write_idx(tmp_path / "w.idx", arr)
    assert (tmp_path / "w.idx").read_bytes() == raw  # byte-exact with the MNIST layout


def test_idx_bytes_and_parse_idx_in_memory():
    arr = np.arange(6, dtype=np.int16).reshape(3, 2) - 2
    raw = idx_bytes(arr)
    assert raw[:4] == bytes([0, 0, 0x0B, 2]) and len(raw) == 4 + 8 + 12
    back = parse_idx(raw, "mem")
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, arr)
    with pytest.raises(ValueError, match="^mem: IDX payload has 11 bytes"):
        parse_idx(raw[:-1], "mem")


def test_idx_truncated_and_bad_magic_errors(tmp_path):
    write_idx(tmp_path / "a", np.zeros((4, 5), np.uint8))
    data = (tmp_path / "a").read_bytes()
    (tmp_path / "t").write_bytes(data[:-3])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        read_idx(tmp_path / "t")
    (tmp_path / "m").write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "m")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dir_round_trip(tmp_path, gz):
    arrays = _arrays()
    write_idx_dir(tmp_path, arrays, gz=gz)
    back = read_idx_dir(tmp_path)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)


def test_idx_dir_missing_file_message(tmp_path):
    write_idx_dir(tmp_path, _arrays())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        read_idx_dir(tmp_path)


def test_npz_round_trip_and_errors(tmp_path):
    arrays = _arrays()
    arrays["x_val"], arrays["y_val"] = arrays["x_test"][:5], arrays["y_test"][:5]
    write_npz(tmp_path / "d.npz", arrays)
    back = read_npz(tmp_path / "d.npz")
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)
    del arrays["y_test"]
    write_npz(tmp_path / "bad.npz", arrays)
    with pytest.raises(ValueError, match="missing array 'y_test'"):
        read_npz(tmp_path / "bad.npz")


def test_load_dataset_specs(tmp_path):
    arrays = _arrays()
    write_idx_dir(tmp_path / "idx", arrays)
    npz = dict(arrays, x_train=arrays["x_train"].astype(np.float32) / 255.0)  # floats in [0,1]
    write_npz(tmp_path / "d.npz", npz)
    a = load_dataset(f"idx:{tmp_path / 'idx'}", log=None)
    b = load_dataset(f"npz:{tmp_path / 'd.npz'}", log=None)
    assert a.train.images.shape == (60, 1, 28, 28) and a.train.images.dtype == torch.uint8
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert a.num_classes == 10 and a.hflip is False and a.val is None
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar", log=None)


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DataUnavailableError, match="not found.*does not exist"):
        load_dataset(f"idx:{tmp_path / 'nope'}", log=None)
    with pytest.raises(DataUnavailableError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}", log=None)


def test_subset_and_split_are_stratified_and_deterministic():
    labels = torch.arange(1000) % 10
    data = ImageDataset(
        torch.arange(1000, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2), labels
    )
    s1, s2 = subset(data, 200, seed=3), subset(data, 200, seed=3)
    assert torch.equal(s1.labels, s2.labels) and torch.equal(s1.images, s2.images)
    assert torch.bincount(s1.labels).tolist() == [20] * 10
    rest, held = split_off(data, 100, seed=1)
    assert len(rest) == 900 and len(held) == 100
    assert torch.bincount(held.labels).tolist() == [10] * 10
    assert subset(data, None) is data


def test_with_val_carves_from_train(tmp_path):
    write_idx_dir(tmp_path, _arrays(n_train=100))
    splits = with_val(load_dataset(f"idx:{tmp_path}", log=None), 20)
    assert len(splits.train) == 80 and splits.val is not None and len(splits.val) == 20


def test_augment_crop_and_flip():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, g, pad=0, hflip=False), x)
    y = augment(x, torch.Generator().manual_seed(1), pad=2, hflip=False)
    assert y.shape == x.shape
    # every crop is a shifted window of the zero-padded image
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        assert any(
            torch.equal(y[i], xp[i, :, oy : oy + 6, ox : ox + 6])
            for oy in range(5)
            for ox in range(5)
        )
    flips = augment(x[:1].expand(64, 1, 6, 6), torch.Generator().manual_seed(2), pad=0, hflip=True)
    flipped = sum(bool(torch.equal(f, x[0].flip(-1))) for f in flips)
    assert 10 < flipped < 54


def test_iterate_batches_normalises_and_respects_start():
    data = ImageDataset(torch.full((10, 1, 2, 2), 255, dtype=torch.uint8), torch.arange(10))
    batches = list(iterate_batches(data, 4, mean=0.5, std=0.5))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.allclose(batches[0][0], torch.ones(4, 1, 2, 2))
    late = list(iterate_batches(data, 4, mean=0.5, std=0.5, start=1))
    assert torch.equal(late[0][1], batches[1][1])
