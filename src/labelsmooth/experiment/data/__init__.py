"""Datasets for the experiments: fetching (with checksums), IDX/NPZ formats, in-memory loaders,
and the Shakespeare text corpus (:mod:`labelsmooth.experiment.data.text`).

Where things live: ``_pins`` (the pinned files and SHA-256 sums), ``_sources`` (where a
built-in file can come from, in order), ``_cache`` (the cache folder, verification, atomic
installation), ``_fetch`` (:func:`fetch` and :func:`load_builtin`: the order of sources),
``_download`` (one pinned file over HTTPS), ``_common`` (errors, messages, regular-file
opening shared by all of them), ``_checks`` (the full validation of a dataset's arrays before
training), ``formats`` (IDX and NPZ), ``datasets`` (tensors, subsets, batches), ``text``.
Every file is opened only if it is a regular file: a FIFO or device in its place is an error
naming it (or, in the cache, fetched again), never a read that blocks.
"""

from labelsmooth.experiment.data._cache import default_data_dir
from labelsmooth.experiment.data._common import (
    ChecksumError,
    DataUnavailableError,
    NotRegularFileError,
)
from labelsmooth.experiment.data._fetch import fetch, fetch_shakespeare, load_builtin
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
