"""Compiled training steps: labelsmooth against F.cross_entropy, both under torch.compile.

Long file: three comparisons, their memory subprocess, the report and the verdicts of one tool.

Three comparisons, ε = 0.1, float32, gradients of every parameter, one SGD update per step:

(a) **MLP step** 784-1200-1200-10 (ReLU), batch 128: the compiled step with
    ``labelsmooth.cross_entropy(label_smoothing=0.1)`` (impl auto; also ``convention="others"``)
    against the same compiled step with ``F.cross_entropy(label_smoothing=0.1)``.
    Target: ≤ 1.05× the compiled built-in's time.
(b) **LM head** 2048 tokens × H 512 × V 32000: the compiled step with
    ``labelsmooth.linear_cross_entropy(hidden, weight, target, label_smoothing=0.1)`` against
    compiled ``F.linear`` + ``F.cross_entropy``; gradients of hidden and weight, SGD on weight.
    Targets: time ≤ 1.0×, peak memory of a step ≤ 0.5× the compiled built-in's.
(c) **eager vs compiled labelsmooth**: the steps of (a) and (b) with labelsmooth, not compiled
    (and the built-in's eager MLP step).

``--parts mlp`` runs (a) + (c) at the MLP only, ``--parts lm`` (b) + (c) at the LM head only;
``--backend eager`` traces with Dynamo but generates no code (a smoke test: the targets are
checked only with Inductor, torch.compile's default, at the full shapes).

How a step is compiled: ``loss.backward()`` inside a compiled region always splits the graph
(Dynamo does not trace it), so a step is two compiled regions, the same for every variant:
forward + loss (``torch.compile(fullgraph=True)``; if that raises, ``fullgraph=False`` and the
reason is recorded) and the SGD update (``torch._foreach_add_``, ``fullgraph=True``); the
backward between them runs the backward graph AOTAutograd compiled with the forward region.
Eager variants run the same two functions uncompiled.

Time: interleaved rounds in one process (each round runs every variant of a comparison in a
shuffled order; a round's ratio is the variant's time over the baseline's in that round; the
tables give the median ratio, the quartiles of the per-round ratios, and each variant's median
and best time per step). On CPU the same rounds also record the process's CPU time
(``time.process_time``), whose ratio is what the step costs the machine: on a shared machine
wall time also counts the time other processes hold the cores. Compilation is excluded:
every variant is warmed up first (3 steps); the first call (which compiles, from an empty
Inductor cache unless ``--inductor-cache shared``) is reported separately.

Peak memory (b): one fresh subprocess per variant (a process's peak resident set only grows):
warm-up, then one step; CPU: Linux ``VmHWM`` after a reset via ``/proc/self/clear_refs``
minus the resident set before the step (glibc told to return blocks ≥ 1 MiB to the system,
so the resident set follows live memory); CUDA: ``torch.cuda.max_memory_allocated`` minus the
allocated memory before the step.

    python benchmarks/bench_compile.py --out benchmarks/results      # CPU: compile.{md,json}
    python benchmarks/bench_compile.py --device cuda --out DIR        # compile-cuda.{md,json}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import torch
import torch.nn.functional as F
from torch import nn

import labelsmooth

# the resident-set probes of the cross-entropy benchmark (Linux /proc), not a second copy
from labelsmooth.experiment.bench import machine_info as ls_machine_info
from labelsmooth.experiment.bench import step_peak_bytes

EPS = 0.1
LR = 0.01
WARMUP = 3
MLP_FULL = (128, (784, 1200, 1200, 10))  # batch, layer widths
MLP_QUICK = (16, (64, 32, 32, 10))
LM_FULL = (2048, 512, 32000)  # tokens N, hidden H, vocabulary V
LM_QUICK = (64, 32, 500)
TARGET_MLP = 1.05  # compiled labelsmooth step ≤ 1.05× the compiled built-in step
TARGET_LM_TIME = 1.0
TARGET_LM_MEMORY = 0.5
BACKENDS = ("inductor", "aot_eager", "eager")  # torch.compile(backend=...)
PARTS = ("mlp", "lm")

MLP_BASE = "F.cross_entropy, compiled"
MLP_VARIANTS = {
    MLP_BASE: ("builtin", True),
    "labelsmooth auto, compiled": ("uniform", True),
    "labelsmooth auto others, compiled": ("others", True),
    "F.cross_entropy, eager": ("builtin", False),
    "labelsmooth auto, eager": ("uniform", False),
}
LM_BASE = "F.linear + F.cross_entropy, compiled"
LM_COMPILED = "linear_cross_entropy, compiled"
LM_VARIANTS = {
    LM_BASE: ("builtin", True),
    LM_COMPILED: ("labelsmooth", True),
    "linear_cross_entropy, eager": ("labelsmooth", False),
}


# --------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _sgd(params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    with torch.no_grad():
        torch._foreach_add_(params, grads, alpha=-LR)


@dataclass
class Step:
    """One variant's training step, built and warmed up."""

    run: Callable[[], None]
    fullgraph: bool | None  # the forward region compiled whole (None: eager)
    fallback_reason: str | None  # why fullgraph=True was not used
    first_call_s: float  # the first step (compilation included for a compiled variant)
    graph_breaks: int | None  # torch._dynamo.explain of the forward region (None: eager)


@dataclass
class Case:
    """What a step needs: ``forward(*args) -> loss``, the parameters SGD updates, and every
    leaf whose gradient is dropped after the step."""

    forward: Callable[..., torch.Tensor]
    args: tuple[torch.Tensor, ...]
    params: list[torch.Tensor]
    leaves: list[torch.Tensor]
    compiled: bool


def graph_breaks(cases: dict[str, Case]) -> dict[str, int | None]:
    """``torch._dynamo.explain`` of each compiled forward region, then a Dynamo reset (so the
    timed steps compile from scratch; call this before building any step)."""
    out = {
        k: torch._dynamo.explain(c.forward)(*c.args).graph_break_count if c.compiled else None
        for k, c in cases.items()
    }
    torch._dynamo.reset()
    return out


def build(case: Case, breaks: int | None, device: str, backend: str = "inductor") -> Step:
    """The step of ``case``, run ``WARMUP`` times; the first call is timed. ``backend`` is
    ``torch.compile``'s (``inductor``, its default, generates code; ``eager`` only traces)."""
    forward, args, params, leaves, compiled = (
        case.forward, case.args, case.params, case.leaves, case.compiled
    )  # fmt: skip
    update = torch.compile(_sgd, fullgraph=True, backend=backend) if compiled else _sgd
    reason = None

    def make(fwd: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            fwd(*args).backward()
            update(params, [p.grad for p in params])  # type: ignore[misc]
            for t in leaves:
                t.grad = None

        return run

    fullgraph: bool | None = None
    t0 = time.perf_counter()
    if compiled:
        fullgraph = True
        run = make(torch.compile(forward, fullgraph=True, backend=backend))
        try:
            run()
        except Exception as e:  # a graph break under fullgraph=True: compile it in pieces
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
            for t in leaves:
                t.grad = None
            fullgraph = False
            t0 = time.perf_counter()
            run = make(torch.compile(forward, fullgraph=False, backend=backend))
            run()
    else:
        run = make(forward)
        run()
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(WARMUP - 1):
        run()
    _sync(device)
    return Step(run, fullgraph, reason, first, breaks)


def _loss_fn(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if kind == "builtin":
        return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=EPS)
    return lambda logits, y: cast(  # a tensor: return_nll is False
        torch.Tensor, labelsmooth.cross_entropy(logits, y, label_smoothing=EPS, convention=kind)
    )


def mlp_case(variant: str, quick: bool, device: str) -> Case:
    kind, compiled = MLP_VARIANTS[variant]
    batch, widths = MLP_QUICK if quick else MLP_FULL
    torch.manual_seed(0)  # the same weights and data for every variant
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    model = nn.Sequential(*layers).to(device)
    x = torch.randn(batch, widths[0], device=device)
    y = torch.randint(0, widths[-1], (batch,), device=device)
    loss = _loss_fn(kind)

    def forward(xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return loss(model(xx), yy)

    params: list[torch.Tensor] = list(model.parameters())
    return Case(forward, (x, y), params, params, compiled)


def lm_inputs(quick: bool, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, hdim, v = LM_QUICK if quick else LM_FULL
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, hdim, generator=g).to(device).requires_grad_(True)
    w = (torch.randn(v, hdim, generator=g) / hdim**0.5).to(device).requires_grad_(True)
    y = torch.randint(0, v, (n,), generator=g).to(device)
    return h, w, y


def lm_case(variant: str, quick: bool, device: str) -> Case:
    kind, compiled = LM_VARIANTS[variant]
    h, w, y = lm_inputs(quick, device)
    if kind == "builtin":

        def forward(hh: torch.Tensor, ww: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(F.linear(hh, ww), yy, label_smoothing=EPS)

    else:

        def forward(hh: torch.Tensor, ww: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
            out = labelsmooth.linear_cross_entropy(hh, ww, yy, label_smoothing=EPS)
            return cast(torch.Tensor, out)  # a tensor: return_nll is False

    return Case(forward, (h, w, y), [w], [h, w], compiled)


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------


def ratios(ts: list[float], base: list[float]) -> tuple[float, float, float]:
    """Median, first and third quartile of the per-round ratios ``ts[i] / base[i]``."""
    r = [t / b for t, b in zip(ts, base)]
    q1, _, q3 = statistics.quantiles(r, n=4, method="inclusive") if len(r) > 1 else r * 3
    return statistics.median(r), q1, q3


def interleaved(
    steps: dict[str, Step], base: str, rounds: int, per_round: int, device: str
) -> dict[str, dict[str, Any]]:
    """Ratios to ``base`` over interleaved rounds, median and best ms per step (wall time;
    on CPU also the process's CPU time)."""
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    order = list(steps)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            run = steps[name].run
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                run()
            _sync(device)
            wall[name].append((time.perf_counter() - t0) / per_round * 1e3)
            cpu[name].append((time.process_time() - c0) / per_round * 1e3)
    out: dict[str, dict[str, Any]] = {}
    for name, ts in wall.items():
        s = steps[name]
        median, q1, q3 = ratios(ts, wall[base])
        out[name] = {
            "median_ms": statistics.median(ts),
            "best_ms": min(ts),
            "times_ms": ts,
            "median_ratio": median,
            "ratio_q1": q1,
            "ratio_q3": q3,
            "cpu_ms": None,  # CPU time: CPU only (a GPU step's host time is not its cost)
            "cpu_ratio": None,
            "cpu_ratio_q1": None,
            "cpu_ratio_q3": None,
            "first_call_s": s.first_call_s,
            "compiled": s.fullgraph is not None,
            "fullgraph": s.fullgraph,
            "fallback_reason": s.fallback_reason,
            "graph_breaks": s.graph_breaks,
        }
        if device == "cpu":
            c_median, c_q1, c_q3 = ratios(cpu[name], cpu[base])
            out[name].update(cpu_ms=statistics.median(cpu[name]), cpu_times_ms=cpu[name],
                             cpu_ratio=c_median, cpu_ratio_q1=c_q1, cpu_ratio_q3=c_q3)  # fmt: skip
    return out


def peak_of_one_step(variant: str, quick: bool, device: str, backend: str) -> dict[str, Any]:
    """Run in a fresh process: the peak memory of one LM-head step above what it started with."""
    import gc

    case = lm_case(variant, quick, device)
    step = build(case, None, device, backend)
    labelsmooth.empty_cache()
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step.run()
        torch.cuda.synchronize()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - before, "how": "cuda allocator"}
    peak = step_peak_bytes(step.run)
    if peak is None:
        return {"peak_bytes": None, "how": "n/a (no /proc/self/clear_refs)"}
    return {"peak_bytes": peak, "how": "VmHWM - VmRSS"}


def _memory_subprocess(variant: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    cmd = [sys.executable, __file__, "--one", variant, "--device", args.device,
           "--threads", str(args.threads), "--backend", args.backend,
           ] + (["--quick"] if args.quick else [])  # fmt: skip
    env = {**env, "OMP_NUM_THREADS": str(args.threads), "MALLOC_MMAP_THRESHOLD_": "1048576"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return {"peak_bytes": None, "error": proc.stderr.strip()[-600:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    """The cross-entropy benchmark's record (CPU, versions, C compiler, date) and the device."""
    info = dict(ls_machine_info(args.threads))
    info.pop("load_average", None)  # recorded at each phase instead (``load``)
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=10"],
        capture_output=True,
        text=True,
        cwd=Path(labelsmooth.__file__).parent,
        check=False,
    ).stdout.strip()
    info.update(
        device=args.device,
        gpu=torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        labelsmooth_commit=commit or None,
    )
    return info


def loadavg() -> str:
    """``/proc/loadavg`` as it reads (1, 5, 15 min, running/total, last pid), else getloadavg."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().strip()
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def _mib(b: float | None) -> str:
    return "n/a" if b is None else f"{b / 2**20:.0f} MiB"


def _how(r: dict[str, Any]) -> str:
    if not r["compiled"]:
        return "eager"
    return f"fullgraph={r['fullgraph']} ({r['graph_breaks']} breaks)"


def _ratio(r: dict[str, Any], cpu: bool = False) -> str:
    """The median of the per-round ratios and their quartiles (wall time, or CPU time)."""
    keys = ("cpu_ratio", "cpu_ratio_q1", "cpu_ratio_q3") if cpu else ("median_ratio", "ratio_q1",
                                                                      "ratio_q3")  # fmt: skip
    median, q1, q3 = (r.get(k) for k in keys)
    return "n/a" if median is None else f"{median:.3f}× ({q1:.3f}–{q3:.3f})"


def _time_columns(rows: dict[str, dict[str, Any]], base: str) -> tuple[str, str, Any]:
    """The time columns' header, alignment row and cells (CPU time where it was measured)."""
    cpu = all(r.get("cpu_ratio") is not None for r in rows.values())
    head = f"median ms/step | best ms/step | ratio to `{base}` (quartiles)"
    head += " | CPU ms/step | CPU-time ratio (quartiles)" if cpu else ""

    def cells(r: dict[str, Any], digits: int) -> str:
        text = f"{r['median_ms']:.{digits}f} | {r['best_ms']:.{digits}f} | {_ratio(r)}"
        return text + (f" | {r['cpu_ms']:.{digits}f} | {_ratio(r, cpu=True)}" if cpu else "")

    return head, "---:|---:|---:" + ("|---:|---:" if cpu else ""), cells


def _verdict(value: float, limit: float) -> str:
    return f"{value:.3f}× — {'met' if value <= limit else 'NOT met'}"


def _time_verdicts(r: dict[str, Any], limit: float) -> str:
    """Wall time's verdict, and CPU time's where it was measured, each with its quartiles."""
    text = (
        f"wall time {_verdict(r['median_ratio'], limit)} (round ratios, quartiles "
        f"{r['ratio_q1']:.3f}–{r['ratio_q3']:.3f})"
    )
    if r.get("cpu_ratio") is not None:
        text += (
            f"; CPU time {_verdict(r['cpu_ratio'], limit)} (quartiles "
            f"{r['cpu_ratio_q1']:.3f}–{r['cpu_ratio_q3']:.3f})"
        )
    return text


def _targets_mlp(mlp: dict[str, Any]) -> list[str]:
    return [
        f"- (a) `{name}` time ≤ {TARGET_MLP}× `{MLP_BASE}`'s at the MLP shape: "
        + _time_verdicts(mlp[name], TARGET_MLP)
        for name in ("labelsmooth auto, compiled", "labelsmooth auto others, compiled")
    ]


def _targets_lm(lm: dict[str, Any]) -> list[str]:
    ls = lm[LM_COMPILED]
    out = [
        f"- (b) `{LM_COMPILED}` time ≤ {TARGET_LM_TIME}× `{LM_BASE}`'s: "
        + _time_verdicts(ls, TARGET_LM_TIME)
    ]
    peak, base_peak = ls.get("peak_bytes"), lm[LM_BASE].get("peak_bytes")
    if peak is not None and base_peak:
        out.append(
            f"- (b) `{LM_COMPILED}` peak memory of a step ≤ {TARGET_LM_MEMORY}× `{LM_BASE}`'s: "
            f"{_verdict(peak / base_peak, TARGET_LM_MEMORY)} ({_mib(peak)} vs {_mib(base_peak)})"
        )
    else:
        out.append("- (b) peak memory: not measured (see the table) — NOT met (no number)")
    how = "whole (fullgraph=True)" if ls["fullgraph"] else "in pieces (fullgraph=False)"
    out.append(f"- (b) `linear_cross_entropy`'s forward compiled {how}")
    if ls["fallback_reason"]:
        out.append(f"  - fullgraph=True raised: `{ls['fallback_reason']}`")
    return out


def targets(data: dict[str, Any]) -> list[str]:
    """Every target of the issue with its measured value and verdict (markdown lines)."""
    if data["quick"]:
        return ["- not checked: `--quick` is a smoke test at tiny shapes, not a measurement"]
    if data["backend"] != "inductor":
        return [f"- not checked: compiled with backend={data['backend']!r}, not inductor"]
    mlp, lm = data.get("mlp"), data.get("lm")
    out = _targets_mlp(mlp) if mlp else ["- (a) not measured in this run (`--parts`)"]
    out += _targets_lm(lm) if lm else ["- (b) not measured in this run (`--parts`)"]
    for label, part, compiled, eager in (
        ("MLP", mlp, "labelsmooth auto, compiled", "labelsmooth auto, eager"),
        ("LM-head", lm, LM_COMPILED, "linear_cross_entropy, eager"),
    ):
        if part:
            ratio = _compiled_over_eager(part[compiled], part[eager])
            out.append(f"- (c) compiled / eager labelsmooth {label} step, same rounds: {ratio} "
                       "(no target)")  # fmt: skip
    return out


def _compiled_over_eager(compiled: dict[str, Any], eager: dict[str, Any]) -> str:
    """The per-round ratio of two variants timed in the same rounds (and of CPU times)."""
    text = "wall time {:.3f}× (quartiles {:.3f}–{:.3f})".format(
        *ratios(compiled["times_ms"], eager["times_ms"])
    )
    if compiled.get("cpu_times_ms") and eager.get("cpu_times_ms"):
        text += "; CPU time {:.3f}× (quartiles {:.3f}–{:.3f})".format(
            *ratios(compiled["cpu_times_ms"], eager["cpu_times_ms"])
        )
    return text


def _header(data: dict[str, Any]) -> list[str]:
    info = data["machine"]
    dev = f"GPU {info['gpu']}" if info["device"] == "cuda" else f"CPU {info['cpu']}"
    title = "# torch.compile: training steps with labelsmooth against F.cross_entropy"
    loads = "; ".join(f"{when}: `{value}`" for when, value in data["load"])
    return [
        title + (" (`--quick` smoke test, not a measurement)" if data["quick"] else ""),
        "",
        f"Command: `{data['command']}`",
        "",
        f"Machine: {dev}, {info['cores']} cores, {info['threads']} torch thread(s); Python "
        f"{info['python']}, torch {info['torch']}, labelsmooth {info['labelsmooth']} "
        f"(commit {info['labelsmooth_commit'] or 'unknown'}), C compiler {info['c_compiler']}; "
        f"{info['platform']}; measured {info['date']}. Load (`/proc/loadavg`) {loads}. "
        f"torch.compile backend: {data['backend']}; Inductor cache: {data['inductor_cache']}. "
        f"{data['rounds']} interleaved rounds; {data['mlp_steps_per_round']} MLP steps and "
        f"{data['lm_steps_per_round']} LM-head step(s) per variant per round.",
        "",
        "Each step: forward, loss (ε = 0.1, mean), backward, SGD update (lr 0.01); float32. The "
        "forward + loss region is compiled with fullgraph=True when that works (else "
        "fullgraph=False, noted); graph breaks are `torch._dynamo.explain` of that region; the "
        "backward cannot be in a compiled region. Ratio: the median over rounds of the "
        "variant's time over the baseline's in the same round, with the quartiles of those "
        "per-round ratios in brackets. First call: the first step's wall time (compilation of "
        "both regions included; the first compiled variant also pays Inductor's one-time "
        "start-up), excluded from the step times.",
    ]


def _mlp_table(data: dict[str, Any]) -> list[str]:
    b, widths = data["mlp_shape"]
    head, align, cells = _time_columns(data["mlp"], MLP_BASE)
    lines = [
        "",
        f"## (a) and (c): MLP {'-'.join(map(str, widths))}, batch {b}",
        "",
        f"| variant | compiled | {head} | first call |",
        f"|---|---|{align}|---:|",
    ]
    for name, r in data["mlp"].items():
        lines.append(f"| {name} | {_how(r)} | {cells(r, 2)} | {r['first_call_s']:.1f} s |")
    return lines


def _lm_table(data: dict[str, Any]) -> list[str]:
    n, hdim, v = data["lm_shape"]
    head, align, cells = _time_columns(data["lm"], LM_BASE)
    lines = [
        "",
        f"## (b) and (c): LM head, {n} tokens × H {hdim} × V {v}",
        "",
        "Peak memory: one step in a fresh process after the warm-up, above the memory before "
        f"the step ({data['memory_how']}); it includes the gradients of hidden and weight "
        f"({_mib((n * hdim + v * hdim) * 4)}), which every variant produces; the built-in's "
        f"logits alone are {_mib(n * v * 4)}.",
        "",
        f"| variant | compiled | {head} | peak memory of a step (× base) | first call |",
        f"|---|---|{align}|---:|---:|",
    ]
    base_peak = data["lm"][LM_BASE].get("peak_bytes")
    for name, r in data["lm"].items():
        peak = _mib(r.get("peak_bytes"))
        if r.get("peak_bytes") is not None and base_peak:
            peak += f" ({r['peak_bytes'] / base_peak:.3f}×)"
        lines.append(f"| {name} | {_how(r)} | {cells(r, 1)} | {peak} | {r['first_call_s']:.1f} s |")
    errors = [f"- {k}: `{r['memory_error']}`" for k, r in data["lm"].items() if "memory_error" in r]
    return lines + (["", "Memory measurement errors:", ""] + errors if errors else [])


def render(data: dict[str, Any]) -> str:
    """The markdown report of one run."""
    lines = _header(data)
    lines += _mlp_table(data) if data.get("mlp") else []
    lines += _lm_table(data) if data.get("lm") else []
    lines += ["", "## Targets", ""] + data["targets"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one ``bench_compile: error: …`` line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"bench_compile: error: {message}\n")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _check_out(p: argparse.ArgumentParser, out: Path) -> None:
    """Refuse, before any work, an output folder that cannot be created or written."""
    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        p.error(f"--out {str(out)!r}: {str(probe)!r} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        p.error(f"--out {str(out)!r}: {str(probe)!r} is not writable")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _Parser(prog="bench_compile.py", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a memory subprocess
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and 2 rounds: a smoke test, not a measurement")  # fmt: skip
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="which comparisons: mlp = (a) + (c) at the MLP, lm = (b) + (c) at the "
                   "LM head, with its peak memory (default: both)")  # fmt: skip
    p.add_argument("--rounds", type=_positive, default=None,
                   help="interleaved rounds (default 10; 2 with --quick)")  # fmt: skip
    p.add_argument("--mlp-steps", type=_positive, default=None,
                   help="MLP steps per variant per round (default 20; 2 with --quick)")  # fmt: skip
    p.add_argument("--lm-steps", type=_positive, default=1,
                   help="LM-head steps per variant per round (default 1)")  # fmt: skip
    p.add_argument("--threads", type=_positive, default=1, help="torch.set_num_threads (1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backend", choices=BACKENDS, default="inductor",
                   help="torch.compile's backend (default inductor, torch.compile's own; "
                   "eager and aot_eager only trace, for a smoke test; targets are checked "
                   "with inductor only)")  # fmt: skip
    p.add_argument("--inductor-cache", choices=("fresh", "shared"), default="fresh",
                   help="fresh: an empty Inductor cache for this run, so first calls are cold "
                   "compiles (default); shared: the user's cache")  # fmt: skip
    p.add_argument("--out", type=Path, default=None,
                   help="folder for compile.{md,json} (compile-cuda.* with --device cuda); "
                   "default: print only")  # fmt: skip
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available to torch")
    if args.one is not None and args.one not in LM_VARIANTS:
        p.error(f"--one: unknown variant {args.one!r}")
    if args.out is not None:
        _check_out(p, args.out)
    args.parts = [part for part in PARTS if part in args.parts]  # the order of the report
    args.rounds = args.rounds or (2 if args.quick else 10)
    args.mlp_steps = args.mlp_steps or (2 if args.quick else 20)
    return args


def measure_mlp(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """(a) + (c): every MLP variant built, then timed in interleaved rounds."""
    cases = {k: mlp_case(k, args.quick, args.device) for k in MLP_VARIANTS}
    breaks = graph_breaks(cases)
    steps = {k: build(c, breaks[k], args.device, args.backend) for k, c in cases.items()}
    return interleaved(steps, MLP_BASE, args.rounds, args.mlp_steps, args.device)


def measure_lm(args: argparse.Namespace, env: dict[str, str]) -> tuple[dict, str]:
    """(b) + (c): the LM-head variants timed here, then each one's peak memory in a fresh
    process; returns the rows and how memory was measured."""
    cases = {k: lm_case(k, args.quick, args.device) for k in LM_VARIANTS}
    breaks = graph_breaks(cases)
    steps = {k: build(c, breaks[k], args.device, args.backend) for k, c in cases.items()}
    lm = interleaved(steps, LM_BASE, args.rounds, args.lm_steps, args.device)
    del steps, cases
    how = "n/a"
    for name in LM_VARIANTS:
        print(f"(b) peak memory: {name} (fresh process)", flush=True)
        mem = _memory_subprocess(name, args, env)
        lm[name]["peak_bytes"] = mem.get("peak_bytes")
        how = mem.get("how", how)
        if "error" in mem:
            lm[name]["memory_error"] = mem["error"].splitlines()[-1][:300]
    return lm, how


def measure(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Every part asked for, with the load before and after each; the report's data."""
    env = dict(os.environ)
    cache_note = "the user's (shared; first calls may be cache hits)"
    tmp = None
    if args.inductor_cache == "fresh":  # for the subprocesses too; restored by ``main``
        tmp = tempfile.TemporaryDirectory(prefix="bench-compile-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = env["TORCHINDUCTOR_CACHE_DIR"] = tmp.name
        cache_note = "empty at the start of the run (first calls are cold compiles)"
    data: dict[str, Any] = {"command": command, "quick": args.quick, "backend": args.backend,
                            "parts": args.parts, "load": [("start", loadavg())]}  # fmt: skip
    try:
        if "mlp" in args.parts:
            print(f"load {data['load'][-1][1]}; (a)+(c): MLP steps", flush=True)
            data["mlp"] = measure_mlp(args)
            data["load"].append(("after the MLP", loadavg()))
        if "lm" in args.parts:
            print(f"load {data['load'][-1][1]}; (b)+(c): LM-head steps", flush=True)
            data["lm"], data["memory_how"] = measure_lm(args, env)
            data["load"].append(("after the LM head", loadavg()))
    finally:
        if tmp is not None:
            tmp.cleanup()
    data.update(
        machine=machine_info(args),
        inductor_cache=cache_note,
        rounds=args.rounds,
        mlp_steps_per_round=args.mlp_steps,
        lm_steps_per_round=args.lm_steps,
        mlp_shape=MLP_QUICK if args.quick else MLP_FULL,
        lm_shape=LM_QUICK if args.quick else LM_FULL,
    )
    data["targets"] = targets(data)
    return data


def write(data: dict[str, Any], out: Path, device: str) -> Path:
    """``compile.{md,json}`` (``compile-cuda.*`` on CUDA) in ``out``; returns the md path."""
    stem = "compile" if device == "cpu" else "compile-cuda"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(render(data))
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
    return out / f"{stem}.md"


@contextlib.contextmanager
def _settings(threads: int) -> Iterator[None]:
    """The run's torch settings, restored afterwards (``main`` may be called in a process)."""
    old_threads, old_cache = torch.get_num_threads(), os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    log = logging.getLogger("torch._dynamo")
    old_level = log.level
    torch.set_num_threads(threads)  # before compiling: Inductor's C++ uses this count
    log.setLevel(logging.ERROR)  # graph-break warnings
    try:  # every variant compiles the same update code
        with torch._dynamo.config.patch(recompile_limit=64):
            yield
    finally:
        torch.set_num_threads(old_threads)
        log.setLevel(old_level)
        if old_cache is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = old_cache


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    words = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python benchmarks/bench_compile.py", *words])
    with _settings(args.threads):
        if args.one is not None:
            print(json.dumps(peak_of_one_step(args.one, args.quick, args.device, args.backend)))
            return 0
        try:
            data = measure(args, command)
        except Exception:
            traceback.print_exc()
            sys.stderr.write("bench_compile: error: the measurement failed (traceback above)\n")
            return 1
    print(render(data))
    if args.out is not None:
        print(f"wrote {write(data, args.out, args.device)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
