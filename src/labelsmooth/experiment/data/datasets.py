"""In-memory image datasets, deterministic subsets and splits, batch augmentation and loaders.

Everything lives in tensors (28x28 datasets fit in memory many times over); a "loader" is a
generator of ``(images, labels)`` batches whose order and augmentation are a pure function of
``(seed, epoch)``, so a run resumed at an epoch boundary (or mid-epoch, from the saved
generator state) sees exactly the batches an uninterrupted run sees.

Dataset specifications accepted by :func:`load_dataset`:

* ``"fashion-mnist"``, ``"mnist"``: built-in, fetched into the cache on first use;
* ``"idx:/path/dir"``: a directory with the four MNIST-style IDX files (``.gz`` or raw);
* ``"npz:/path/file.npz"``: arrays ``x_train, y_train, x_test, y_test`` (``x_val, y_val``
  optional). See :mod:`labelsmooth.experiment.data.formats`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from labelsmooth.experiment.data._checks import check_arrays
from labelsmooth.experiment.data._common import DataUnavailableError
from labelsmooth.experiment.data._fetch import load_builtin
from labelsmooth.experiment.data._pins import BUILTIN_DATASETS
from labelsmooth.experiment.data.formats import idx_dir_files, read_idx_dir, read_npz

__all__ = [
    "ImageDataset",
    "DatasetSplits",
    "load_dataset",
    "subset",
    "split_off",
    "augment",
    "epoch_generator",
    "iterate_batches",
    "with_val",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class ImageDataset:
    """Images and labels held as tensors.

    Attributes:
        images: ``(N, C, H, W)`` uint8 in ``[0, 255]``.
        labels: ``(N,)`` int64 in ``[0, num_classes)``.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset's splits plus what a training recipe needs to know about it.

    Attributes:
        name: Dataset specification it was loaded from.
        train: Training split.
        test: Test split.
        val: Validation split, if the source provides one (else ``None``).
        class_names: ``num_classes`` names.
        hflip: Whether horizontal flips are label-preserving (clothes yes, digits no).
        mean: Pixel mean of the training images (in ``[0, 1]``), for normalisation.
        std: Pixel standard deviation of the training images.
    """

    name: str
    train: ImageDataset
    test: ImageDataset
    val: ImageDataset | None
    class_names: tuple[str, ...]
    hflip: bool
    mean: float
    std: float

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)


def _from_arrays(
    name: str,
    arrays: dict[str, np.ndarray],
    sources: dict[str, str],
    class_names: tuple[str, ...] | None,
    hflip: bool,
) -> DatasetSplits:
    """Check every split (:func:`~labelsmooth.experiment.data._checks.check_arrays`), then
    hold the converted arrays as tensors."""
    checked = check_arrays(arrays, sources, class_names)

    def split(key: str) -> ImageDataset:
        images = torch.from_numpy(checked.images[key])
        return ImageDataset(images, torch.from_numpy(checked.labels[key]))

    train, test = split("train"), split("test")
    pixels = train.images.float() / 255.0
    return DatasetSplits(
        name=name,
        train=train,
        test=test,
        val=split("val") if "val" in checked.images else None,
        class_names=checked.class_names,
        hflip=hflip,
        mean=float(pixels.mean()),
        std=float(pixels.std()),
    )


def load_dataset(
    spec: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    hflip: bool | None = None,
    source_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> DatasetSplits:
    """Load a dataset by specification (fetching built-in ones on first use).

    Built-in datasets are verified against their pinned SHA-256 sums on every load; a missing
    or corrupted cached file is fetched again (see :mod:`labelsmooth.experiment.data._fetch`).
    MNIST's validation split is the last 10,000 of its 60,000 training images (the split of the
    widely used ``mnist.pkl.gz``), so ``train`` has 50,000 examples; Fashion-MNIST has no
    validation split of its own.

    Args:
        spec: ``"fashion-mnist"``, ``"mnist"``, ``"idx:DIR"`` or ``"npz:FILE"``.
        data_dir: Cache root for built-in datasets.
        download: Fetch a built-in dataset if it is not cached (or a cached file fails its
            checksum); when false, that is an error.
        hflip: Override whether horizontal flips are used in augmentation (default: on for
            Fashion-MNIST, off for MNIST and for bring-your-own data).
        source_dir: Folder with the built-in dataset's files (see :func:`fetch`'s
            ``source_dir``; default ``$LABELSMOOTH_DATA_FROM``).
        progress: Download progress bars (``None``: when stderr is a terminal).
        log: Where progress messages go.

    Returns:
        The splits.

    Raises:
        DataUnavailableError: If the data is missing or cannot be fetched (the message says
            how to provide it).
        ValueError: If ``spec`` is not understood or the files are malformed: every split
            of an ``idx:``/``npz:`` dataset is checked before anything trains on it (shapes
            that agree, integral labels in range, finite pixels in range, a supported dtype;
            see :mod:`labelsmooth.experiment.data._checks`), and the message names the file,
            the split and the offending value.
    """
    if spec in BUILTIN_DATASETS:
        arrays = load_builtin(
            spec, data_dir, download=download, source_dir=source_dir, progress=progress, log=log
        )
        where = {"*": f"dataset {spec!r}"}
        if spec == "fashion-mnist":
            flip = True if hflip is None else hflip
            return _from_arrays(spec, arrays, where, FASHION_MNIST_CLASSES, flip)
        arrays = _mnist_validation_split(arrays)
        return _from_arrays(spec, arrays, where, MNIST_CLASSES, bool(hflip))
    kind, sep, path = spec.partition(":")
    if sep and kind == "idx":
        arrays = _read_or_unavailable(read_idx_dir, path, spec)
        files = {key: str(file) for key, file in idx_dir_files(path).items()}
        return _from_arrays(spec, arrays, files, None, bool(hflip))
    if sep and kind == "npz":
        arrays = _read_or_unavailable(read_npz, path, spec)
        return _from_arrays(spec, arrays, {"*": str(Path(path))}, None, bool(hflip))
    raise ValueError(
        f"unknown dataset {spec!r}: use one of {', '.join(BUILTIN_DATASETS)}, "
        "idx:/path/to/dir (four MNIST-style IDX files) or npz:/path/to/file.npz"
    )


#: Size of MNIST's validation split: the last images of its training set.
MNIST_VAL_SIZE = 10_000


def _mnist_validation_split(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Split the last :data:`MNIST_VAL_SIZE` training images off as the validation set."""
    n = arrays["x_train"].shape[0] - MNIST_VAL_SIZE
    x, y = arrays["x_train"], arrays["y_train"]
    return {**arrays, "x_train": x[:n], "y_train": y[:n], "x_val": x[n:], "y_val": y[n:]}


def _read_or_unavailable(
    reader: Callable[[str | os.PathLike[str]], dict[str, np.ndarray]],
    path: str | os.PathLike[str],
    spec: str,
) -> dict[str, np.ndarray]:
    try:
        return reader(path)
    except FileNotFoundError as e:
        raise DataUnavailableError(f"dataset {spec!r} not found: {e}") from e


def subset(data: ImageDataset, n: int | None, seed: int = 0) -> ImageDataset:
    """A class-stratified random subset of ``n`` examples (all of them if ``n`` is None/too big).

    The choice depends only on ``(data, n, seed)``, not on any global RNG.
    """
    if n is None or n >= len(data):
        return data
    idx = _stratified_indices(data.labels, n, seed)
    return ImageDataset(data.images[idx], data.labels[idx])


def split_off(data: ImageDataset, n: int, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Split ``data`` into ``(rest, held_out)`` with ``n`` stratified held-out examples.

    Deterministic in ``seed``; used to carve a validation split from the training set.
    """
    if not 0 < n < len(data):
        raise ValueError(f"cannot hold out {n} of {len(data)} examples")
    held = _stratified_indices(data.labels, n, seed)
    mask = torch.ones(len(data), dtype=torch.bool)
    mask[held] = False
    rest = mask.nonzero().squeeze(1)
    return (
        ImageDataset(data.images[rest], data.labels[rest]),
        ImageDataset(data.images[held], data.labels[held]),
    )


def _stratified_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(labels.shape[0], generator=g)
    # Sort the permutation by label (stable), then interleave: rank within class decides order.
    by_class = perm[torch.argsort(labels[perm], stable=True)]
    lab = labels[by_class]
    first = torch.searchsorted(lab, lab, side="left")
    rank = torch.arange(lab.shape[0]) - first  # position within its class
    order = torch.argsort(rank.double() + torch.rand(lab.shape[0], generator=g) * 0.5, stable=True)
    return torch.sort(by_class[order[:n]]).values


def augment(
    x: torch.Tensor, generator: torch.Generator, *, pad: int = 2, hflip: bool = False
) -> torch.Tensor:
    """Random crop with zero padding, then (optionally) random horizontal flip.

    Args:
        x: Batch ``(B, C, H, W)`` (any dtype).
        generator: Source of randomness (one draw of offsets and flips per batch).
        pad: Padding on each side; crops are offset by ``0..2 pad`` pixels.
        hflip: Flip each image left-right with probability 1/2.

    Returns:
        Augmented batch ``(B, C, H, W)``.
    """
    b, _, h, w = x.shape
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p)
        rows = (oy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
        cols = (ox[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
        bi = torch.arange(b)[:, None, None, None]
        ci = torch.arange(x.shape[1])[None, :, None, None]
        x = xp[bi, ci, rows, cols]  # (B, C, H, W)
    if hflip:
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that fixes one epoch's batch order and augmentation: f(seed, epoch)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1))


def iterate_batches(
    data: ImageDataset,
    batch_size: int,
    *,
    mean: float,
    std: float,
    generator: torch.Generator | None = None,
    order: torch.Tensor | None = None,
    start: int = 0,
    augment_pad: int = 0,
    hflip: bool = False,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield normalised float batches ``((B, C, H, W) float32, (B,) int64)``.

    Args:
        data: The split.
        batch_size: Batch size ``B``.
        mean: Normalisation mean (pixels in ``[0, 1]``).
        std: Normalisation standard deviation.
        generator: Augmentation randomness; ``None`` for no augmentation.
        order: Example order (a permutation); default ``0..N-1``.
        start: Index of the first batch to yield (resume mid-epoch).
        augment_pad: Random-crop padding (0 disables cropping).
        hflip: Random horizontal flips (only with a generator).
        drop_last: Drop a final incomplete batch.
    """
    n = len(data)
    idx_all = order if order is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for s in range(start * batch_size, stop, batch_size):
        idx = idx_all[s : s + batch_size]
        x = data.images[idx]
        if generator is not None and (augment_pad > 0 or hflip):
            x = augment(x, generator, pad=augment_pad, hflip=hflip)
        xf = (x.float() / 255.0 - mean) / std
        yield xf, data.labels[idx]


def with_val(splits: DatasetSplits, val_size: int, seed: int = 0) -> DatasetSplits:
    """Return splits with a validation set of ``val_size`` examples.

    Uses (a stratified subset of) the source's own validation split when it has one, else
    carves ``val_size`` examples from the training set (deterministic in ``seed``).
    """
    if splits.val is not None:
        return replace(splits, val=subset(splits.val, val_size, seed))
    train, val = split_off(splits.train, val_size, seed)
    return replace(splits, train=train, val=val)
