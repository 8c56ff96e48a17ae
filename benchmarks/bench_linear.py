"""Linear head + label-smoothed cross-entropy: time and peak memory against the built-in.

Forward + backward of ``loss(F.linear(hidden, weight), target)`` with ε = 0.1 (uniform, mean,
no bias, as in an LM head), gradients for ``hidden`` and ``weight``, float32 on CPU:

* ``builtin``: ``F.cross_entropy(F.linear(hidden, weight), target, label_smoothing=0.1)``,
  the baseline every ratio refers to (measured in the same invocation);
* ``compiled``: ``torch.compile`` of that composition;
* ``chunked``: ``labelsmooth.linear_cross_entropy(..., impl="chunked")`` with its default
  chunk size (``--chunk-sizes`` adds variants with explicit sizes).

Each variant runs in a fresh subprocess, twice: once for memory (glibc told to return every
block of 1 MiB or more to the system, so the resident set follows live memory; one step after
a warm-up, peak = Linux ``VmHWM`` after a reset via ``/proc/self/clear_refs``, minus the
resident set before the step, which holds the inputs and parameters) and once for time
(median of ``--repeats`` steps after a warm-up, the allocator a training loop has). The
gradients of ``hidden`` and ``weight`` are returned by every variant and counted in the raw
peak; "net" subtracts their size, which is the issue's measure ("peak memory above inputs,
parameters and their gradients").

Run: python benchmarks/bench_linear.py [--shapes 2048x512x128256 ...] [--out DIR]
The default --out is a new folder ./labelsmooth-bench/linear-<UTC date-time>/; pass
``--out benchmarks/results`` to regenerate the committed linear-cpu.md / linear-cpu.json.
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

# the resident-set probes of the cross-entropy benchmark (Linux /proc), not a second copy
from labelsmooth.experiment.bench import loadavg_text, recorded_command, step_peak_bytes

EPS = 0.1
SHAPES = [(2048, 512, 128256), (4096, 1024, 32000)]
VARIANTS = {
    "builtin": "F.linear + F.cross_entropy(label_smoothing=0.1)",
    "compiled": "torch.compile of the same composition",
    "chunked": "labelsmooth.linear_cross_entropy(impl='chunked'), default chunk size",
}
#: Issue 12's targets at this shape (CPU, float32).
TARGET_SHAPE = (2048, 512, 128256)
TARGET_MEMORY = 0.1  # net peak ≤ 1/10 of the built-in's
TARGET_TIME = 1.1  # time ≤ 1.1× the built-in's


def make_step(variant: str, h, w, y) -> Callable[[], None]:  # noqa: ANN001
    """One forward + backward of ``variant``; the gradients are computed and dropped."""
    import torch
    import torch.nn.functional as F

    import labelsmooth

    def composition(hh, ww):  # noqa: ANN001
        return F.cross_entropy(F.linear(hh, ww), y, label_smoothing=EPS)

    if variant == "builtin":
        loss_fn = composition
    elif variant == "compiled":
        loss_fn = torch.compile(composition)
    elif variant == "chunked" or variant.startswith("chunked-"):
        chunk = None if variant == "chunked" else int(variant.split("-", 1)[1])

        def loss_fn(hh, ww):  # noqa: ANN001
            return labelsmooth.linear_cross_entropy(
                hh, ww, y, label_smoothing=EPS, chunk_size=chunk, impl="chunked"
            )

    else:
        raise ValueError(f"unknown variant {variant!r}")

    def step() -> None:
        grads = torch.autograd.grad(loss_fn(h, w), [h, w])
        del grads

    return step


def run_one(variant: str, n: int, hdim: int, v: int, repeats: int, threads: int, measure: str):
    """Measure one variant in this process (called in a fresh subprocess)."""

    import torch

    import labelsmooth

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, hdim, generator=g).requires_grad_(True)
    w = (torch.randn(v, hdim, generator=g) / hdim**0.5).requires_grad_(True)
    y = torch.randint(0, v, (n,), generator=g)
    step = make_step(variant, h, w, y)
    step()  # warm-up (and compilation)
    result: dict = {"variant": variant, "shape": [n, hdim, v]}
    if measure == "memory":
        labelsmooth.empty_cache()
        result["peak_above_inputs_bytes"] = step_peak_bytes(step)
    else:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        result["time_s"] = statistics.median(times)
        result["times_s"] = times
    return result


def _subprocess(variant: str, shape: tuple[int, int, int], repeats: int, threads: int) -> dict:
    n, hdim, v = shape
    result: dict = {"variant": variant, "shape": [n, hdim, v]}
    for measure in ("memory", "time"):
        cmd = [sys.executable, __file__, "--one", variant, f"{n}x{hdim}x{v}", str(repeats),
               str(threads), measure]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if measure == "memory":
            env["MALLOC_MMAP_THRESHOLD_"] = "1048576"
        load = loadavg_text()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            return {**result, "error": proc.stderr[-600:]}
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        result[f"loadavg_before_{measure}"] = load
    grads = (n * hdim + v * hdim) * 4
    result["gradients_bytes"] = grads
    result["logits_bytes"] = n * v * 4
    peak = result.get("peak_above_inputs_bytes")
    result["net_peak_bytes"] = None if peak is None else max(0, peak - grads)
    return result


def machine_info(threads: int) -> dict:
    import numpy
    import torch

    import labelsmooth

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "labelsmooth": labelsmooth.__version__,
        "native_kernel": labelsmooth.runtime.config.native_kernel,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _mib(b: float | None) -> str:
    return "n/a" if b is None else f"{b / 2**20:.0f} MiB"


def render(results: Sequence[dict], info: dict, command: str, loads: tuple[str, str]) -> str:
    lines = [
        "# CPU benchmark: linear head + label-smoothed cross-entropy, forward + backward",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['threads']} threads; "
        f"Python {info['python']}, torch {info['torch']}, numpy {info['numpy']}, labelsmooth "
        f"{info['labelsmooth']} (native kernel: {info['native_kernel']}); {info['platform']}; "
        f"measured {info['date']}. Load average (1, 5, 15 min) at the start: {loads[0]}; at "
        f"the end: {loads[1]}.",
        "",
        "float32, ε = 0.1, uniform, mean, no bias; gradients of hidden and weight. Time: median "
        "of the timed steps after a warm-up, with the ratio to the built-in. Memory: peak "
        "resident memory above the inputs and parameters during one step (fresh process); "
        "net = that minus the gradients of hidden and weight (which every variant returns).",
        "",
        "| N × H × V | variant | time (× built-in) | peak above inputs | net of gradients "
        "(× built-in's net) |",
        "|---|---|---|---|---|",
    ]
    base = {tuple(r["shape"]): r for r in results if r["variant"] == "builtin"}
    for r in results:
        shape = tuple(r["shape"])
        b = base.get(shape)
        label = "×".join(str(s) for s in shape)
        if "error" in r:
            lines.append(f"| {label} | {r['variant']} | error | error | error |")
            continue
        t = f"{r['time_s'] * 1e3:.0f} ms"
        if b and "error" not in b:
            t += f" ({r['time_s'] / b['time_s']:.2f}×)"
        net = _mib(r["net_peak_bytes"])
        if b and "error" not in b and r["net_peak_bytes"] is not None and b["net_peak_bytes"]:
            net += f" ({r['net_peak_bytes'] / b['net_peak_bytes']:.3f}×)"
        lines.append(
            f"| {label} | {r['variant']} | {t} | {_mib(r['peak_above_inputs_bytes'])} | {net} |"
        )
    lines += ["", "Variants:", ""] + [
        f"- `{k}`: {_describe(k)}" for k in dict.fromkeys(r["variant"] for r in results)
    ]
    lines += ["", "## Targets (issue 12)", ""] + check_targets(results)
    return "\n".join(lines) + "\n"


def _describe(variant: str) -> str:
    if variant in VARIANTS:
        return VARIANTS[variant]
    return f"labelsmooth.linear_cross_entropy(impl='chunked', chunk_size={variant[8:]})"


def check_targets(results: Sequence[dict]) -> list[str]:
    keyed = {(tuple(r["shape"]), r["variant"]): r for r in results if "error" not in r}
    b, c = keyed.get((TARGET_SHAPE, "builtin")), keyed.get((TARGET_SHAPE, "chunked"))
    if not (b and c):
        return ["- (the target shape was not part of this run)"]
    out = []
    t = c["time_s"] / b["time_s"]
    out.append(
        f"- {'PASS' if t <= TARGET_TIME else 'MISS'}: 2048×512×128256 `chunked` time ≤ "
        f"{TARGET_TIME}× built-in: {t:.2f}×"
    )
    if c["net_peak_bytes"] is not None and b["net_peak_bytes"]:
        m = c["net_peak_bytes"] / b["net_peak_bytes"]
        out.append(
            f"- {'PASS' if m <= TARGET_MEMORY else 'MISS'}: 2048×512×128256 `chunked` peak "
            f"memory above inputs, parameters and gradients ≤ {TARGET_MEMORY}× built-in's: "
            f"{m:.3f}× ({_mib(c['net_peak_bytes'])} vs {_mib(b['net_peak_bytes'])})"
        )
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"bench_linear: error: {message}\n")
        raise SystemExit(2)


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"a shape is NxHxV, e.g. 2048x512x128256, got {text!r}")
    n, hdim, v = (int(p) for p in parts)
    return n, hdim, v


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    p = _Parser(prog="bench_linear.py", description=__doc__.split("\n")[0])
    p.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    p.add_argument("--shapes", nargs="+", type=_shape, default=SHAPES, metavar="NxHxV")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--chunk-sizes", nargs="*", type=_positive, default=[],
                   help="extra chunked variants with these chunk sizes")  # fmt: skip
    p.add_argument("--repeats", type=_positive, default=3, help="timed steps (median)")
    p.add_argument("--threads", type=_positive, default=2)
    p.add_argument("--out", type=Path, default=None,
                   help="folder for linear-cpu.md/json (default: ./labelsmooth-bench/"
                   "linear-<UTC date-time>/)")  # fmt: skip
    args = p.parse_args(argv)
    if args.one:
        variant, shape, repeats, threads, measure = args.one
        n, hdim, v = _shape(shape)
        print(json.dumps(run_one(variant, n, hdim, v, int(repeats), int(threads), measure)))
        return 0
    out = args.out or Path("labelsmooth-bench") / time.strftime(
        "linear-%Y%m%d-%H%M%S", time.gmtime()
    )
    if out.exists() and not out.is_dir():
        p.error(f"--out {str(out)!r} exists and is not a folder")
    command = recorded_command("python benchmarks/bench_linear.py", argv or sys.argv[1:])
    variants = ["builtin"] + [v for v in args.variants if v != "builtin"]
    variants += [f"chunked-{c}" for c in args.chunk_sizes]
    load_start = loadavg_text()
    results = []
    for shape in args.shapes:
        base = None
        for variant in variants:
            r = _subprocess(variant, shape, args.repeats, args.threads)
            results.append(r)
            if variant == "builtin":
                base = r
            if "error" in r:
                print(f"{shape} {variant}: error: {r['error'].strip()[-300:]}", flush=True)
                continue
            ratio = f"{r['time_s'] / base['time_s']:.2f}×" if base and "error" not in base else "–"
            print(
                f"{'x'.join(map(str, shape)):>16} {variant:<14} {r['time_s'] * 1e3:9.0f} ms "
                f"({ratio})  peak {_mib(r['peak_above_inputs_bytes'])}, net "
                f"{_mib(r['net_peak_bytes'])}  load {r.get('loadavg_before_time')}",
                flush=True,
            )
    load_end = loadavg_text()
    info = machine_info(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    (out / "linear-cpu.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": info,
                "loadavg": [load_start, load_end],
                "results": results,
            },
            indent=1,
        )  # fmt: skip
    )
    (out / "linear-cpu.md").write_text(render(results, info, command, (load_start, load_end)))
    print("\n".join(check_targets(results)))
    print(f"wrote {out / 'linear-cpu.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
