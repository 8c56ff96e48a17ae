"""Bring-your-own datasets (``npz:FILE``, ``idx:DIR``) are checked completely before training:
one ``ValueError`` (one line) naming the file, the split and the offending value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelsmooth.experiment.data import load_dataset, write_idx, write_idx_dir, write_npz


def _arrays(n=12, size=8, classes=3):
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n, size, size), dtype=np.uint8),
        "y_train": (np.arange(n) % classes).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n // 2, size, size), dtype=np.uint8),
        "y_test": (np.arange(n // 2) % classes).astype(np.uint8),
    }


def _npz(tmp_path, **changes):
    arrays = {**_arrays(), **changes}
    path = tmp_path / "d.npz"
    write_npz(path, {k: v for k, v in arrays.items() if v is not None})
    return path


def _refused(spec, *words):
    with pytest.raises(ValueError) as info:
        load_dataset(spec, log=None)
    msg = str(info.value)
    assert "\n" not in msg, msg  # the CLI prints it as one line
    for word in words:
        assert word in msg, (word, msg)
    return msg


# --------------------------------------------------------------------------- npz


def test_test_images_of_another_size_are_refused_before_training(tmp_path):
    a = _arrays()
    path = _npz(tmp_path, x_test=np.zeros((6, 10, 10), np.uint8))
    _refused(f"npz:{path}", str(path), "test split", "x_test images are 1x10x10", "1x8x8")
    path = _npz(tmp_path, x_val=a["x_test"][:, None].repeat(3, 1), y_val=a["y_test"])
    _refused(f"npz:{path}", "val split", "x_val images are 3x8x8")


def test_fractional_float_labels_are_refused_not_truncated(tmp_path):
    y = np.arange(12, dtype=np.float32) % 3
    y[5] = 1.5
    path = _npz(tmp_path, y_train=y)
    _refused(f"npz:{path}", str(path), "train split", "y_train[5] = ", "1.5", "whole numbers")
    y[5] = np.nan
    _refused(f"npz:{_npz(tmp_path, y_train=y)}", "y_train[5] = ", "nan")


def test_integral_float_labels_are_accepted(tmp_path):
    a = _arrays()
    path = _npz(tmp_path, y_train=a["y_train"].astype(np.float64))
    splits = load_dataset(f"npz:{path}", log=None)
    assert splits.train.labels.dtype == torch.int64
    assert torch.equal(splits.train.labels, torch.from_numpy(a["y_train"].astype(np.int64)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -0.1, 1.5])
def test_non_finite_or_out_of_range_float_pixels_are_refused(tmp_path, bad):
    x = np.full((12, 8, 8), 0.5, np.float32)
    x[3, 2, 1] = bad
    path = _npz(tmp_path, x_train=x)
    _refused(f"npz:{path}", str(path), "train split", "x_train[3, 2, 1] = ", "[0, 1]")


def test_float_pixels_in_the_test_split_are_checked_too(tmp_path):
    x = np.full((6, 8, 8), 0.5, np.float64)
    x[0, 0, 0] = np.nan
    _refused(f"npz:{_npz(tmp_path, x_test=x)}", "test split", "x_test[0, 0, 0] = nan")


def test_labels_out_of_range_in_any_split(tmp_path):
    a = _arrays()
    names = np.array(["a", "b", "c"])
    y_val = a["y_test"].copy()
    y_val[2] = 7  # the val split was never checked against the class names
    path = _npz(tmp_path, class_names=names, x_val=a["x_test"], y_val=y_val)
    _refused(f"npz:{path}", "val split", "y_val[2] = 7", "0..2")
    y_test = a["y_test"].astype(np.int64)
    y_test[4] = -1  # only the training labels' minimum was checked
    _refused(f"npz:{_npz(tmp_path, y_test=y_test)}", "test split", "y_test[4] = -1")


def test_an_absurd_label_is_not_a_class_count(tmp_path):
    y = _arrays()["y_train"].astype(np.int64)
    y[0] = 10**9
    _refused(f"npz:{_npz(tmp_path, y_train=y)}", "y_train[0] = 1000000000", "class_names")


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("x_train", np.ones((12, 8, 8), bool), ["dtype bool"]),
        ("x_train", np.ones((12, 8, 8), np.complex64), ["dtype complex64"]),
        ("y_train", np.ones(12, bool), ["dtype bool", "labels are integers"]),
        ("y_train", np.array(["1"] * 12), ["dtype <U1"]),
        ("y_train", np.zeros((12, 1), np.int64), ["(N,)", "(12, 1)"]),
        ("x_train", np.zeros((12, 8), np.uint8), ["(N, H, W) or (N, C, H, W)"]),
        ("x_test", np.zeros((0, 8, 8), np.uint8), ["holds no example"]),
        ("class_names", np.array(3), ["class_names must be"]),
    ],
    ids=["bool-images", "complex-images", "bool-labels", "string-labels", "2d-labels",
         "2d-images", "empty-test", "scalar-class-names"],
)  # fmt: skip
def test_unsupported_arrays_are_refused(tmp_path, key, value, words):
    if key == "x_test":  # keep the labels' length in step
        path = _npz(tmp_path, x_test=value, y_test=np.zeros(0, np.uint8))
    else:
        path = _npz(tmp_path, **{key: value})
    _refused(f"npz:{path}", str(path), *words)


def test_integer_images_in_0_255_of_another_type_load_exactly(tmp_path):
    a = _arrays()
    splits = load_dataset(f"npz:{_npz(tmp_path, x_train=a['x_train'].astype(np.int32))}", log=None)
    assert torch.equal(splits.train.images[:, 0], torch.from_numpy(a["x_train"]))
    x = a["x_train"].astype(np.int16)
    x[1, 2, 3] = 300
    _refused(f"npz:{_npz(tmp_path, x_train=x)}", "x_train[1, 2, 3] = 300", "0..255")


# --------------------------------------------------------------------------- idx


def test_idx_dir_is_checked_and_names_the_file(tmp_path):
    write_idx_dir(tmp_path / "d", _arrays())
    test_images = tmp_path / "d" / "t10k-images-idx3-ubyte.gz"
    write_idx(test_images, np.zeros((6, 9, 9), np.uint8))
    _refused(f"idx:{tmp_path / 'd'}", str(test_images), "test split", "1x9x9")
    write_idx_dir(tmp_path / "e", _arrays())
    labels = tmp_path / "e" / "train-labels-idx1-ubyte.gz"
    y = (np.arange(12) % 3).astype(np.float32)
    y[7] = 0.25
    write_idx(labels, y)
    _refused(f"idx:{tmp_path / 'e'}", str(labels), "train split", "y_train[7] = ", "0.25")
    x = np.full((12, 8, 8), 0.5, np.float64)
    x[0, 1, 2] = np.nan
    write_idx(tmp_path / "e" / "train-images-idx3-ubyte.gz", x)
    write_idx(labels, (np.arange(12) % 3).astype(np.uint8))
    _refused(f"idx:{tmp_path / 'e'}", "train-images-idx3-ubyte.gz", "x_train[0, 1, 2] = nan")


def test_good_user_datasets_still_load(tmp_path):
    a = _arrays()
    write_idx_dir(tmp_path / "d", a)
    splits = load_dataset(f"idx:{tmp_path / 'd'}", log=None)
    assert splits.image_shape == (1, 8, 8) and splits.num_classes == 3
    x = a["x_train"].astype(np.float32) / 255.0
    b = load_dataset(f"npz:{_npz(tmp_path, x_train=x)}", log=None)
    assert torch.equal(b.train.images, splits.train.images)
