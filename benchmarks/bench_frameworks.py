"""The label smoothing of the frameworks side by side: time and peak memory against the built-in.

Forward + backward (gradient with respect to the logits) of the label-smoothed loss, ε = 0.1,
class-index targets, float32 on CPU, at 8192×32000 (a language-model batch) and 256×1000
(an ImageNet-sized classifier), one row per variant:

* ``builtin``: ``F.cross_entropy(label_smoothing=0.1)``, the baseline of every ratio
  (measured in the same invocation);
* ``labelsmooth-auto`` / ``labelsmooth-fused``: ``labelsmooth.cross_entropy`` with
  ``impl="auto"`` (what it chose is recorded) and ``impl="fused"``;
* ``labelsmooth-trainer``: the Trainer adapter
  ``labelsmooth.integrations.transformers.LabelSmoothingLoss(0.1,
  task="token_classification")`` with ``num_items_in_batch`` (sum, divide);
* ``hf-labelsmoother``: Transformers' ``LabelSmoother(epsilon=0.1)``, what
  ``TrainingArguments(label_smoothing_factor=0.1)`` runs;
* ``timm``: timm's ``LabelSmoothingCrossEntropy(0.1)``: from ``timm.loss`` if it imports,
  else its file ``timm/loss/cross_entropy.py`` loaded by path (timm's package ``__init__``
  needs torchvision, not installable beside this CPU torch), else its formula restated
  (``timm-restated``); the row says which;
* ``materialized``: a dense smoothed target + soft-target ``F.cross_entropy`` (most
  hand-written ports).

Measurement, with the machinery of ``labelsmooth.experiment.bench`` (its step builder for the
built-in, labelsmooth and materialized rows, its resident-set probes, its machine record).
Memory: each (variant, shape) in a fresh subprocess in which glibc returns every block of
1 MiB or more to the system (so the resident set follows live memory); the code paths are
warmed on an 8-row input, labelsmooth's cached buffers are released, then the resident set is
read, the peak reset (``/proc/self/clear_refs``) and two full-size steps run; the peak above
that state counts everything the steps allocate, including buffers a variant caches for the
next step. Time: one more fresh subprocess per shape builds every variant's step, warms each
once, then runs ``--repeats`` rounds in which every variant takes one step in turn; the median
per variant is reported, as a ratio to the built-in's median. Interleaving matters on a shared
machine: the load of other processes changes over minutes, and one-process-per-variant timing
measured the same built-in step at ratios that moved by 2× between variants (first run of
2026-11-30); in rounds every variant sees the same load. The load average is recorded before
and after the run.

Run: python benchmarks/bench_frameworks.py [--shapes 256x1000 ...] [--repeats 5] [--out DIR]
The default --out is a new folder ./labelsmooth-bench/frameworks-<UTC date-time>/; pass
``--out benchmarks/results`` to regenerate the committed frameworks.md / frameworks.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# the cross-entropy benchmark's step builder, resident-set probes and machine record
from labelsmooth.experiment import bench as ls_bench
from labelsmooth.experiment.bench import loadavg_text, machine_info, step_peak_bytes

EPS = 0.1
SHAPES = [(8192, 32000), (256, 1000)]
VARIANTS = {
    "builtin": "F.cross_entropy(label_smoothing=0.1)",
    "labelsmooth-auto": "labelsmooth.cross_entropy(label_smoothing=0.1), impl='auto'",
    "labelsmooth-fused": "labelsmooth.cross_entropy(label_smoothing=0.1), impl='fused'",
    "labelsmooth-trainer": "integrations.transformers.LabelSmoothingLoss(0.1), "
    "num_items_in_batch given",
    "hf-labelsmoother": "transformers LabelSmoother(epsilon=0.1) (label_smoothing_factor)",
    "timm": "timm LabelSmoothingCrossEntropy(smoothing=0.1)",
    "materialized": "dense smoothed target + soft-target F.cross_entropy",
}
#: the variants whose step is labelsmooth.experiment.bench's own (its variant names)
_SHARED = {
    "builtin": "builtin",
    "labelsmooth-auto": "auto",
    "labelsmooth-fused": "fused",
    "materialized": "materialized",
}


def _timm_loss() -> tuple[Callable, str]:
    """timm's LabelSmoothingCrossEntropy class and where it came from."""
    try:
        from timm.loss import LabelSmoothingCrossEntropy

        return LabelSmoothingCrossEntropy, "timm.loss"
    except Exception:  # noqa: BLE001 - absent, or its __init__ fails without torchvision
        pass
    spec = importlib.util.find_spec("timm")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "loss" / "cross_entropy.py"
        if path.is_file():
            file_spec = importlib.util.spec_from_file_location("_timm_cross_entropy", path)
            if file_spec is not None and file_spec.loader is not None:
                module = importlib.util.module_from_spec(file_spec)
                file_spec.loader.exec_module(module)
                return module.LabelSmoothingCrossEntropy, "timm/loss/cross_entropy.py by path"

    import torch
    import torch.nn.functional as F

    class Restated(torch.nn.Module):
        """timm's definition: mean of (1−ε)(−log p_y) + ε·mean_k(−log p_k)."""

        def __init__(self, smoothing: float) -> None:
            super().__init__()
            self.smoothing = smoothing

        def forward(self, x, y):  # noqa: ANN001
            logp = F.log_softmax(x, dim=-1)
            nll = -logp.gather(-1, y[:, None])[:, 0]
            return ((1 - self.smoothing) * nll - self.smoothing * logp.mean(-1)).mean()

    return Restated, "restated formula (timm not installed)"


def make_step(variant: str, x, y) -> tuple[Callable[[], None], str]:  # noqa: ANN001
    """(one forward + backward of ``variant``, a note on what ran)."""
    import torch

    if variant in _SHARED:
        return ls_bench.make_step(_SHARED[variant], x, y), ""
    if variant == "hf-labelsmoother":
        from transformers.trainer_pt_utils import LabelSmoother

        smoother = LabelSmoother(epsilon=EPS)

        def loss_fn(inp):  # noqa: ANN001
            return smoother((inp,), y)

        note = ""
    elif variant == "labelsmooth-trainer":
        from labelsmooth.integrations.transformers import LabelSmoothingLoss

        adapter = LabelSmoothingLoss(EPS, task="token_classification")
        count = int((y != -100).sum())

        def loss_fn(inp):  # noqa: ANN001
            return adapter((inp,), y, num_items_in_batch=torch.tensor(count))

        note = ""
    elif variant == "timm":
        cls, note = _timm_loss()
        criterion = cls(smoothing=EPS)

        def loss_fn(inp):  # noqa: ANN001
            return criterion(inp, y)

    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)}")
    leaf = x.detach().requires_grad_(True)

    def step() -> None:
        (grad,) = torch.autograd.grad(loss_fn(leaf), leaf)
        del grad

    return step, note


def run_memory(variant: str, n: int, c: int) -> dict:
    """Peak memory of one variant in this process (a fresh one; see the module docstring)."""
    import torch

    import labelsmooth

    x, y = _inputs(n, c)
    small, _ = make_step(variant, x[:8].clone(), y[:8].clone())
    small()  # code paths (imports, the C kernel, thread pool) warm; no full-size buffer
    del small
    step, note = make_step(variant, x, y)
    labelsmooth.empty_cache()

    def two_steps() -> None:
        step()  # the first step: its cached buffers are part of the peak
        step()

    result: dict = {"variant": variant, "shape": [n, c], "dtype": "float32"}
    result["peak_above_before_bytes"] = step_peak_bytes(two_steps)
    result["logits_bytes"] = x.numel() * x.element_size()
    if variant == "labelsmooth-auto":
        result["auto_runs"] = labelsmooth.chosen_impl(x, y, label_smoothing=EPS)
    if note:
        result["note"] = note
    del torch
    return result


def run_times(variants: list[str], n: int, c: int, rounds: int) -> dict[str, list[float]]:
    """Step times of every variant, interleaved in ``rounds`` rounds (a fresh process)."""
    x, y = _inputs(n, c)
    steps = {v: make_step(v, x, y)[0] for v in variants}
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - t0)
    return times


def _inputs(n: int, c: int):  # noqa: ANN202
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(n, c, generator=g) * 2, torch.randint(0, c, (n,), generator=g)


def _subprocess(args: list[str], threads: int, memory: bool) -> dict:
    """Run ``--one ARGS`` in a fresh interpreter; its last stdout line is JSON."""
    cmd = [sys.executable, __file__, "--threads", str(threads), "--one", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if memory:
        env["MALLOC_MMAP_THRESHOLD_"] = "1048576"  # as labelsmooth.experiment.bench does
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr[-600:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(r: dict, base: dict | None) -> tuple[str, str, str]:
    if "error" in r:
        return "error", "error", ""
    t = r["time_s"]
    ratio = f"{t / base['time_s']:.2f}×" if base and "time_s" in base else "–"
    mem = r.get("peak_above_before_bytes")
    mem_text = "n/a" if mem is None else f"{mem / r['logits_bytes']:.2f}× ({mem / 2**20:.0f} MiB)"
    return f"{t * 1e3:.1f} ms", ratio, mem_text


def render_markdown(results: list[dict], info: dict, loads: tuple[str, str]) -> str:
    lines = [
        "# Framework label smoothing on CPU: time and peak memory against the built-in",
        "",
        "Forward + backward (gradient of the logits), ε = 0.1, class-index targets, float32. "
        "Time: median step over interleaved rounds (one step of every variant per round, one "
        "process per shape), ratio to `builtin`. Memory: peak resident "
        "set above the state before the first step (two steps; cached buffers count), as a "
        "multiple of the logits' size. Written by `python benchmarks/bench_frameworks.py "
        f"--threads {info['threads']} --out benchmarks/results`.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['threads']} torch threads; "
        f"torch {info['torch']}, Python {info['python']}, labelsmooth {info['labelsmooth']}, "
        f"transformers {info.get('transformers', 'n/a')}, timm {info.get('timm', 'n/a')}; "
        f"{info['platform']}; {info['date']}. Load average (1, 5, 15 min) before: {loads[0]}; "
        f"after: {loads[1]} (a shared 2-core machine: absolute times move, ratios less).",
        "",
    ]
    for n, c in sorted({tuple(r["shape"]) for r in results}, key=lambda s: -s[0] * s[1]):
        group = [r for r in results if tuple(r["shape"]) == (n, c)]
        base = next((r for r in group if r["variant"] == "builtin" and "error" not in r), None)
        lines += [
            f"## {n} × {c}",
            "",
            "| variant | what | time | × built-in | peak memory above before |",
            "|---|---|---|---|---|",
        ]
        for r in group:
            what = VARIANTS[r["variant"]]
            if r.get("auto_runs"):
                what += f" (ran impl={r['auto_runs']!r})"
            if r.get("note"):
                what += f" [{r['note']}]"
            t, ratio, mem = _row(r, base)
            lines.append(f"| {r['variant']} | {what} | {t} | {ratio} | {mem} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--shapes", nargs="+", default=[f"{n}x{c}" for n, c in SHAPES])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--repeats", type=int, default=5, help="rounds (×20 below 2**20 elements)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.one:  # internal: ["memory", VARIANT, NxC] or ["time", NxC, ROUNDS, VARIANT...]
        import torch

        torch.set_num_threads(args.threads)
        if args.one[0] == "memory":
            n, c = (int(v) for v in args.one[2].split("x"))
            print(json.dumps(run_memory(args.one[1], n, c)))
        else:
            n, c = (int(v) for v in args.one[1].split("x"))
            print(json.dumps(run_times(args.one[3:], n, c, int(args.one[2]))))
        return 0
    try:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
        assert all(len(s) == 2 and min(s) > 0 for s in shapes)
    except (ValueError, AssertionError):
        p.error(f"--shapes must be NxC with positive integers, got {args.shapes}")
    out = args.out or Path("labelsmooth-bench") / time.strftime(
        "frameworks-%Y%m%d-%H%M%S", time.gmtime()
    )
    variants = ["builtin"] + [v for v in args.variants if v != "builtin"]
    load_before = loadavg_text()
    results = []
    for n, c in shapes:
        rounds = args.repeats * 20 if n * c < 1 << 20 else args.repeats
        times = _subprocess(["time", f"{n}x{c}", str(rounds), *variants], args.threads, False)
        group = []
        for variant in variants:
            r = {"variant": variant, "shape": [n, c], "dtype": "float32"}
            r.update(_subprocess(["memory", variant, f"{n}x{c}"], args.threads, True))
            if "error" in times:
                r["error"] = times["error"]
            elif "error" not in r:
                r["time_s"] = statistics.median(times[variant])
                r["times_s"] = times[variant]
            group.append(r)
        base = group[0]
        for r in group:
            t, ratio, mem = _row(r, base)
            print(f"{n}x{c} {r['variant']:<20} {t:>10} {ratio:>7}  {mem}", flush=True)
        results += group
    info = machine_info(args.threads)
    for name in ("transformers", "timm"):
        if importlib.util.find_spec(name) is not None:
            from importlib.metadata import version

            info[name] = version(name)
    loads = (load_before, loadavg_text())
    info["loadavg_before_after"] = list(loads)

    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "results": results}
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    (out / "frameworks.json").write_text(text, encoding="utf-8")
    (out / "frameworks.md").write_text(render_markdown(results, info, loads), encoding="utf-8")
    print(f"wrote frameworks.md, frameworks.json into {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
