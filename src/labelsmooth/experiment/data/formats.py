"""Readers and writers for the two bring-your-own-data formats: IDX (MNIST-style) and NPZ.

IDX (LeCun's MNIST format): a big-endian header ``0x00 0x00 <type> <ndim>``, then ``ndim``
uint32 sizes, then the array in C order. Files may be gzipped (detected by the gzip magic
bytes, not by the name). An IDX dataset directory holds four files::

    train-images-idx3-ubyte[.gz]  (N, H, W) uint8
    train-labels-idx1-ubyte[.gz]  (N,)      uint8
    t10k-images-idx3-ubyte[.gz]   (M, H, W) uint8   ("test-" is accepted for "t10k-")
    t10k-labels-idx1-ubyte[.gz]   (M,)      uint8

NPZ: one ``numpy.savez`` file with arrays ``x_train`` ``(N, H, W)`` or ``(N, C, H, W)``,
``y_train`` ``(N,)``, ``x_test``, ``y_test`` and optionally ``x_val``, ``y_val`` and
``class_names`` (strings). Images are uint8 in ``[0, 255]`` or floats in ``[0, 1]``.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from labelsmooth.experiment.data._common import (
    NotRegularFileError,
    create_regular,
    open_regular,
    present,
)

__all__ = [
    "IDX_FILES",
    "idx_bytes",
    "idx_dir_files",
    "parse_idx",
    "read_idx",
    "write_idx",
    "read_idx_dir",
    "write_idx_dir",
    "read_npz",
    "write_npz",
]

# IDX type byte -> numpy dtype (big-endian on disk).
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {np.dtype(v).newbyteorder("=").str: k for k, v in _IDX_TYPES.items()}

#: Canonical file names of an IDX dataset directory, keyed by split and kind.
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def _create(path: Path) -> BinaryIO:
    """Open a destination for writing; a FIFO, directory or device there is a ValueError."""
    try:
        return create_regular(path)
    except NotRegularFileError as e:
        raise ValueError(str(e)) from None


def _read_bytes(path: Path) -> bytes:
    try:
        with open_regular(path) as f:  # a FIFO or device is refused, never read (or waited on)
            raw = f.read()
    except NotRegularFileError as e:
        raise ValueError(str(e)) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupted gzip stream ({e})") from e
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (raw or gzipped).

    Args:
        path: File path.

    Returns:
        The array, in native byte order, with the shape stored in the header.

    Raises:
        ValueError: If the header is malformed, the payload has the wrong size, or ``path``
            is not a regular file (or a link to one).
    """
    p = Path(path)
    return parse_idx(_read_bytes(p), str(p))


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the (uncompressed) bytes of one IDX file.

    Args:
        raw: The file's content, header included.
        source: Name used in error messages.

    Returns:
        The array, in native byte order, with the shape stored in the header.

    Raises:
        ValueError: If the header is malformed or the payload has the wrong size.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{source}: not an IDX file (bad magic {raw[:4]!r})")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{source}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{source}: IDX payload has {len(raw) - header} bytes, header says {expected} "
            f"(shape {shape}, dtype {dtype}); the file is truncated or corrupted"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def idx_bytes(array: np.ndarray) -> bytes:
    """The uncompressed IDX encoding of an array (header + big-endian payload).

    Args:
        array: uint8, int8, int16, int32, float32 or float64 array of any shape.
    """
    arr = np.ascontiguousarray(array)
    code = _IDX_CODES.get(arr.dtype.newbyteorder("=").str)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(_IDX_TYPES[code], copy=False).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write an array as IDX; gzipped (reproducibly, mtime 0) when the name ends in ``.gz``.

    Args:
        path: Destination.
        array: uint8, int8, int16, int32, float32 or float64 array of any shape.
    """
    payload = idx_bytes(array)
    p = Path(path)
    if p.name.endswith(".gz"):
        with _create(p) as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
            gz.write(payload)
    else:
        with _create(p) as f:
            f.write(payload)


def _find_idx(directory: Path, split: str, kind: str) -> Path:
    canonical = IDX_FILES[(split, kind)]
    prefixes = ["t10k", "test"] if split == "test" else ["train"]
    candidates = []
    for prefix in prefixes:
        stem = canonical.replace("t10k", prefix)
        dotted = stem.replace(f"{kind}-idx", f"{kind}.idx")  # original MNIST mirror spelling
        for name in (stem, dotted):
            candidates += [name + ".gz", name]
    for name in candidates:
        if present(directory / name):  # a FIFO there is found, then refused by name
            return directory / name
    raise FileNotFoundError(
        f"{directory}: missing {canonical}.gz (or {canonical}); an IDX dataset directory needs "
        f"{', '.join(v + '[.gz]' for v in IDX_FILES.values())}"
    )


def idx_dir_files(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """The four files of an IDX dataset directory: ``{"x_train": path, "y_train": …}``.

    Raises:
        FileNotFoundError: If the directory or one of the files is missing.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"IDX dataset directory {d} does not exist")
    return {
        f"{'x' if kind == 'images' else 'y'}_{split}": _find_idx(d, split, kind)
        for (split, kind) in IDX_FILES
    }


def read_idx_dir(directory: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the four IDX files of a dataset directory.

    Args:
        directory: Directory holding ``train-images-idx3-ubyte[.gz]`` and its three siblings.

    Returns:
        ``{"x_train": (N, H, W), "y_train": (N,), "x_test": (M, H, W), "y_test": (M,)}``.

    Raises:
        FileNotFoundError: If the directory or one of the files is missing.
        ValueError: If a file is malformed or images and labels disagree in length.
    """
    d = Path(directory)
    files = idx_dir_files(d)
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        x, y = read_idx(files[f"x_{split}"]), read_idx(files[f"y_{split}"])
        if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{d}: {split} images have shape {x.shape} but labels {y.shape} "
                "(one label per image)"
            )
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def write_idx_dir(
    directory: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], *, gz: bool = True
) -> None:
    """Write ``x_train, y_train, x_test, y_test`` as the four canonical IDX files.

    Args:
        directory: Destination (created if needed).
        arrays: Mapping with the four arrays (images uint8 ``(N, H, W)``, labels ``(N,)``).
        gz: Gzip the files (``.gz`` suffix).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for (split, kind), name in IDX_FILES.items():
        key = f"{'x' if kind == 'images' else 'y'}_{split}"
        write_idx(d / (name + (".gz" if gz else "")), np.asarray(arrays[key]))


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read an NPZ dataset file (no pickles are loaded).

    Args:
        path: ``.npz`` file with ``x_train, y_train, x_test, y_test`` (``x_val, y_val,
            class_names`` optional).

    Returns:
        Dict of the arrays found.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If it is not a regular file (or a link to one), a required array is
            missing or lengths disagree.
    """
    p = Path(path)
    try:
        f = open_regular(p)  # a FIFO or device is refused, never read (or waited on)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"NPZ dataset file {p} does not exist") from None
    except NotRegularFileError as e:
        raise ValueError(str(e)) from None
    try:
        with f, np.load(f, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{p}: cannot read as .npz ({e})") from e
    for split in ("train", "test", "val"):
        if split != "val" or "x_val" in out or "y_val" in out:
            for key in (f"x_{split}", f"y_{split}"):
                if key not in out:
                    raise ValueError(f"{p}: missing array {key!r} (has {sorted(out)})")
            x, y = out[f"x_{split}"], out[f"y_{split}"]
            if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{p}: x_{split} has shape {x.shape} but y_{split} {y.shape} "
                    "(one label per image)"
                )
    return out


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write a dataset as an uncompressed ``.npz`` (the format :func:`read_npz` reads).

    Args:
        path: Destination file.
        arrays: ``x_train, y_train, x_test, y_test`` and optionally ``x_val, y_val,
            class_names``.
    """
    with _create(Path(path)) as f:
        savez: Any = np.savez  # numpy's stubs do not type **arrays
        savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
