"""Validation of a dataset's arrays before anything trains on them (``idx:``, ``npz:``, built-in).

A dataset the user brings is checked completely, split by split, so that a bad file is one
clear ``ValueError`` before training starts instead of a crash in evaluation or silently
wrong numbers:

* **splits**: ``train`` and ``test`` are required, ``val`` optional; each split has at least
  one example and as many labels as images;
* **images**: ``(N, H, W)`` or ``(N, C, H, W)``; every split's images have the training
  images' ``(C, H, W)``; the dtype is uint8 (0..255), another integer type whose values lie
  in 0..255 (converted exactly), or a float type whose values are finite and lie in [0, 1]
  (scaled by 255 and rounded); bool, complex, string and object arrays are refused;
* **labels**: ``(N,)`` of an integer type, or of a float type whose values are all integral
  (``2.0``; ``2.5`` or NaN is refused, never truncated); every label lies in
  ``0..num_classes-1``, where ``num_classes`` is the number of class names when they are
  given (``class_names`` in the NPZ, or the built-in list), else the largest label of any
  split plus one (at most :data:`MAX_CLASSES`).

Each message names the file, the split and the first offending value with its index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_CLASSES", "CheckedArrays", "check_arrays"]

#: The most classes inferred from labels alone (a larger label is almost surely a mistake,
#: and would size the model's output layer); name the classes to declare more.
MAX_CLASSES = 65536
#: How far above 1 a float pixel may be (rounding of data scaled by 1/255).
_FLOAT_SLACK = 1e-6
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CheckedArrays:
    """The validated splits, converted.

    Attributes:
        images: ``{split: (N, C, H, W) uint8}``.
        labels: ``{split: (N,) int64}``.
        class_names: ``num_classes`` names.
    """

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    class_names: tuple[str, ...]


def _where(flat_index: int, shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat_index, shape)) + "]"


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(-1))[0])


def _images(x: np.ndarray, key: str, where: str) -> np.ndarray:
    """``x`` as ``(N, C, H, W)`` uint8, or a ValueError naming the file and the first bad pixel."""
    if x.ndim not in (3, 4):
        raise ValueError(f"{where}: {key} must be (N, H, W) or (N, C, H, W), got shape {x.shape}")
    if min(x.shape[1:]) < 1:
        raise ValueError(f"{where}: {key} has images of shape {x.shape[1:]}")
    kind = x.dtype.kind
    if kind == "u" and x.dtype.itemsize == 1:
        out = x
    elif kind in "ui":
        bad = (x < 0) | (x > 255)
        if bad.any():
            i = _first(bad)
            raise ValueError(
                f"{where}: {key}{_where(i, x.shape)} = {x.reshape(-1)[i]} is outside 0..255 "
                f"(integer images hold 0..255; floats lie in [0, 1])"
            )
        out = x.astype(np.uint8)
    elif kind == "f":
        bad = ~np.isfinite(x) | (x < 0.0) | (x > 1.0 + _FLOAT_SLACK)
        if bad.any():
            i = _first(bad)
            raise ValueError(
                f"{where}: {key}{_where(i, x.shape)} = {x.reshape(-1)[i]} is not a pixel "
                f"value (float images must be finite and lie in [0, 1])"
            )
        out = np.rint(np.clip(x.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ValueError(
            f"{where}: {key} has dtype {x.dtype}; images are uint8 (0..255), another integer "
            "type with values in 0..255, or floats in [0, 1]"
        )
    return np.ascontiguousarray(out if out.ndim == 4 else out[:, None])


def _labels(y: np.ndarray, key: str, where: str) -> np.ndarray:
    """``y`` as ``(N,)`` int64 (nonnegative), or a ValueError naming the first bad label."""
    if y.ndim != 1:
        raise ValueError(f"{where}: {key} must be one label per image (N,), got shape {y.shape}")
    kind = y.dtype.kind
    if kind == "f":
        bad = ~np.isfinite(y) | (y != np.floor(y)) | (y < 0) | (y >= 2**62)
        if bad.any():
            i = _first(bad)
            raise ValueError(
                f"{where}: {key}[{i}] = {y[i]} is not a class index (labels are integers "
                "0..num_classes-1; float labels must hold whole numbers)"
            )
        return y.astype(np.int64)
    if kind not in "ui":
        raise ValueError(f"{where}: {key} has dtype {y.dtype}; labels are integers")
    if kind == "u" and y.dtype.itemsize == 8 and y.size and int(y.max()) >= 2**62:
        i = int(np.argmax(y))
        raise ValueError(f"{where}: {key}[{i}] = {y[i]} is not a class index")
    out = y.astype(np.int64)
    if (out < 0).any():
        i = _first(out < 0)
        raise ValueError(f"{where}: {key}[{i}] = {out[i]} is negative (labels are 0..C-1)")
    return out


def _class_names(names: np.ndarray | tuple[str, ...] | None, where: str) -> tuple[str, ...] | None:
    if names is None or isinstance(names, tuple):
        return names
    arr = np.asarray(names)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "US":
        raise ValueError(
            f"{where}: class_names must be a non-empty list of strings, got dtype {arr.dtype} "
            f"and shape {arr.shape}"
        )
    return tuple(str(c) for c in arr)


def check_arrays(
    arrays: Mapping[str, np.ndarray],
    sources: Mapping[str, str],
    class_names: tuple[str, ...] | None = None,
) -> CheckedArrays:
    """Check every split of a dataset and convert it (see the module docstring for the rules).

    Args:
        arrays: ``x_train, y_train, x_test, y_test`` (``x_val, y_val``, ``class_names``
            optional).
        sources: The file each array came from (``{"x_train": "/data/d.npz", …}``), for
            the messages; a key without an entry is named by ``sources["*"]``.
        class_names: The classes when the dataset defines them (overrides ``class_names``
            in ``arrays``).

    Returns:
        The converted splits and the class names.

    Raises:
        ValueError: Naming the file, the split and the offending value.
    """

    def where(key: str, split: str) -> str:
        return f"{sources.get(key, sources.get('*', '<arrays>'))} ({split} split)"

    images: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for split in SPLITS:
        xk, yk = f"x_{split}", f"y_{split}"
        if split == "val" and xk not in arrays and yk not in arrays:
            continue
        for key in (xk, yk):
            if key not in arrays:
                raise ValueError(f"{where(key, split)}: missing array {key!r}")
        x, y = np.asarray(arrays[xk]), np.asarray(arrays[yk])
        if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{where(xk, split)}: {xk} has shape {x.shape} but {yk} has shape {y.shape} "
                "(one label per image)"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{where(xk, split)}: {xk} holds no example")
        images[split] = _images(x, xk, where(xk, split))
        labels[split] = _labels(y, yk, where(yk, split))
        if split != "train" and images[split].shape[1:] != images["train"].shape[1:]:
            c, h, w = images[split].shape[1:]
            tc, th, tw = images["train"].shape[1:]
            raise ValueError(
                f"{where(xk, split)}: {xk} images are {c}x{h}x{w} (CxHxW) but x_train's are "
                f"{tc}x{th}x{tw}; every split needs the training images' shape"
            )
    names = _class_names(
        class_names if class_names is not None else arrays.get("class_names"),
        sources.get("class_names", sources.get("*", "<arrays>")),
    )
    if names is None:
        top = max(int(y.max()) for y in labels.values())
        if top >= MAX_CLASSES:
            split = next(s for s, y in labels.items() if int(y.max()) == top)
            i = int(np.argmax(labels[split]))
            raise ValueError(
                f"{where(f'y_{split}', split)}: y_{split}[{i}] = {top} would make {top + 1} "
                f"classes (more than {MAX_CLASSES}); give class_names to declare them"
            )
        names = tuple(str(i) for i in range(top + 1))
    for split, y in labels.items():
        bad = y >= len(names)
        if bad.any():
            i = _first(bad)
            raise ValueError(
                f"{where(f'y_{split}', split)}: y_{split}[{i}] = {y[i]} is not a class index "
                f"0..{len(names) - 1} ({len(names)} class names)"
            )
    return CheckedArrays(images, labels, names)
