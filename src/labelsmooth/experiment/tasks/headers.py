"""The sentence above a results table: how many seeds, runs and seconds stand behind it."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from labelsmooth.experiment.report import count

__all__ = ["seeds_phrase", "budget_phrase", "table_sentence"]


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
