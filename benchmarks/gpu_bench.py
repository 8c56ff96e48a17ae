"""Label-smoothed cross-entropy on a CUDA GPU: forward + backward time, peak memory and
achieved bandwidth of ``impl="triton"`` against PyTorch's kernel and, when importable,
Liger-Kernel's and flash-attention's Triton cross-entropy.

The loss is memory-bound: its floor is reading the logits once and writing the gradient once,
``2·N·V·bytes``. Each variant is timed with CUDA events around forward + backward only (fresh
logits are made outside the timed region, since some variants overwrite them), and reported
as milliseconds, × the built-in's time measured in the same run, "effective bandwidth"
(floor bytes / time) as a fraction of the device's peak, and × the time of a device copy of
the same bytes (a practical floor). Peak memory is the most allocated during the step beyond
the logits, as a multiple of the logits' size. Each variant's loss is checked against the
float64 value computed from the same logits (relative difference reported).

Run (the lead runs benchmarks/gpu_check.sh, which calls this):
    PYTHONPATH=src python3 benchmarks/gpu_bench.py --out DIR
    python3 benchmarks/gpu_bench.py --dry-run            # check the arguments, print the plan
Writes DIR/gpu.md and DIR/gpu.json (rewritten after every case, so a run cut short keeps the
cases it finished).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from labelsmooth.experiment.bench import recorded_command

VARIANTS = ("torch", "triton", "triton-inplace", "liger", "flash-attn")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEFAULT_SHAPES = ("16384x131072", "8192x256000")
#: Peak DRAM bandwidth (bytes/s) by device name, when the driver does not report it.
KNOWN_PEAK = {"H200": 4.8e12, "H100 SXM": 3.35e12, "H100 PCIe": 2.0e12, "H100": 3.35e12,
              "A100-SXM4-80GB": 2.039e12, "A100 80GB PCIe": 1.935e12, "A100": 1.555e12,
              "L40S": 0.864e12, "A10": 0.6e12, "L4": 0.3e12}  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2 (house rule for command lines)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _shape(text: str) -> tuple[int, int]:
    try:
        n, v = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NxV such as 8192x256000, got {text!r}"
        ) from None
    if n < 1 or v < 2:
        raise argparse.ArgumentTypeError(f"N must be >= 1 and V >= 2, got {text!r}")
    return n, v


def _config(text: str) -> tuple[int, int]:
    try:
        block, warps = (int(p) for p in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected BLOCK:WARPS such as 8192:16, got {text!r}"
        ) from None
    if block < 16 or block & (block - 1) or warps not in (1, 2, 4, 8, 16, 32):
        raise argparse.ArgumentTypeError(
            f"BLOCK must be a power of two >= 16 and WARPS one of 1..32, got {text!r}"
        )
    return block, warps


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="gpu_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="folder for gpu.md and gpu.json (created)")
    p.add_argument(
        "--shapes",
        type=_shape,
        nargs="+",
        default=[_shape(s) for s in DEFAULT_SHAPES],
        metavar="NxV",
        help=f"logits shapes (default: {' '.join(DEFAULT_SHAPES)})",
    )
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="unavailable optional ones (liger, flash-attn) are reported as such",
    )
    add_run_arguments(p, iters=10)
    p.add_argument(
        "--triton-configs",
        type=_config,
        nargs="*",
        default=[],
        metavar="BLOCK:WARPS",
        help="extra Triton (block, warps) settings to time (the default setting is always timed)",
    )
    p.add_argument("--peak-gbps", type=float, help="device peak bandwidth, GB/s (else looked up)")
    args = p.parse_args(argv)
    check_run_arguments(p, args)
    return args


def add_run_arguments(p: argparse.ArgumentParser, *, iters: int) -> None:
    """The options every GPU benchmark script shares (this one and gpu_linear.py)."""
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--iters", type=int, default=iters, help="timed steps per variant (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--budget-s",
        type=float,
        default=300.0,
        help="stop starting new measurements after this many seconds",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the arguments and print the plan; no GPU needed, nothing written",
    )
    # the tests run the whole script on CPU tensors (under the Triton interpreter for triton)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help=argparse.SUPPRESS)


def check_run_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One-line errors (exit 2) for the shared options, before any work."""
    if not 0.0 <= args.label_smoothing <= 1.0:
        p.error(f"--label-smoothing must be in [0, 1], got {args.label_smoothing}")
    if args.iters < 1 or args.warmup < 0:
        p.error(f"--iters must be >= 1 and --warmup >= 0, got {args.iters} and {args.warmup}")
    if args.budget_s <= 0:
        p.error(f"--budget-s must be positive, got {args.budget_s}")
    if not args.dry_run:
        if args.out is None:
            p.error("--out DIR is required (or --dry-run)")
        if args.device == "cuda" and not torch.cuda.is_available():
            p.error("no CUDA device (use --dry-run to check the arguments on a CPU machine)")


def guarded(row: dict[str, Any], clock: Any, measure: Callable[..., Any], *args: Any) -> Any:
    """``measure(*args)``, or None with ``row["skipped"]`` saying why it failed (out of memory or
    any error): one variant's failure is reported and the run goes on."""
    try:
        return measure(*args)
    except torch.cuda.OutOfMemoryError:
        row["skipped"] = "out of memory"
    except Exception as e:
        why = f"failed: {type(e).__name__}: {e}"[:300]
        row["skipped"] = why.replace("|", "/").replace("\n", " ")
    clock.empty_cache()
    return None


def _available(variant: str) -> str | None:
    """None if the variant can run here, else why not."""
    module = {"triton": "triton", "triton-inplace": "triton", "liger": "liger_kernel",
              "flash-attn": "flash_attn"}.get(variant)  # fmt: skip
    if module is not None and importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    if variant == "flash-attn":
        try:
            from flash_attn.ops.triton.cross_entropy import cross_entropy_loss  # noqa: F401
        except Exception as e:  # its package imports a compiled extension first
            return f"flash_attn.ops.triton.cross_entropy does not import: {e!r}"[:200]
    return None


def _loss_fn(variant: str, eps: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The variant as loss(logits, target) -> scalar mean loss."""
    if variant == "torch":
        return lambda x, y: F.cross_entropy(x, y, label_smoothing=eps)
    if variant in ("triton", "triton-inplace"):
        import labelsmooth

        inplace = variant == "triton-inplace"
        return lambda x, y: labelsmooth.cross_entropy(
            x, y, label_smoothing=eps, impl="triton", inplace_backward=inplace,
            validate_args=False,
        )  # fmt: skip
    if variant == "liger":
        from liger_kernel.transformers.functional import liger_cross_entropy

        def liger(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = liger_cross_entropy(
                x, y, ignore_index=-100, reduction="mean", label_smoothing=eps
            )
            return out[0] if isinstance(out, tuple) else out

        return liger
    if variant == "flash-attn":
        from flash_attn.ops.triton.cross_entropy import cross_entropy_loss

        def flash(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = cross_entropy_loss(x, y, label_smoothing=eps)
            losses = out[0] if isinstance(out, tuple) else out
            return losses.sum() / (y != -100).sum()

        return flash
    raise ValueError(f"unknown variant {variant!r}")


def _truth(x: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    """The mean smoothed loss in float64, a block of rows at a time (bounded memory)."""
    total = 0.0
    for r0 in range(0, x.shape[0], 256):
        xb = x[r0 : r0 + 256].double()
        total += float(F.cross_entropy(xb, y[r0 : r0 + 256], label_smoothing=eps, reduction="sum"))
    return total / x.shape[0]


class _Clock:
    """CUDA events on the GPU; on CPU (tests only) wall time and no memory statistics."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def start(self) -> Any:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def elapsed_ms(self, start: Any) -> float:
        """Milliseconds since ``start`` (synchronizes)."""
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            torch.cuda.synchronize()
            return float(start.elapsed_time(end))
        return (time.perf_counter() - start) * 1e3

    def allocated(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else 0

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated() if self.cuda else 0

    def empty_cache(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()


def _measure(
    variant: str,
    eps: float,
    base: torch.Tensor,
    y: torch.Tensor,
    clock: _Clock,
    iters: int,
    warmup: int,
) -> dict[str, Any]:
    """Median forward+backward time (ms), peak extra memory (bytes) and the loss of one step.

    Each step gets fresh logits, a non-leaf view of a fresh copy of ``base`` (as in a model,
    and free to be overwritten), made before the timed region; the memory baseline includes
    it."""
    fn = _loss_fn(variant, eps)
    times, peak, loss_value = [], 0, math.nan
    for i in range(warmup + iters):
        leaf = base.detach().clone().requires_grad_(True)
        logits = leaf.view_as(leaf)
        clock.sync()
        before = clock.allocated()
        start = clock.start()
        loss = fn(logits, y)
        loss.backward()
        ms = clock.elapsed_ms(start)
        if i >= warmup:
            times.append(ms)
            peak = max(peak, clock.peak() - before)
        if i == 0:
            loss_value = float(loss.detach())
        del leaf, logits, loss
    times.sort()
    return {"ms": times[len(times) // 2], "ms_min": times[0], "peak_extra_bytes": peak,
            "loss": loss_value}  # fmt: skip


def _copy_ms(base: torch.Tensor, clock: _Clock, iters: int) -> float:
    """Median time of copying the logits (reads N·V, writes N·V: the loss's floor traffic)."""
    dst = torch.empty_like(base)
    times = []
    for _ in range(iters + 1):
        clock.sync()
        start = clock.start()
        dst.copy_(base)
        times.append(clock.elapsed_ms(start))
    return sorted(times[1:])[iters // 2]


def _peak_bandwidth(args: argparse.Namespace) -> tuple[float | None, str]:
    if args.peak_gbps:
        return args.peak_gbps * 1e9, "--peak-gbps"
    props = torch.cuda.get_device_properties(0)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if clock_khz and bus_bits:  # double data rate
        return 2 * clock_khz * 1e3 * bus_bits / 8, "driver (memory clock × bus width)"
    for name, bw in KNOWN_PEAK.items():
        if name in props.name:
            return bw, f"datasheet value for {name}"
    return None, "unknown (pass --peak-gbps)"


def _machine(args: argparse.Namespace, peak: float | None, peak_src: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "peak_bandwidth_gbps": None if peak is None else round(peak / 1e9, 1),
        "peak_bandwidth_source": peak_src,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, sms=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1),
                    l2_mib=round(getattr(props, "L2_cache_size", 0) / 2**20, 1))  # fmt: skip
    for mod in ("triton", "liger_kernel", "flash_attn"):
        if importlib.util.find_spec(mod) is not None:
            try:
                info[mod] = getattr(__import__(mod), "__version__", "?")
            except Exception as e:
                info[mod] = f"import failed: {type(e).__name__}"
    return info


def _plan(args: argparse.Namespace) -> list[str]:
    lines = [f"shapes: {' '.join(f'{n}x{v}' for n, v in args.shapes)}",
             f"dtypes: {' '.join(args.dtypes)}", f"label_smoothing: {args.label_smoothing}",
             f"iters: {args.iters} (warmup {args.warmup}), budget {args.budget_s:.0f} s",
             "triton configs: default"
             + "".join(f", {b}:{w}" for b, w in args.triton_configs)]  # fmt: skip
    for v in args.variants:
        reason = _available(v)
        lines.append(f"variant {v}: " + ("available" if reason is None else f"skipped, {reason}"))
    for n, v in args.shapes:
        for dt in args.dtypes:
            gb = n * v * DTYPES[dt].itemsize / 1e9
            lines.append(f"case {n}x{v} {dt}: logits {gb:.2f} GB, floor traffic {2 * gb:.2f} GB")
    return lines


def _markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = ["# GPU benchmark: label-smoothed cross-entropy, forward + backward", "",
           f"Machine: {m.get('gpu', '?')} ({m.get('sms', '?')} SMs, {m.get('memory_gib', '?')} "
           f"GiB, L2 {m.get('l2_mib', '?')} MiB); peak bandwidth "
           f"{m['peak_bandwidth_gbps']} GB/s ({m['peak_bandwidth_source']}); torch {m['torch']} "
           f"(CUDA {m['cuda']}), triton {m.get('triton', '-')}, liger_kernel "
           f"{m.get('liger_kernel', '-')}, flash_attn {m.get('flash_attn', '-')}; Python "
           f"{m['python']}.", "",
           f"Command: `{result['command']}`; label_smoothing={result['label_smoothing']}, "
           f"median of {result['iters']} steps. Floor = read the logits once + write the "
           "gradient once; eff. GB/s = floor bytes / time; × copy = time / time of copying "
           "the logits (the same traffic); memory = peak allocated during the step beyond the "
           "logits, in logits sizes; Δloss = |loss − float64 loss| / float64 loss. "
           f"Triton defaults: {result['triton_default']} (None: MAX_BLOCK 8192 for 4-byte "
           "and 4096 for 2-byte logits, 8 warps); rows `triton B:W` time other settings.",
           ""]  # fmt: skip
    for case in result["cases"]:
        out += [f"## {case['shape']} {case['dtype']}", "",
                f"Logits {case['logits_gb']:.2f} GB; copy {case['copy_ms']:.2f} ms.", "",
                "| variant | ms | × torch | × copy | eff. GB/s | % of peak | memory (× logits) "
                "| Δloss |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in case["rows"]:
            if "skipped" in row:
                out.append(f"| {row['variant']} | {row['skipped']} | | | | | | |")
                continue
            pct = "-" if row["pct_peak"] is None else f"{row['pct_peak']:.0f}%"
            ratio = "-" if row["x_torch"] is None else f"{row['x_torch']:.2f}"
            out.append(
                f"| {row['variant']} | {row['ms']:.2f} | {ratio} | {row['x_copy']:.2f} | "
                f"{row['eff_gbps']:.0f} | {pct} | {row['mem_x_logits']:.2f} | "
                f"{row['rel_loss_err']:.1e} |"
            )
        out.append("")
    if result.get("stopped"):
        out += [f"Stopped early: {result['stopped']}", ""]
    return "\n".join(out)


def _write(
    out: Path,
    result: dict[str, Any],
    stem: str = "gpu",
    markdown: Callable[[dict[str, Any]], str] = _markdown,
) -> None:
    """``out/<stem>.json`` and ``out/<stem>.md`` (rewritten after every case)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.dry_run:
        print("\n".join(_plan(args)))
        return 0
    t0 = time.monotonic()
    clock = _Clock(args.device)
    peak, peak_src = _peak_bandwidth(args) if clock.cuda else (None, "not a GPU run")
    from labelsmooth.ops.triton import launch as ls_triton

    default_cfg = (ls_triton.MAX_BLOCK, ls_triton.NUM_WARPS)
    result: dict[str, Any] = {
        "command": recorded_command("python3 benchmarks/gpu_bench.py", argv),  # no machine paths
        "machine": _machine(args, peak, peak_src),
        "label_smoothing": args.label_smoothing,
        "iters": args.iters,
        "triton_default": {"MAX_BLOCK": default_cfg[0], "NUM_WARPS": default_cfg[1]},
        "cases": [],
    }
    print("\n".join(_plan(args)), flush=True)
    eps = args.label_smoothing
    for n, v in args.shapes:
        for dt in args.dtypes:
            if time.monotonic() - t0 > args.budget_s:
                result["stopped"] = f"time budget of {args.budget_s:.0f} s spent"
                _write(args.out, result)
                return 0
            dev = args.device
            gen = torch.Generator(device=dev).manual_seed(0)
            base = torch.randn(n, v, device=dev, generator=gen).mul_(2).to(DTYPES[dt])
            y = torch.randint(0, v, (n,), device=dev, generator=gen)
            logits_bytes = base.numel() * base.element_size()
            truth = _truth(base, y, eps)
            copy_ms = _copy_ms(base, clock, args.iters)
            case = {"shape": f"{n}x{v}", "dtype": dt, "logits_gb": logits_bytes / 1e9,
                    "copy_ms": copy_ms, "truth_loss": truth, "rows": []}  # fmt: skip
            result["cases"].append(case)
            runs: list[tuple[str, str, tuple[int, int | None] | None]] = []
            for variant in args.variants:
                runs.append((variant, variant, default_cfg if "triton" in variant else None))
                if variant == "triton":
                    runs += [(f"triton {b}:{w}", variant, (b, w)) for b, w in args.triton_configs]
            torch_ms = None
            for label, variant, cfg in runs:
                row: dict[str, Any] = {"variant": label}
                case["rows"].append(row)
                reason = _available(variant)
                if reason is None and time.monotonic() - t0 > args.budget_s:
                    reason = "time budget spent"
                if reason is not None:
                    row["skipped"] = reason
                    continue
                if cfg is not None:
                    ls_triton.MAX_BLOCK, ls_triton.NUM_WARPS = cfg
                try:
                    r = guarded(row, clock, _measure, variant, eps, base, y, clock, args.iters,
                                args.warmup)  # fmt: skip
                finally:
                    ls_triton.MAX_BLOCK, ls_triton.NUM_WARPS = default_cfg
                if r is None:
                    continue
                if variant == "torch":
                    torch_ms = r["ms"]
                eff = 2 * logits_bytes / (r["ms"] * 1e-3)
                row.update(r, config=cfg, x_torch=None if torch_ms is None else r["ms"] / torch_ms,
                           x_copy=r["ms"] / copy_ms, eff_gbps=eff / 1e9,
                           pct_peak=None if peak is None else 100 * eff / peak,
                           mem_x_logits=r["peak_extra_bytes"] / logits_bytes,
                           rel_loss_err=abs(r["loss"] - truth) / abs(truth))  # fmt: skip
                print(f"{n}x{v} {dt} {label}: {r['ms']:.2f} ms, {eff / 1e9:.0f} GB/s, "
                      f"memory {row['mem_x_logits']:.2f}x logits", flush=True)  # fmt: skip
                clock.empty_cache()
            del base, y
            clock.empty_cache()
            _write(args.out, result)
    _write(args.out, result)
    print(f"wrote {args.out / 'gpu.md'} and gpu.json in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
