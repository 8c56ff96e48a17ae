"""A class-conditional (C, C) prior against a (C,) prior and no prior: time and peak memory.

Forward + backward of ``labelsmooth.cross_entropy(x, y, label_smoothing=0.1, prior=...)``
(convention "uniform", mean, float32 on CPU, gradient of the logits only) for the
reference and the fused path, each with no prior, a (C,) prior and a (C, C) prior, plus
``F.cross_entropy(label_smoothing=0.1)`` as the built-in every benchmark is read against:

* time: interleaved rounds in one process (each round times every variant once, in a
  shuffled order, after a warm-up); the table gives each variant's median time and two
  ratios taken round by round, then the median: to the same impl with the (C,) prior and to
  the built-in;
* memory: each variant in a fresh subprocess (glibc told to return every block of 1 MiB or
  more to the system, so the resident set follows live memory): one step after a warm-up,
  peak = Linux ``VmHWM`` after a reset via ``/proc/self/clear_refs``, minus the resident set
  before the step (which holds the logits, the targets and the prior). The logits' gradient
  (N·C·4 bytes) is part of every variant's peak.

Run: python benchmarks/bench_prior.py [--shape 8192x1000] [--rounds 9] [--out DIR]
(``--out benchmarks/results`` regenerates the committed prior.md / prior.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

# the resident-set probes the other benchmarks use (Linux /proc), not a second copy
from labelsmooth.experiment.bench import loadavg_text, step_peak_bytes

EPS = 0.1
PRIORS = ("none", "(C,)", "(C, C)")
IMPLS = ("reference", "fused")
VARIANTS = ["F.cross_entropy", *(f"{impl} {p}" for impl in IMPLS for p in PRIORS)]


def _inputs(n: int, c: int):  # noqa: ANN202
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, generator=g).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g)
    priors = {"none": None, "(C,)": torch.rand(c, generator=g) + 0.01}
    priors["(C, C)"] = torch.rand(c, c, generator=g) + 0.01
    return x, y, priors


def make_step(variant: str, x, y, priors) -> Callable[[], None]:  # noqa: ANN001
    """One forward + backward of ``variant``; the logits' gradient is computed and dropped."""
    import torch
    import torch.nn.functional as F

    import labelsmooth

    if variant == "F.cross_entropy":

        def loss():  # noqa: ANN202
            return F.cross_entropy(x, y, label_smoothing=EPS)

    else:
        impl, kind = variant.split(" ", 1)
        prior = priors[kind]

        def loss():  # noqa: ANN202
            return labelsmooth.cross_entropy(x, y, label_smoothing=EPS, prior=prior, impl=impl)

    def step() -> None:
        (grad,) = torch.autograd.grad(loss(), x)
        del grad

    return step


def measure_time(n: int, c: int, rounds: int) -> dict[str, dict[str, float]]:
    """Median time per variant and the median per-round ratios (see the module docstring)."""
    x, y, priors = _inputs(n, c)
    steps = {v: make_step(v, x, y, priors) for v in VARIANTS}
    for step in steps.values():  # warm-up (the C kernel's build, caches)
        step()
        step()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    order = list(VARIANTS)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for v in order:
            t0 = time.perf_counter()
            steps[v]()
            times[v].append(time.perf_counter() - t0)
    out = {}
    for v, ts in times.items():
        impl = v.split(" ", 1)[0]
        vec = times.get(f"{impl} (C,)", ts)
        out[v] = {
            "median_ms": statistics.median(ts) * 1e3,
            "times_ms": [round(t * 1e3, 3) for t in ts],  # in round order
            "ratio_to_vector_prior": statistics.median(t / b for t, b in zip(ts, vec)),
            "ratio_to_builtin": statistics.median(
                t / b for t, b in zip(ts, times["F.cross_entropy"])
            ),
        }
    return out


def run_one_memory(variant: str, n: int, c: int) -> dict:
    """Peak memory of one step of ``variant`` in this (fresh) process."""

    import labelsmooth

    x, y, priors = _inputs(n, c)
    step = make_step(variant, x, y, priors)
    step()  # warm-up
    labelsmooth.empty_cache()
    return {"peak_above_inputs_bytes": step_peak_bytes(step)}


def measure_memory(variant: str, n: int, c: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--one", variant, f"{n}x{c}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MALLOC_MMAP_THRESHOLD_": "1048576"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr[-600:]}
    result: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _meta(args: argparse.Namespace, argv: list[str] | None, load: str) -> dict:
    import torch

    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "loadavg_before": load,
        "loadavg_after": loadavg_text(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": args.threads,
        "rounds": args.rounds,
        "shape": args.shape,
        "command": "python benchmarks/bench_prior.py " + " ".join(argv or sys.argv[1:]),
    }


def _table(meta: dict, results: dict) -> str:
    n, c = meta["shape"].split("x")
    mib = 1 << 20
    lines = [
        f"# (C, C) prior vs (C,) prior vs none: {n}×{c} float32, forward + backward",
        "",
        f"`{meta['command']}` — {meta['date']}, {meta['machine']}, load average "
        f"{meta['loadavg_before']} before / {meta['loadavg_after']} after, torch "
        f"{meta['torch']}, {meta['threads']} torch thread(s); {meta['rounds']} interleaved "
        "rounds. Ratios are per-round medians from the same run. Peak memory: one step in a "
        "fresh process, above the inputs (logits, targets, prior); the logits' gradient "
        f"({int(n) * int(c) * 4 / mib:.1f} MiB) is part of every peak.",
        "",
        "| variant | median ms | × same impl, (C,) prior | × F.cross_entropy | peak MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for v, r in results.items():
        peak = r.get("peak_above_inputs_bytes")
        peak_s = "n/a" if peak is None else f"{peak / mib:.1f}"
        vec = "—" if v == "F.cross_entropy" else f"{r['ratio_to_vector_prior']:.2f}×"
        lines.append(
            f"| {v} | {r['median_ms']:.1f} | {vec} | {r['ratio_to_builtin']:.2f}× | {peak_s} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="8192x1000", help="NxC (default 8192x1000)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, default=None, help="folder for prior.{md,json}")
    p.add_argument("--one", nargs=2, metavar=("VARIANT", "NxC"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        n, c = (int(v) for v in args.one[1].split("x"))
        print(json.dumps(run_one_memory(args.one[0], n, c)))
        return 0
    n, c = (int(v) for v in args.shape.split("x"))
    load = loadavg_text()
    results = measure_time(n, c, args.rounds)
    for v in VARIANTS:
        results[v].update(measure_memory(v, n, c, args.threads))
    meta = _meta(args, argv, load)
    text = _table(meta, results)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "prior.md").write_text(text)
        (args.out / "prior.json").write_text(
            json.dumps({"meta": meta, "results": results}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
