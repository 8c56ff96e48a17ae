"""Datasets for the experiments: fetching (with checksums), IDX/NPZ formats, in-memory loaders."""

from labelsmooth.data._fetch import (
    BUILTIN_DATASETS,
    ChecksumError,
    DataUnavailableError,
    default_data_dir,
    fetch,
    load_builtin,
)
from labelsmooth.data.datasets import (
    DatasetSplits,
    ImageDataset,
    augment,
    epoch_generator,
    iterate_batches,
    load_dataset,
    split_off,
    subset,
    with_val,
)
from labelsmooth.data.formats import (
    idx_bytes,
    parse_idx,
    read_idx,
    read_idx_dir,
    read_npz,
    write_idx,
    write_idx_dir,
    write_npz,
)

__all__ = [
    "BUILTIN_DATASETS",
    "ChecksumError",
    "DataUnavailableError",
    "DatasetSplits",
    "ImageDataset",
    "augment",
    "default_data_dir",
    "epoch_generator",
    "fetch",
    "idx_bytes",
    "iterate_batches",
    "load_builtin",
    "load_dataset",
    "parse_idx",
    "read_idx",
    "read_idx_dir",
    "read_npz",
    "split_off",
    "subset",
    "with_val",
    "write_idx",
    "write_idx_dir",
    "write_npz",
]
