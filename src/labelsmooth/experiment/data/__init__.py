"""Datasets for the experiments: fetching (with checksums), IDX/NPZ formats, in-memory loaders,
and the Shakespeare text corpus (:mod:`labelsmooth.experiment.data.text`)."""

from labelsmooth.experiment.data._cache import default_data_dir
from labelsmooth.experiment.data._common import (
    ChecksumError,
    DataUnavailableError,
    NotRegularFileError,
)
from labelsmooth.experiment.data._fetch import fetch, load_builtin
from labelsmooth.experiment.data._pins import BUILTIN_DATASETS, DISPLAY_NAMES
from labelsmooth.experiment.data.datasets import (
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
from labelsmooth.experiment.data.formats import (
    idx_bytes,
    parse_idx,
    read_idx,
    read_idx_dir,
    read_npz,
    write_idx,
    write_idx_dir,
    write_npz,
)
from labelsmooth.experiment.data.text import (
    PAD,
    TEXT_DATASETS,
    TextCorpus,
    fetch_shakespeare,
    load_shakespeare,
    pack_sequences,
    pad_batch,
)

__all__ = [
    "BUILTIN_DATASETS",
    "ChecksumError",
    "DataUnavailableError",
    "DISPLAY_NAMES",
    "NotRegularFileError",
    "DatasetSplits",
    "PAD",
    "TEXT_DATASETS",
    "TextCorpus",
    "fetch_shakespeare",
    "load_shakespeare",
    "pack_sequences",
    "pad_batch",
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
