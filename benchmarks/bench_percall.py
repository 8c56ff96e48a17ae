"""Per-call cost at small shapes: labelsmooth.cross_entropy against F.cross_entropy.

At 32×10 or 256×1000 a loss call is mostly Python, argument checks and dispatch, so this
measures that layer: forward + backward of one call, one torch thread, interleaved rounds
(each round times every variant once, in a shuffled order; the ratio of a round is the
variant's time over the built-in's in that round; the table gives the median ratio and each
variant's best time per call).

    python benchmarks/bench_percall.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

import labelsmooth
from labelsmooth.experiment.bench import recorded_command

SHAPES = ((32, 10), (256, 1000))
CONVENTIONS = ("uniform", "others", "unnormalized")


def _variants(n: int, c: int) -> dict[str, Callable[[], None]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, generator=g).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g)
    module = labelsmooth.LabelSmoothingCrossEntropy(0.1)

    def builtin() -> None:
        F.cross_entropy(x, y, label_smoothing=0.1).backward()

    def ours(convention: str) -> Callable[[], None]:
        def run() -> None:
            labelsmooth.cross_entropy(x, y, label_smoothing=0.1, convention=convention).backward()

        return run

    out = {"F.cross_entropy": builtin}
    out.update({f"auto {conv}": ours(conv) for conv in CONVENTIONS})
    out["LabelSmoothingCrossEntropy"] = lambda: module(x, y).backward()
    return out


def measure(n: int, c: int, rounds: int, calls: int) -> dict[str, dict[str, float]]:
    variants = _variants(n, c)
    for fn in variants.values():  # warm-up
        for _ in range(50):
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    order = list(variants)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = variants[name]
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t0) / calls * 1e6)
    base = times["F.cross_entropy"]
    return {
        name: {
            "best_us": min(ts),
            "median_ratio": statistics.median(t / b for t, b in zip(ts, base)),
        }
        for name, ts in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--out", type=Path, default=None, help="folder for percall.{md,json}")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = {f"{n}x{c}": measure(n, c, args.rounds, args.calls) for n, c in SHAPES}
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": 1,
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        "command": recorded_command("python benchmarks/bench_percall.py", argv or sys.argv[1:]),
    }
    lines = [
        "# Per-call cost: forward + backward of one call, 1 torch thread",
        "",
        f"`{meta['command']}` — {meta['date']}, {meta['machine']}, load average "
        f"{meta['load_average']:.1f}, torch {meta['torch']}; {args.rounds} interleaved rounds "
        f"of {args.calls} calls.",
        "",
        "| shape | variant | best µs/call | median ratio to F.cross_entropy |",
        "|---|---|---:|---:|",
    ]
    for shape, rows in results.items():
        for name, r in rows.items():
            lines.append(f"| {shape} | {name} | {r['best_us']:.1f} | {r['median_ratio']:.2f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "percall.md").write_text(text)
        (args.out / "percall.json").write_text(
            json.dumps({"meta": meta, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
