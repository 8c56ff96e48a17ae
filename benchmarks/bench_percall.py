"""Per-call cost at small shapes: labelsmooth.cross_entropy against F.cross_entropy.

At 32×10 or 256×1000 a loss call is mostly Python, argument checks and dispatch, so this
measures that layer: forward + backward of one call, one torch thread, interleaved rounds
(each round times every variant once, in a shuffled order; the ratio of a round is the
variant's time over its baseline's in that round; the table gives the median ratio and each
variant's best time per call). The functions' baseline is ``F.cross_entropy``, the module's
``nn.CrossEntropyLoss`` (both pay ``nn.Module.__call__``). Each round is timed twice over:
wall time (``perf_counter``) and this process's CPU time (``process_time``, which leaves out
the time other processes on a shared machine take from it; autograd runs a CPU graph on the
calling thread, so the CPU time is the call's).

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
from typing import Any

import torch
import torch.nn.functional as F

import labelsmooth
from labelsmooth.experiment.bench import recorded_command

SHAPES = ((32, 10), (256, 1000))
CONVENTIONS = ("uniform", "others", "unnormalized")


#: each variant's baseline: the built-in in the same form
BASELINE = {"LabelSmoothingCrossEntropy": "nn.CrossEntropyLoss"}


def _variants(n: int, c: int) -> dict[str, Callable[[], None]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, generator=g).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g)
    module = labelsmooth.LabelSmoothingCrossEntropy(0.1)
    builtin_module = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def builtin() -> None:
        F.cross_entropy(x, y, label_smoothing=0.1).backward()

    def ours(convention: str) -> Callable[[], None]:
        def run() -> None:
            labelsmooth.cross_entropy(x, y, label_smoothing=0.1, convention=convention).backward()

        return run

    out = {"F.cross_entropy": builtin}
    out.update({f"auto {conv}": ours(conv) for conv in CONVENTIONS})
    out["nn.CrossEntropyLoss"] = lambda: builtin_module(x, y).backward()
    out["LabelSmoothingCrossEntropy"] = lambda: module(x, y).backward()
    return out


def measure(n: int, c: int, rounds: int, calls: int) -> dict[str, dict[str, Any]]:
    variants = _variants(n, c)
    for fn in variants.values():  # warm-up
        for _ in range(50):
            fn()
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    order = list(variants)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = variants[name]
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(calls):
                fn()
            wall[name].append((time.perf_counter() - t0) / calls * 1e6)
            cpu[name].append((time.process_time() - c0) / calls * 1e6)
    out = {}
    for name in variants:
        base = BASELINE.get(name, "F.cross_entropy")
        out[name] = {
            "baseline": base,
            "best_us": min(wall[name]),
            "median_ratio": statistics.median(t / b for t, b in zip(wall[name], wall[base])),
            "best_cpu_us": min(cpu[name]),
            "median_cpu_ratio": statistics.median(t / b for t, b in zip(cpu[name], cpu[base])),
        }
    return out


def _env_text(env: dict[str, str]) -> str:
    return " ".join(f"`{k}={v}`" for k, v in env.items()) or "glibc's defaults"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--out", type=Path, default=None, help="folder for NAME.{md,json}")
    p.add_argument("--name", default="percall", help="file name of the results (default: percall)")
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
        # glibc's allocator settings: at 256x1000 they decide whether the built-in's 1 MB
        # temporaries come from fresh mmap pages (page faults on every call) or the heap
        "malloc_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")},
    }
    lines = [
        "# Per-call cost: forward + backward of one call, 1 torch thread",
        "",
        f"`{meta['command']}` — {meta['date']}, {meta['machine']}, load average "
        f"{meta['load_average']:.1f}, torch {meta['torch']}, allocator environment "
        f"{_env_text(meta['malloc_env'])}; {args.rounds} interleaved rounds "
        f"of {args.calls} calls.",
        "",
        "| shape | variant | baseline | best µs/call (wall) | median ratio (wall) "
        "| best µs/call (CPU) | median ratio (CPU) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for shape, rows in results.items():
        for name, r in rows.items():
            base = "—" if name == r["baseline"] else r["baseline"]
            lines.append(
                f"| {shape} | {name} | {base} | {r['best_us']:.1f} | {r['median_ratio']:.2f}× "
                f"| {r['best_cpu_us']:.1f} | {r['median_cpu_ratio']:.2f}× |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.md").write_text(text)
        (args.out / f"{args.name}.json").write_text(
            json.dumps({"meta": meta, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
