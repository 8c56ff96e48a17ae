"""The sentence above a results table: how many seeds, runs and seconds stand behind it.

A task's ``TaskSpec.table_header`` is :func:`make_table_header` of its two own parts: the
table's title and the sentence saying what each run trained and was tested on.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from labelsmooth.experiment.report import count

__all__ = ["seeds_phrase", "budget_phrase", "table_sentence", "make_table_header"]


def seeds_phrase(rs: Sequence[Mapping[str, Any]]) -> str:
    """ "Mean ± std over 3 seeds (0, 1, 2)", or "One run per row, seed 0"."""
    seeds = sorted({r["seed"] for r in rs})
    listed = ", ".join(map(str, seeds))
    if len(seeds) > 1:
        return f"Mean ± std over {count(len(seeds), 'seed')} ({listed})"
    return f"One run per row, seed {listed}"


def budget_phrase(rs: Sequence[Mapping[str, Any]], seconds: float, threads: int | None) -> str:
    """The training time behind the table (per run, as recorded when each run trained) and
    this invocation's wall time, which is far shorter when the runs were already on disk."""
    run_s = statistics.fmean(float(r["seconds"]) for r in rs)
    on = f" on {count(threads, 'CPU thread')}" if threads else ""
    return (
        f"Training: {count(len(rs), 'run')} × {run_s:.0f} s{on}, as recorded when each run "
        f"trained; this invocation took {seconds / 60:.1f} min of wall time (data and "
        "evaluation included; runs already in the output folder are reused, not retrained)."
    )


def table_sentence(
    title: str,
    model: str,
    rs: Sequence[Mapping[str, Any]],
    trained: str,
    seconds: float,
    threads: int | None,
) -> str:
    """The sentence above a task's table: ``**<title>**: <model>, <N> parameters; <trained>``,
    then :func:`seeds_phrase` and :func:`budget_phrase`. ``trained`` (a full sentence, its
    period included) says what each run trained on and was tested on."""
    return (
        f"**{title}**: {model}, {rs[0]['num_parameters']:,} parameters; {trained} "
        f"{seeds_phrase(rs)}. {budget_phrase(rs, seconds, threads)}"
    )


def make_table_header(
    title: Callable[[str, str], str],
    trained: Callable[[Mapping[str, Any], Mapping[str, Any]], str],
) -> Callable[[str, str, Sequence[Mapping[str, Any]], str, float], str]:
    """A ``TaskSpec.table_header``: ``table_header(dataset, regime, records, model, seconds)``
    is :func:`table_sentence` with ``title(dataset, regime)`` and ``trained(config, sizes)``
    of the first record's ``config`` and ``sizes``, on its ``config["num_threads"]``."""

    def table_header(
        dataset: str, regime: str, rs: Sequence[Mapping[str, Any]], model: str, seconds: float
    ) -> str:
        cfg, sizes = rs[0]["config"], rs[0]["sizes"]
        return table_sentence(
            title(dataset, regime), model, rs, trained(cfg, sizes), seconds, cfg.get("num_threads")
        )

    return table_header
