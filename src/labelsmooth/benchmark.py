"""Benchmark of label-smoothed cross-entropy variants: forward + backward time and peak memory.

Each (variant, shape, dtype) runs in a fresh subprocess so that peak memory is that variant's
alone. Memory is measured on one step from a cold start (the fused path's cached gradient
buffer released first). Times are medians of several steady-state runs after a warm-up, as
a training loop sees them (the fused path then reuses its gradient buffer); every variant is
reported as a ratio to the built-in ``F.cross_entropy(label_smoothing=)`` measured in the
same invocation
(absolute times move on shared machines, ratios much less). Memory is the peak resident set
above the inputs (Linux ``VmHWM`` after resetting it via ``/proc/self/clear_refs``), as a
multiple of the logits' size.

Run ``labelsmooth bench`` (or ``make bench``); ``--quick`` runs a tiny grid for smoke tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["VARIANTS", "SHAPES", "run_one", "main"]

EPS = 0.1
#: name -> description. "builtin" is the baseline every ratio refers to.
VARIANTS = {
    "builtin": "F.cross_entropy(label_smoothing=0.1)",
    "compiled-builtin": "torch.compile of the same formula",
    "reference": "labelsmooth impl='reference' (dense smoothed target)",
    "materialized": "dense smoothed target + soft-target F.cross_entropy (most hand-written ports)",
    "auto": "labelsmooth default impl='auto' (run only where it is not 'fused')",
    "fused": "labelsmooth impl='fused' (rows by the native C kernel)",
    "fused-eager": "labelsmooth impl='fused' with LABELSMOOTH_NATIVE=0 (rows by eager torch ops)",
    "fused-inplace": "labelsmooth impl='fused', inplace_backward=True",
    "compiled": "labelsmooth impl='compiled' (fused, torch.compile'd row kernel)",
    "roofline": "one read + write pass over the logits (copy_ into a preallocated buffer)",
}
SHAPES = [(256, 1000), (4096, 32000), (8192, 32000), (4096, 128256)]
DTYPES = ["float32", "bfloat16"]


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _make_step(variant: str, x, y) -> Callable[[], None]:  # noqa: ANN001
    """The forward + backward step of ``variant`` (the gradient is computed and dropped)."""
    import torch
    import torch.nn.functional as F

    import labelsmooth

    if variant == "roofline":
        out = torch.empty_like(x)
        return lambda: None if out.copy_(x) is None else None

    if variant == "builtin":

        def loss_fn(inp):  # noqa: ANN001
            return F.cross_entropy(inp, y, label_smoothing=EPS)

    elif variant == "compiled-builtin":
        compiled = torch.compile(lambda inp: F.cross_entropy(inp, y, label_smoothing=EPS))

        def loss_fn(inp):  # noqa: ANN001
            return compiled(inp)

    elif variant == "materialized":
        C = x.shape[1]

        def loss_fn(inp):  # noqa: ANN001
            q = torch.full(inp.shape, EPS / C, dtype=inp.dtype).scatter_(
                1, y[:, None], 1 - EPS + EPS / C
            )
            return F.cross_entropy(inp, q)

    elif variant in ("reference", "fused", "fused-eager", "fused-inplace", "compiled", "auto"):
        impl = {"fused-inplace": "fused", "fused-eager": "fused"}.get(variant, variant)
        if variant == "fused-eager":  # read at call time; this process runs one variant
            os.environ["LABELSMOOTH_NATIVE"] = "0"
        inplace = variant == "fused-inplace"

        def loss_fn(inp):  # noqa: ANN001
            return labelsmooth.cross_entropy(
                inp, y, label_smoothing=EPS, impl=impl, inplace_backward=inplace
            )

    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)}")

    master = x.detach().clone() if variant == "fused-inplace" else None
    leaf = x.detach().requires_grad_(True)

    def step() -> None:
        # the gradient with respect to the logits, as a model's last layer receives it (no
        # accumulation into a leaf's .grad, which would copy an in-place gradient)
        (grad,) = torch.autograd.grad(loss_fn(leaf), leaf)
        del grad

    def restore() -> None:  # not timed: the last step overwrote the logits with the gradient
        if master is not None:
            with torch.no_grad():
                leaf.copy_(master)

    step.restore = restore  # type: ignore[attr-defined]
    return step


def run_one(
    variant: str, n: int, c: int, dtype: str, repeats: int, threads: int, measure: str = "both"
) -> dict:
    """Time and/or measure one variant in this process (call it in a fresh subprocess).

    ``measure``: "time", "memory" or "both". Memory wants glibc to return every large block
    to the OS (``MALLOC_MMAP_THRESHOLD_``, set by :func:`_subprocess`) so that the resident
    set follows live memory; timing wants the allocator a training loop has, which keeps
    freed blocks for reuse — with the fixed threshold every megabyte-sized buffer is faulted
    in afresh on each step, which at 256×1000 cost more than the loss itself.
    """
    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(n, c, generator=g) * 2).to(getattr(torch, dtype))
    y = torch.randint(0, c, (n,), generator=g)
    step = _make_step(variant, x, y)
    restore = getattr(step, "restore", lambda: None)
    step()  # warm-up (and compilation)
    import gc

    from labelsmooth.ops.fused import release_cached_gradient

    # memory: one step from a cold start, so a cached gradient buffer counts as this step's
    peak_ok, peak, before = False, 0, 0
    if measure in ("memory", "both"):
        release_cached_gradient()
        restore()
        gc.collect()
        peak_ok = _reset_peak()
        before = _rss_kib("VmRSS")
        step()
        peak = _rss_kib("VmHWM") if peak_ok else 0
    times = []  # time: steady state, as in a training loop
    for _ in range(repeats if measure in ("time", "both") else 0):
        restore()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    logits_bytes = x.numel() * x.element_size()
    return {
        "variant": variant,
        "shape": [n, c],
        "dtype": dtype,
        "time_s": statistics.median(times) if times else None,
        "times_s": times,
        "peak_above_inputs_bytes": max(0, peak - before) * 1024 if peak_ok else None,
        "logits_bytes": logits_bytes,
    }


def _subprocess(variant: str, n: int, c: int, dtype: str, repeats: int, threads: int) -> dict:
    """Memory in one fresh process, time in another (see :func:`run_one`)."""
    result: dict = {}
    for measure in ("memory", "time"):
        cmd = [
            sys.executable, "-m", "labelsmooth.benchmark", "--one", variant,
            f"{n}x{c}", dtype, str(repeats), str(threads), measure,
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if measure == "memory":
            # glibc returns every block of 1 MiB or more to the OS when it is freed, so the
            # resident set follows live memory and VmHWM measures this step's own peak
            env["MALLOC_MMAP_THRESHOLD_"] = "1048576"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            return {
                "variant": variant,
                "shape": [n, c],
                "dtype": dtype,
                "error": proc.stderr[-400:],
            }  # noqa: E501
        one = json.loads(proc.stdout.strip().splitlines()[-1])
        if measure == "memory":
            result = one
        else:
            result.update(time_s=one["time_s"], times_s=one["times_s"])
    return result


def machine_info(threads: int) -> dict:
    """Machine and versions recorded with every result."""
    import numpy
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from labelsmooth.ops import cpu_kernel

    reason = cpu_kernel.native_unavailable(torch.device("cpu"))
    return {
        "native_kernel": reason or f"built with {cpu_kernel.compiler_version()}",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _fmt_ratio(r: dict, base: dict | None, key: str) -> str:
    if "error" in r or base is None or "error" in base:
        return "error" if "error" in r else "–"
    if key == "time_s":
        return f"{r['time_s'] * 1e3:.1f} ms ({r['time_s'] / base['time_s']:.2f}×)"
    mem = r["peak_above_inputs_bytes"]
    if mem is None:
        return "n/a"
    return f"{mem / r['logits_bytes']:.2f}× logits"


def render_markdown(results: Sequence[dict], info: dict, notes: str = "") -> str:
    """The results table: per shape and dtype, each variant's time (ratio) and memory."""
    lines = [
        "# CPU benchmark: label-smoothed cross-entropy, forward + backward",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['threads']} threads; "
        f"Python {info['python']}, torch {info['torch']}, numpy {info['numpy']}; "
        f"{info['platform']}; fused rows: {info.get('native_kernel', 'eager torch ops')}; "
        f"measured {info['date']}.",
        "",
        "Time: median of the timed runs after a warm-up, with the ratio to the built-in "
        "measured in the same invocation. Memory: peak resident memory above the inputs during "
        "one forward + backward (fresh process per variant), as a multiple of the logits' "
        "size. ε = 0.1, uniform smoothing, mean reduction.",
        "",
        "| shape | dtype | variant | time (× built-in) | peak memory above inputs |",
        "|---|---|---|---|---|",
    ]
    keyed: dict[tuple, dict] = {}
    for r in results:
        keyed[(tuple(r["shape"]), r["dtype"], r["variant"])] = r
    for r in results:
        base = keyed.get((tuple(r["shape"]), r["dtype"], "builtin"))
        n, c = r["shape"]
        lines.append(
            f"| {n}×{c} | {r['dtype']} | {r['variant']} | {_fmt_ratio(r, base, 'time_s')} "
            f"| {_fmt_ratio(r, base, 'mem')} |"
        )
    lines += ["", "Variants:", ""] + [f"- `{k}`: {v}" for k, v in VARIANTS.items()]
    lines += ["", "## Targets (issue 3)", ""] + check_targets(results)
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def check_targets(results: Sequence[dict]) -> list[str]:
    """The issue's targets, each as a line "- PASS/MISS: ... measured ...", from the results.

    At 8192×32000 ``impl="auto"`` runs "fused"; at 256×1000 it runs "fused" when the native
    CPU kernel is available and PyTorch's kernel ("torch") otherwise; a measured "auto" is
    reported beside "fused" there.
    """
    keyed = {(tuple(r["shape"]), r["dtype"], r["variant"]): r for r in results}

    def get(shape: tuple[int, int], variant: str) -> dict | None:
        r = keyed.get((shape, "float32", variant))
        return None if r is None or "error" in r else r

    out = []

    def line(ok: bool, text: str) -> None:
        out.append(f"- {'PASS' if ok else 'MISS'}: {text}")

    big = (8192, 32000)
    b, roof = get(big, "builtin"), get(big, "roofline")
    av = "fused"  # what auto runs there
    f, fi = get(big, av), get(big, "fused-inplace")
    if b and f:
        t = f["time_s"] / b["time_s"]
        line(t <= 0.25, f"8192×32000 fp32 `{av}` time ≤ 0.25× built-in: {t:.2f}×")
        if roof:
            rr = f["time_s"] / roof["time_s"]
            line(rr <= 3, f"8192×32000 fp32 `{av}` time ≤ 3× roofline pass: {rr:.1f}×")
        mem = f.get("peak_above_inputs_bytes")
        if mem is not None:
            m = mem / f["logits_bytes"]
            line(
                m <= 1.05,
                f"8192×32000 fp32 `{av}` peak memory above inputs ≤ 1.05× logits: {m:.2f}×",
            )
    if fi and fi.get("peak_above_inputs_bytes") is not None:
        m = fi["peak_above_inputs_bytes"] / fi["logits_bytes"]
        line(m <= 0.05, f"8192×32000 fp32 `fused-inplace` peak memory ≤ 0.05× logits: {m:.3f}×")
    small = (256, 1000)
    bs = get(small, "builtin")
    for v in ("auto", "fused"):
        fs = get(small, v)
        if bs and fs:
            t = fs["time_s"] / bs["time_s"]
            name = (
                "`fused` (what `auto` runs here)"
                if v == "fused" and not get(small, "auto")
                else f"`{v}`"
            )  # noqa: E501
            line(t <= 1.1, f"256×1000 fp32 {name} time ≤ 1.1× built-in: {t:.2f}×")
    return out or ["- (the target shapes were not part of this run)"]


def plot(results: Sequence[dict], path: Path) -> None:
    """Bar charts of time and memory ratios to the built-in, one group per shape and dtype."""
    from matplotlib.figure import Figure

    groups = sorted({(tuple(r["shape"]), r["dtype"]) for r in results})
    variants = [v for v in VARIANTS if v != "builtin"]
    keyed = {(tuple(r["shape"]), r["dtype"], r["variant"]): r for r in results}
    fig = Figure(figsize=(max(8, 1.8 * len(groups)), 7))
    axes = fig.subplots(2, 1)
    width = 0.8 / len(variants)
    for vi, v in enumerate(variants):
        t_ratio, m_ratio = [], []
        for shape, dt in groups:
            r, b = keyed.get((shape, dt, v)), keyed.get((shape, dt, "builtin"))
            ok = r is not None and b is not None and "error" not in r and "error" not in b
            t_ratio.append(r["time_s"] / b["time_s"] if ok else float("nan"))  # type: ignore[index]
            mem = r.get("peak_above_inputs_bytes") if ok else None  # type: ignore[union-attr]
            m_ratio.append(mem / r["logits_bytes"] if mem is not None else float("nan"))  # type: ignore[index]
        xs = [i + vi * width for i in range(len(groups))]
        axes[0].bar(xs, t_ratio, width, label=v)
        axes[1].bar(xs, m_ratio, width, label=v)
    labels = [f"{s[0]}×{s[1]}\n{d}" for s, d in groups]
    for ax, title in zip(axes, ("time / built-in time", "peak memory above inputs / logits size")):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], labels, fontsize=8)
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_ylabel(title)
        ax.set_yscale("log")
    axes[0].legend(fontsize=7, ncol=3)
    axes[0].set_title("label-smoothed cross-entropy, forward + backward (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _parse_shape(text: str) -> tuple[int, int]:
    n, _, c = text.partition("x")
    if not (n.isdigit() and c.isdigit()):
        raise SystemExit(
            f"labelsmooth bench: a shape is written NxC, e.g. 8192x32000, got {text!r}"
        )
    return int(n), int(c)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``labelsmooth bench [--quick] [--shapes ...] [--out DIR]``."""
    p = argparse.ArgumentParser(prog="labelsmooth bench", description=__doc__.split("\n")[0])
    p.add_argument("--one", nargs=6,
                   metavar=("VARIANT", "NxC", "DTYPE", "REPEATS", "THREADS", "MEASURE"),
                   help=argparse.SUPPRESS)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="tiny grid, for smoke tests")
    p.add_argument("--shapes", nargs="*", help="shapes as NxC (default: the issue's four)")
    p.add_argument("--dtypes", nargs="*", default=DTYPES, choices=DTYPES)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--repeats", type=int, default=5, help="timed runs per variant (median)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--merge", action="store_true",
                   help="re-measure only the given shapes/dtypes and merge them into the "
                   "existing cpu.json of --out (other groups are kept)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                   help="where cpu.md, cpu.json and cpu.png are written")  # fmt: skip
    args = p.parse_args(argv)

    if args.one:
        variant, shape, dtype, repeats, threads, measure = args.one
        n, c = _parse_shape(shape)
        print(json.dumps(run_one(variant, n, c, dtype, int(repeats), int(threads), measure)))
        return 0

    if args.quick:
        shapes = [(64, 100), (32, 1031)]
        repeats = 2
    else:
        shapes = [_parse_shape(s) for s in args.shapes] if args.shapes else SHAPES
        repeats = args.repeats
    variants = ["builtin"] + [v for v in args.variants if v != "builtin"]
    results = []
    import torch

    from labelsmooth._dispatch import resolve_impl

    for n, c in shapes:
        for dtype in args.dtypes:
            base = None
            for variant in variants:
                stand_in = torch.empty(1, dtype=getattr(torch, dtype)).expand(n, c)
                if variant == "auto" and resolve_impl("auto", stand_in, soft=False) == "fused":
                    continue  # measured as "fused"
                # millisecond-scale steps need many samples for a stable median
                reps = repeats if n * c <= 8192 * 32000 else max(2, repeats // 2)
                reps = reps * 20 if n * c < 1 << 20 else reps
                r = _subprocess(variant, n, c, dtype, reps, args.threads)
                results.append(r)
                if variant == "builtin":
                    base = r
                print(
                    f"{n:>6}×{c:<7} {dtype:<9} {variant:<17} "
                    f"{_fmt_ratio(r, base, 'time_s'):>26}  {_fmt_ratio(r, base, 'mem')}",
                    flush=True,
                )
    info = machine_info(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "cpu-quick" if args.quick else "cpu"
    if args.merge and (args.out / f"{stem}.json").exists():
        fresh = {(tuple(r["shape"]), r["dtype"]) for r in results}
        old = json.loads((args.out / f"{stem}.json").read_text())
        kept = [r for r in old["results"] if (tuple(r["shape"]), r["dtype"]) not in fresh]
        merged = []  # keep the old order, with each re-measured group in its old place
        for r in old["results"]:
            key = (tuple(r["shape"]), r["dtype"])
            if key in fresh:
                merged += [n for n in results if (tuple(n["shape"]), n["dtype"]) == key]
                fresh.discard(key)
            elif r in kept:
                merged.append(r)
        merged += [n for n in results if (tuple(n["shape"]), n["dtype"]) in fresh]
        results = merged
        info["date"] = f"{old['machine']['date']}; re-measured groups {info['date']}"
    (args.out / f"{stem}.json").write_text(
        json.dumps({"machine": info, "results": results}, indent=1)
    )
    # hand-written analysis kept across regenerations
    notes_path = args.out / f"{stem}-notes.md"
    notes = notes_path.read_text() if notes_path.exists() else ""
    (args.out / f"{stem}.md").write_text(render_markdown(results, info, notes))
    try:
        plot(results, args.out / f"{stem}.png")
    except ImportError:
        print("matplotlib is not installed (pip install 'labelsmooth[plot]'): no plot written")
    print(f"wrote {args.out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
