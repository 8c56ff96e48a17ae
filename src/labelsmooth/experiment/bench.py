"""Benchmark of label-smoothed cross-entropy variants: forward + backward time and peak memory.

Long file: the variants, their subprocess runner, the memory probe and the report of one tool.

Each (variant, shape, dtype) runs in fresh subprocesses so that peak memory is that variant's
alone. Memory is measured on one step from a cold start (labelsmooth's cached gradient buffer
released first with :func:`labelsmooth.empty_cache`). Times are medians of several
steady-state runs after a warm-up, as a training loop sees them (the fused path then reuses
its gradient buffer); every variant is reported as a ratio to the built-in
``F.cross_entropy(label_smoothing=)`` measured in the same invocation (absolute times move on
shared machines, ratios much less). Memory is the peak resident set above the inputs (Linux
``VmHWM`` after resetting it via ``/proc/self/clear_refs``), as a multiple of the logits' size.

Run ``labelsmooth bench``; it writes ``cpu.md``, ``cpu.json`` and ``cpu.png`` into a new folder
``./labelsmooth-bench/<UTC date and time>/`` unless ``--out DIR`` names one (the project's
committed tables are regenerated with ``--out benchmarks/results``, whose hand-written
``cpu-notes.md``, with the performance targets, is appended to the table). The harness uses
only labelsmooth's public API.

A ratio is printed only where the timing can carry it: when the relative spread of the timed
rounds (interquartile range over median, of the variant and the built-in added) is at least
the ratio's distance from 1, the table shows "—" instead (see :func:`ratio_or_dash`).

``--load N`` measures under load: the benchmark itself starts N busy processes (each a Python
loop spinning on one core) before the first variant and stops them after the last, records N
with the machine, shows every time with the range of its rounds, and writes ``cpu-loaded.*``
instead of ``cpu.*`` (so a loaded run never replaces the idle table).

``--quick`` is a **smoke test**, not a measurement: every variant but ``compiled-builtin``
(whose compilation alone takes longer than the whole run) runs at two tiny shapes in this one
process, a few rounds each, to show that each path runs; it prints times without ratios,
measures no memory, and writes ``cpu-quick.*`` labelled as a smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "VARIANTS",
    "SHAPES",
    "QUICK_SHAPES",
    "QUICK_CAVEAT",
    "DEFAULT_OUT",
    "run_one",
    "background_load",
    "recorded_command",
    "loadavg_text",
    "step_peak_bytes",
    "ratio_or_dash",
    "render_markdown",
    "plot",
    "main",
]

EPS = 0.1
#: name -> description. "builtin" is the baseline every ratio refers to.
VARIANTS = {
    "builtin": "F.cross_entropy(label_smoothing=0.1)",
    "compiled-builtin": "torch.compile of the same F.cross_entropy call",
    "reference": "labelsmooth impl='reference' (dense smoothed target)",
    "materialized": "dense smoothed target + soft-target F.cross_entropy (most hand-written ports)",
    "auto": "labelsmooth default impl='auto' (its own row only where it does not run another "
    "measured variant's call)",
    "fused": "labelsmooth impl='fused' (rows by the native C kernel when it is available)",
    "fused-eager": "labelsmooth impl='fused' with labelsmooth.runtime.config.native_kernel = False "
    "(rows by eager torch ops)",
    "fused-inplace": "labelsmooth impl='fused', inplace_backward=True",
    "roofline": "one read + write pass over the logits (copy_ into a preallocated buffer)",
}
SHAPES = [(256, 1000), (4096, 32000), (8192, 32000), (4096, 128256)]
QUICK_SHAPES = [(64, 100), (32, 1031)]
#: the variants --quick leaves out unless named (torch.compile takes 10-20 s to compile)
_QUICK_SKIP = ("compiled-builtin",)
#: timed rounds per variant with --quick (each a fraction of a millisecond)
QUICK_REPEATS = 5
#: printed above the terminal table and the markdown table of --quick
QUICK_CAVEAT = (
    "SMOKE TEST (--quick): each variant ran a few rounds at tiny shapes in one process, to "
    "show that it runs. These times are dominated by per-call overhead and noise; they are not "
    "a measurement, so no ratios and no memory are reported. Run `labelsmooth bench` (or "
    "`make bench`) for numbers."
)
DTYPES = ["float32", "bfloat16"]
#: the default output folder (relative to the current directory); each run makes a new one
DEFAULT_OUT = Path("labelsmooth-bench")
#: the impls that "auto" may choose whose call is exactly another variant's, so that the
#: "auto" row would repeat that row ("torch" is not one: auto adds labelsmooth's checks to it)
_SAME_CALL = {"fused": "fused", "reference": "reference"}


def recorded_command(program: str, argv: Sequence[str], placeholder: str = "OUT") -> str:
    """The command line a benchmark records with its results, without this machine's paths.

    ``program`` starts it (``"python3 benchmarks/gpu_bench.py"``), ``argv`` its arguments,
    quoted for a shell. The value of ``--out`` becomes ``placeholder`` (where a run writes
    is not part of how the numbers were produced); any other absolute path becomes relative
    to the current folder when it lies below it, else ``PATH``.

    Example:
        >>> recorded_command("python3 b.py", ["--out", "/tmp/x", "--iters", "5"])
        'python3 b.py --out OUT --iters 5'
        >>> recorded_command("python3 b.py", ["--out=/tmp/x", "--from", "/elsewhere", "a b"])
        "python3 b.py --out=OUT --from PATH 'a b'"
    """
    here = Path.cwd().resolve()

    def clean(arg: str, after_out: bool) -> str:
        if after_out:
            return placeholder
        if arg.startswith("--out="):
            return "--out=" + placeholder
        if not os.path.isabs(arg):
            return arg
        path = Path(arg).resolve()
        return str(path.relative_to(here)) if path.is_relative_to(here) else "PATH"

    words = [clean(a, i > 0 and argv[i - 1] == "--out") for i, a in enumerate(argv)]
    return " ".join([program, shlex.join(words)]) if words else program


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def step_peak_bytes(step: Callable[[], object]) -> int | None:
    """The peak resident memory one call of ``step`` adds above the memory before it
    (``VmHWM`` after a reset via ``/proc/self/clear_refs``, minus ``VmRSS`` before), after a
    garbage collection; None where Linux cannot reset the peak."""
    gc.collect()
    if not reset_peak():
        return None
    before = rss_kib("VmRSS")
    step()
    return max(0, rss_kib("VmHWM") - before) * 1024


def make_step(variant: str, x, y) -> Callable[[], None]:  # noqa: ANN001
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

    elif variant in ("reference", "fused", "fused-eager", "fused-inplace", "auto"):
        impl = {"fused-inplace": "fused", "fused-eager": "fused"}.get(variant, variant)
        if variant == "fused-eager":  # this process runs one variant: switch it for good
            labelsmooth.runtime.config.native_kernel = False
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

    The result also holds the warnings the first step raised (e.g. labelsmooth's note that the
    native kernel could not be used) and, when labelsmooth has ``chosen_impl``, ``auto_runs``:
    the implementation ``impl="auto"`` would run for these very inputs.
    """
    import warnings

    import torch

    import labelsmooth

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(n, c, generator=g) * 2).to(getattr(torch, dtype))
    y = torch.randint(0, c, (n,), generator=g)
    step = make_step(variant, x, y)
    restore = getattr(step, "restore", lambda: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step()  # warm-up (and compilation)
    # memory: one step from a cold start, so a cached gradient buffer counts as this step's
    peak_ok, peak, before = False, 0, 0
    if measure in ("memory", "both"):
        labelsmooth.empty_cache()
        restore()
        gc.collect()
        peak_ok = reset_peak()
        before = rss_kib("VmRSS")
        step()
        peak = rss_kib("VmHWM") if peak_ok else 0
    times = []  # time: steady state, as in a training loop
    for _ in range(repeats if measure in ("time", "both") else 0):
        restore()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    logits_bytes = x.numel() * x.element_size()
    result = {
        "variant": variant,
        "shape": [n, c],
        "dtype": dtype,
        "time_s": statistics.median(times) if times else None,
        "times_s": times,
        "peak_above_inputs_bytes": max(0, peak - before) * 1024 if peak_ok else None,
        "logits_bytes": logits_bytes,
        "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
    }
    chosen = getattr(labelsmooth, "chosen_impl", None)
    if chosen is not None:  # after the measurements, so that it cannot disturb them
        result["auto_runs"] = chosen(x, y, label_smoothing=EPS)
    return result


def _subprocess(variant: str, n: int, c: int, dtype: str, repeats: int, threads: int) -> dict:
    """Memory in one fresh process, time in another (see :func:`run_one`)."""
    result: dict = {}
    for measure in ("memory", "time"):
        cmd = [
            sys.executable, "-m", "labelsmooth.experiment.bench", "--one", variant,
            f"{n}x{c}", dtype, str(repeats), str(threads), measure,
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if measure == "memory":
            # glibc returns every block of 1 MiB or more to the OS when it is freed, so the
            # resident set follows live memory and VmHWM measures this step's own peak
            env["MALLOC_MMAP_THRESHOLD_"] = "1048576"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            error = proc.stderr[-400:]
            return {"variant": variant, "shape": [n, c], "dtype": dtype, "error": error}
        one = json.loads(proc.stdout.strip().splitlines()[-1])
        if measure == "memory":
            result = one
        else:
            result.update(time_s=one["time_s"], times_s=one["times_s"])
    return result


@contextlib.contextmanager
def background_load(n: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` busy processes (a Python loop spinning on one core each) while the block runs.

    A real CPU load for ``labelsmooth bench --load N``: the processes are started here and
    killed (and waited for) when the block ends, however it ends.

    Example:
        >>> with background_load(1) as procs:
        ...     procs[0].poll() is None  # running
        True
        >>> procs[0].poll() is not None  # stopped
        True
    """
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(n):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", "while True: pass"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def _compiler() -> str:
    """First line of the system C compiler's ``--version`` ($CC, else cc, gcc or clang)."""
    candidates = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    for name in candidates:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            out = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            continue
        first = out.stdout.strip().splitlines()[:1]
        return f"{name}: {first[0]}" if first else name
    return "none found"


def machine_info(threads: int) -> dict:
    """Machine and versions recorded with every result."""
    import numpy
    import torch

    import labelsmooth

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
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
        "c_compiler": _compiler(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": _load_average(),
    }


def loadavg_text() -> str:
    """The 1-, 5- and 15-minute load averages as "a b c" (as in ``/proc/loadavg``), or "n/a"
    where the system does not report them: what a benchmark records beside its numbers."""
    load = _load_average()
    return "n/a" if load is None else " ".join(f"{v:.2f}" for v in load)


def _load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, where the system reports them."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _ok(r: dict | None) -> bool:
    return r is not None and "error" not in r and r.get("time_s") is not None


def _relative_spread(r: dict) -> float:
    """Interquartile range of the timed rounds over their median (0 with fewer than 2)."""
    times = [t for t in r.get("times_s") or () if t is not None]
    if len(times) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    median = statistics.median(times)
    return (q3 - q1) / median if median > 0 else float("inf")


def ratio_or_dash(r: dict, base: dict) -> str:
    """``r``'s time over the built-in's as ``"0.25×"``, or ``"—"`` where noise decides it.

    The ratio's relative uncertainty is taken as the sum of both rows' relative spreads
    (interquartile range over median of their timed rounds); when that is at least the
    ratio's distance from 1, whether the variant is faster or slower than the built-in is
    not measured, and no number is shown. The built-in's own row is always ``"1.00×"``.

    Example:
        >>> base = {"time_s": 2.0, "times_s": [1.9, 2.0, 2.1]}
        >>> ratio_or_dash({"time_s": 0.5, "times_s": [0.5, 0.5, 0.5]}, base)
        '0.25×'
        >>> ratio_or_dash({"time_s": 2.1, "times_s": [1.0, 2.1, 3.0]}, base)
        '—'
    """
    ratio = r["time_s"] / base["time_s"]
    if r is base or r.get("variant") == "builtin":
        return f"{ratio:.2f}×"
    if _relative_spread(r) + _relative_spread(base) >= abs(ratio - 1.0):
        return "—"
    return f"{ratio:.2f}×"


def _fmt_time(r: dict, base: dict | None, quick: bool = False, rounds: bool = False) -> str:
    """The median (and ratio); with ``rounds``, also the fastest and slowest timed round."""
    if "error" in r:
        return "error"
    if not _ok(r):
        return "n/a"
    if quick:
        return f"{r['time_s'] * 1e3:.3f} ms"
    times = [t for t in r.get("times_s") or () if t is not None]
    spread = f"; rounds {min(times) * 1e3:.0f}–{max(times) * 1e3:.0f} ms" if rounds else ""
    if not _ok(base):
        return f"{r['time_s'] * 1e3:.1f} ms (–{spread})"
    return f"{r['time_s'] * 1e3:.1f} ms ({ratio_or_dash(r, base)}{spread})"  # type: ignore[arg-type]


def _fmt_memory(r: dict, quick: bool = False) -> str:
    if "error" in r:
        return "error"
    if quick:
        return "not measured"
    mem = r.get("peak_above_inputs_bytes")
    return "n/a" if mem is None else f"{mem / r['logits_bytes']:.2f}× logits"


def _groups(results: Sequence[dict]) -> list[tuple[tuple[int, int], str]]:
    """The (shape, dtype) groups in the order they first appear."""
    seen: dict[tuple[tuple[int, int], str], None] = {}
    for r in results:
        seen.setdefault(((r["shape"][0], r["shape"][1]), r["dtype"]), None)
    return list(seen)


def _variants_run(results: Sequence[dict]) -> list[str]:
    """The variants with at least one row in ``results``, in :data:`VARIANTS` order."""
    present = {r["variant"] for r in results}
    return [v for v in VARIANTS if v in present] + sorted(present - set(VARIANTS))


# long function: the report's sections in the order a reader sees them
def render_markdown(
    results: Sequence[dict],
    info: dict,
    notes: str = "",
    auto_runs: Sequence[dict] = (),
    quick: bool = False,
) -> str:
    """The results table: per shape and dtype, each measured variant's time (ratio) and memory.

    Args:
        results: the measured rows (one per variant, shape and dtype).
        info: :func:`machine_info`.
        notes: hand-written text appended at the end (the targets live there).
        auto_runs: per group, what ``impl="auto"`` runs and which row measured it.
        quick: the rows come from ``--quick``: a smoke-test title and caveat, times without
            ratios, no memory column values.
    """
    native = info.get("native_kernel")
    native_text = (
        ""
        if native is None
        else f"labelsmooth {info.get('labelsmooth', '?')} with native_kernel={native} "
        f"(C compiler: {info.get('c_compiler', '?')}); "
    )
    load = info.get("load_average")
    load_text = (
        "load average not recorded"
        if not load
        else "load average " + " / ".join(f"{v:.2f}" for v in load) + " (1, 5, 15 min) at the end"
    )
    busy = info.get("background_load") or 0
    if busy:
        load_text += (
            f", {busy} busy background processes started by the benchmark (`--load {busy}`) "
            "included; times are medians with the fastest and slowest round"
        )
    machine = (
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['threads']} threads; "
        f"Python {info['python']}, torch {info['torch']}, numpy {info['numpy']}; "
        f"{info['platform']}; {native_text}measured {info['date']}; {load_text}."
    )
    if quick:
        lines = [
            "# CPU benchmark smoke test (`--quick`): not a measurement",
            "",
            QUICK_CAVEAT,
            "",
            machine,
            "",
            "| shape | dtype | variant | time (median of the rounds) | memory |",
            "|---|---|---|---|---|",
        ]
    else:
        lines = [
            "# CPU benchmark: label-smoothed cross-entropy, forward + backward"
            + (f", under load ({busy} busy processes)" if busy else ""),
            "",
            machine,
            "",
            "Time: median of the timed runs after a warm-up, with the ratio to the built-in "
            'measured in the same invocation; "—" where the rounds\' spread (interquartile '
            "range over median, of the variant and the built-in added) is at least the "
            "ratio's distance from 1. Memory: peak resident memory above the inputs during "
            "one forward + backward (fresh process per variant), as a multiple of the logits' "
            "size. ε = 0.1, uniform smoothing, mean reduction.",
            "",
            "| shape | dtype | variant | time (× built-in) | peak memory above inputs |",
            "|---|---|---|---|---|",
        ]
    keyed = {(tuple(r["shape"]), r["dtype"], r["variant"]): r for r in results}
    for r in results:
        base = keyed.get((tuple(r["shape"]), r["dtype"], "builtin"))
        n, c = r["shape"]
        name = r["variant"]
        if name == "auto" and r.get("auto_runs"):
            name = f"auto (runs {r['auto_runs']})"
        time_cell, memory_cell = _fmt_time(r, base, quick, bool(busy)), _fmt_memory(r, quick)
        lines.append(f"| {n}×{c} | {r['dtype']} | {name} | {time_cell} | {memory_cell} |")
    if auto_runs:
        lines += ["", 'What `impl="auto"` runs (`labelsmooth.chosen_impl`):', ""]
        for a in auto_runs:
            n, c = a["shape"]
            where = (
                f"the same call as the `{a['measured_as']}` row"
                if a.get("measured_as")
                else "its own `auto` row"
            )
            lines.append(f"- {n}×{c} {a['dtype']}: `{a['impl']}` ({where})")
    variants = _variants_run(results)
    lines += ["", "Variants:", ""] + [f"- `{v}`: {VARIANTS.get(v, '')}" for v in variants]
    warned = sorted({w for r in results for w in r.get("warnings", ())})
    if warned:
        lines += ["", "Warnings raised during the runs:", ""] + [f"- {w}" for w in warned]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def _ratios(results: Sequence[dict]) -> tuple[list, list[str], dict[str, tuple[list, list]]]:
    """Per variant that ran (not the built-in): its time and memory ratios in every group."""
    groups = _groups(results)
    keyed = {(tuple(r["shape"]), r["dtype"], r["variant"]): r for r in results}
    series: dict[str, tuple[list, list]] = {}
    for v in _variants_run(results):
        if v == "builtin":
            continue
        t_ratio, m_ratio = [], []
        for shape, dt in groups:
            r, b = keyed.get((shape, dt, v)), keyed.get((shape, dt, "builtin"))
            t = r["time_s"] / b["time_s"] if _ok(r) and _ok(b) else float("nan")  # type: ignore[index]
            mem = r.get("peak_above_inputs_bytes") if _ok(r) else None  # type: ignore[union-attr]
            m_ratio.append(mem / r["logits_bytes"] if mem is not None else float("nan"))  # type: ignore[index]
            t_ratio.append(t)
        if any(x == x for x in t_ratio + m_ratio):  # at least one number (NaN != NaN)
            series[v] = (t_ratio, m_ratio)
    return groups, [v for v in series], series


def plot_figure(results: Sequence[dict]) -> Figure:
    """Bar charts of time and memory ratios to the built-in: one group per shape and dtype, one
    bar per variant that ran (not the built-in itself, which is the dashed line at 1)."""
    from matplotlib.figure import Figure

    groups, variants, series = _ratios(results)
    fig = Figure(figsize=(max(8, 1.8 * len(groups)), 7), layout="constrained")
    axes = fig.subplots(2, 1)
    width = 0.8 / max(1, len(variants))
    for vi, v in enumerate(variants):
        xs = [i + vi * width for i in range(len(groups))]
        axes[0].bar(xs, series[v][0], width, label=v)
        axes[1].bar(xs, series[v][1], width, label=v)
    labels = [f"{s[0]}×{s[1]}\n{d}" for s, d in groups]
    for ax, title in zip(axes, ("time / built-in time", "peak memory above inputs / logits size")):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], labels, fontsize=8)
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_ylabel(title)
    axes[0].set_yscale("log")  # time ratios span 0.01× to 10×; memory ratios include 0
    if variants:
        axes[0].legend(fontsize=7, ncol=3)
    axes[0].set_title("label-smoothed cross-entropy, forward + backward (lower is better)")
    return fig


def plot(results: Sequence[dict], path: Path) -> None:
    """Write :func:`plot_figure` to ``path`` (needs matplotlib)."""
    plot_figure(results).savefig(path, dpi=110)


class _Parser(argparse.ArgumentParser):
    """argparse with the command's error format: one ``labelsmooth: error: …`` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"labelsmooth: error: bench: {message}\n")


def _shape(text: str) -> tuple[int, int]:
    n, _, c = text.partition("x")
    if not (n.isdigit() and c.isdigit() and int(n) > 0 and int(c) > 0):
        raise argparse.ArgumentTypeError(
            f"a shape is written NxC with positive N and C, e.g. 8192x32000, got {text!r}"
        )
    return int(n), int(c)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, else one error naming the value."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``labelsmooth bench``."""
    p = _Parser(prog="labelsmooth bench", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--one", nargs=6,
                   metavar=("VARIANT", "NxC", "DTYPE", "REPEATS", "THREADS", "MEASURE"),
                   help=argparse.SUPPRESS)  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="a smoke test, not a measurement: shapes "
                   f"{' '.join(f'{n}x{c}' for n, c in QUICK_SHAPES)}, {QUICK_REPEATS} rounds, "
                   "every variant but compiled-builtin, all in this process; times without "
                   "ratios, no memory; writes cpu-quick.*")  # fmt: skip
    p.add_argument("--shapes", nargs="+", type=_shape, metavar="NxC",
                   help="shapes as NxC (default: "
                   f"{' '.join(f'{n}x{c}' for n, c in SHAPES)})")  # fmt: skip
    p.add_argument("--dtypes", nargs="+", default=DTYPES, choices=DTYPES,
                   help=f"logits dtypes (default: {' '.join(DTYPES)})")  # fmt: skip
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                   metavar="VARIANT",
                   help=f"which variants (default: all of {', '.join(VARIANTS)}; with --quick "
                   f"all but {', '.join(_QUICK_SKIP)}); builtin is always measured, every "
                   "ratio refers to it")  # fmt: skip
    p.add_argument("--repeats", type=_positive_int, default=None,
                   help=f"timed runs per variant, median reported (default: 5; {QUICK_REPEATS} "
                   "with --quick; 20 times more for millisecond-scale shapes)")  # fmt: skip
    p.add_argument("--threads", type=_positive_int, default=2,
                   help="torch threads per run (default: 2)")  # fmt: skip
    p.add_argument("--load", type=_nonnegative_int, default=0, metavar="N",
                   help="measure under load: start N busy processes (one spinning core each) "
                   "for the whole run and stop them at its end; writes cpu-loaded.* "
                   "(default: 0, no load)")  # fmt: skip
    p.add_argument("--merge", action="store_true",
                   help="re-measure only the given shapes/dtypes and merge them into the "
                   "existing cpu.json of --out (other groups are kept); needs --out")  # fmt: skip
    p.add_argument("--out", type=Path, default=None,
                   help="folder for cpu.md, cpu.json and cpu.png (default: a new folder "
                   f"./{DEFAULT_OUT}/<UTC date-time>; the committed tables: --out "
                   "benchmarks/results)")  # fmt: skip
    return p


def default_out(now: float | None = None) -> Path:
    """A folder that does not exist yet: ``./labelsmooth-bench/<UTC date-time>[-k]``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    out = DEFAULT_OUT / stamp
    k = 1
    while out.exists():
        k += 1
        out = DEFAULT_OUT / f"{stamp}-{k}"
    return out


def _check_out(p: argparse.ArgumentParser, out: Path) -> None:
    """Refuse an output folder that cannot be created or written, before any work."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        p.error(f"--out {str(out)!r}: {str(probe)!r} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        p.error(f"--out {str(out)!r}: {str(probe)!r} is not writable")


def _auto_alias(auto_runs: str | None, variants: Sequence[str]) -> str | None:
    """The measured variant whose call ``impl="auto"`` makes, or None (measure "auto" itself)."""
    if auto_runs is None:
        return None
    alias = _SAME_CALL.get(auto_runs)
    return alias if alias in variants else None


def _print_row(r: dict, base: dict | None, quick: bool = False) -> None:
    n, c = r["shape"]
    runs = r.get("auto_runs") if r["variant"] == "auto" else None
    name = r["variant"] + (f" (runs {runs})" if runs else "")
    time_cell, memory_cell = _fmt_time(r, base, quick), _fmt_memory(r, quick)
    print(f"{f'{n}×{c}':>14} {r['dtype']:<9} {name:<24} {time_cell:>24}  {memory_cell}", flush=True)


def _in_process(variant: str, n: int, c: int, dtype: str, repeats: int, threads: int) -> dict:
    """Time one variant in this process (``--quick``), leaving the process as it was."""
    import torch

    import labelsmooth

    native, torch_threads = labelsmooth.runtime.config.native_kernel, torch.get_num_threads()
    try:
        return run_one(variant, n, c, dtype, repeats, threads, measure="time")
    except Exception as e:  # noqa: BLE001 - reported in the table, as a subprocess's failure is
        return {"variant": variant, "shape": [n, c], "dtype": dtype, "error": repr(e)[-400:]}
    finally:
        labelsmooth.runtime.config.native_kernel = native
        torch.set_num_threads(torch_threads)


def _merge(old: dict, results: list[dict]) -> list[dict]:
    """Old results with each re-measured (shape, dtype) group replaced in its old place."""
    fresh = {(tuple(r["shape"]), r["dtype"]) for r in results}
    merged: list[dict] = []
    for r in old["results"]:
        key = (tuple(r["shape"]), r["dtype"])
        if key in fresh:
            merged += [n for n in results if (tuple(n["shape"]), n["dtype"]) == key]
            fresh.discard(key)
        elif key not in {(tuple(n["shape"]), n["dtype"]) for n in results}:
            merged.append(r)
    return merged + [n for n in results if (tuple(n["shape"]), n["dtype"]) in fresh]


def _run_grid(
    shapes: Sequence[tuple[int, int]],
    dtypes: Sequence[str],
    variants: Sequence[str],
    quick: bool,
    repeats: int,
    threads: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every (shape, dtype, variant), each row printed as it comes; and what auto runs."""
    results: list[dict[str, Any]] = []
    auto_runs: list[dict[str, Any]] = []
    for n, c in shapes:
        for dtype in dtypes:
            base: dict | None = None
            for variant in variants:
                if variant == "auto":
                    runs = base.get("auto_runs") if base else None
                    alias = _auto_alias(runs, variants)
                    if runs is not None:
                        auto_runs.append(
                            {"shape": [n, c], "dtype": dtype, "impl": runs, "measured_as": alias}
                        )
                    if alias is not None:
                        print(f"{f'{n}×{c}':>14} {dtype:<9} {'auto':<24} "
                              f"{f'runs {runs}: see the {alias} row':>24}", flush=True)  # fmt: skip
                        continue
                if quick:  # a smoke test: this process, the rounds as given
                    r = _in_process(variant, n, c, dtype, repeats, threads)
                else:
                    # millisecond-scale steps need many samples for a stable median
                    reps = repeats if n * c <= 8192 * 32000 else max(2, repeats // 2)
                    reps = reps * 20 if n * c < 1 << 20 else reps
                    r = _subprocess(variant, n, c, dtype, reps, threads)
                if variant not in ("builtin", "auto"):
                    r.pop("auto_runs", None)  # recorded once per group, with the baseline
                results.append(r)
                if variant == "builtin":
                    base = r
                _print_row(r, base, quick)
    return results, auto_runs


# long function: the command's arguments, the grid and its writers in one place
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``labelsmooth bench [--quick] [--shapes NxC ...] [--out DIR] ...``."""
    p = build_parser()
    args = p.parse_args(argv)

    if args.one:
        variant, shape, dtype, repeats, threads, measure = args.one
        n, c = _shape(shape)
        print(json.dumps(run_one(variant, n, c, dtype, int(repeats), int(threads), measure)))
        return 0

    if args.merge and args.out is None:
        p.error("--merge needs --out: the folder whose cpu.json the new groups are merged into")
    out: Path = args.out if args.out is not None else default_out()
    _check_out(p, out)
    quick: bool = args.quick
    shapes = args.shapes or (QUICK_SHAPES if quick else SHAPES)
    repeats = args.repeats or (QUICK_REPEATS if quick else 5)
    chosen = args.variants or [v for v in VARIANTS if not (quick and v in _QUICK_SKIP)]
    variants = ["builtin"] + [v for v in chosen if v != "builtin"]

    if quick:
        print(QUICK_CAVEAT, flush=True)
    time_header = "time (median)" if quick else "time (× built-in)"
    memory_header = "memory" if quick else "peak memory above inputs"
    print(f"{'shape':>14} {'dtype':<9} {'variant':<24} {time_header:>24}  {memory_header}",
          flush=True)  # fmt: skip
    with background_load(args.load):
        results, auto_runs = _run_grid(shapes, args.dtypes, variants, quick, repeats, args.threads)
    info = {**machine_info(args.threads), "background_load": args.load}
    out.mkdir(parents=True, exist_ok=True)
    stem = "cpu-quick" if quick else ("cpu-loaded" if args.load else "cpu")
    json_path = out / f"{stem}.json"
    if args.merge and json_path.exists():
        old = json.loads(json_path.read_text())
        results = _merge(old, results)
        fresh = {(tuple(a["shape"]), a["dtype"]) for a in auto_runs}
        auto_runs = [
            a for a in old.get("auto_runs", []) if (tuple(a["shape"]), a["dtype"]) not in fresh
        ] + auto_runs
        info["date"] = f"{old['machine']['date']}; re-measured groups {info['date']}"
    json_path.write_text(
        json.dumps(
            {"machine": info, "smoke_test": quick, "results": results, "auto_runs": auto_runs},
            indent=1,
        )
    )
    # hand-written analysis (and the targets) kept across regenerations
    notes_path = out / f"{stem}-notes.md"
    notes = notes_path.read_text() if notes_path.exists() else ""
    (out / f"{stem}.md").write_text(render_markdown(results, info, notes, auto_runs, quick))
    written = [f"{stem}.md", f"{stem}.json"]
    try:
        if not quick:  # the plot shows ratios, which a smoke test does not have
            plot(results, out / f"{stem}.png")
            written.append(f"{stem}.png")
    except ImportError:
        print("matplotlib is not installed (pip install 'labelsmooth[plot]'): no plot written")
    print(f"wrote {', '.join(written)} into {out}/")
    if quick:
        print("smoke test only: every variant ran; see the caveat above before reading a time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
