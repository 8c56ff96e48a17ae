"""Linear head + label-smoothed cross-entropy on a CUDA GPU: time and peak memory of
``labelsmooth.linear_cross_entropy`` against the built-in composition, ``torch.compile`` of it,
Liger-Kernel's fused linear cross-entropy and Cut Cross-Entropy (when importable).

Forward + backward of the mean loss of ``F.linear(hidden, weight)`` against ``target`` with
uniform smoothing ε (no bias, no ignored tokens, as in an LM head), gradients for ``hidden``
(N, H) and ``weight`` (V, H):

* ``builtin``: ``F.cross_entropy(F.linear(hidden, weight), target, label_smoothing=ε)`` — every
  ratio refers to it, measured in the same run;
* ``compiled``: ``torch.compile`` of the same composition;
* ``labelsmooth``: ``labelsmooth.linear_cross_entropy(..., label_smoothing=ε,
  validate_args=False)`` (``impl="auto"``: the chunked head, Triton rows per chunk on CUDA);
* ``liger``: ``liger_kernel.transformers.functional.liger_fused_linear_cross_entropy`` with
  ``label_smoothing=ε``;
* ``cce``: Cut Cross-Entropy has no smoothing, so it is composed from its per-token NLL
  (``reduction="none"``): with uniform smoothing the loss of a token is
  ``(1-ε)(lse - x_y) + ε(lse - mean_k x_k) = nll + ε(x_y - mean_k x_k)``, and both
  ``x_y = h·w_y`` and ``mean_k x_k = h·mean_k w_k`` are cheap without the logits (plain torch,
  autograd). CCE's default gradient filter (``filter_eps="high"``) skips tiny softmax entries,
  so its gradients are approximate by design.

Peak memory is the most allocated during the step beyond what was allocated before it (the
inputs and parameters); "net" subtracts the gradients of ``hidden`` and ``weight``, which every
variant must return (the measure of the linear-head issue). The loss of the first step is
compared with a float64 value computed from the same inputs a block of rows at a time.

Run (on a CUDA machine, from the repository root):
    PYTHONPATH=src python3 benchmarks/gpu_linear.py --out DIR
    python3 benchmarks/gpu_linear.py --dry-run        # check the arguments, print the plan
Writes DIR/gpu-linear.md and DIR/gpu-linear.json (rewritten after every case, so a run cut
short keeps the cases it finished). The tests run it end to end on CPU with ``--device cpu``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from labelsmooth.experiment.bench import recorded_command


def _load_sibling(name: str) -> Any:
    """A script next to this one as a module (the clock, parser and machine record of the
    cross-entropy GPU benchmark, not a second copy)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_gpu = _load_sibling("gpu_bench")

VARIANTS = ("builtin", "compiled", "labelsmooth", "liger", "cce")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
#: (tokens, hidden, vocabulary): the linear-head issue's two CPU shapes and a Llama-3-8B head.
DEFAULT_SHAPES = ("2048x512x128256", "4096x1024x32000", "8192x4096x128256")
OPTIONAL = {"liger": "liger_kernel", "cce": "cut_cross_entropy"}


def _shape(text: str) -> tuple[int, int, int]:
    try:
        n, h, v = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NxHxV such as 8192x4096x128256, got {text!r}"
        ) from None
    if n < 1 or h < 1 or v < 2:
        raise argparse.ArgumentTypeError(f"N and H must be >= 1 and V >= 2, got {text!r}")
    return n, h, v


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _gpu._Parser(prog="gpu_linear.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="folder for gpu-linear.md and .json (created)")
    p.add_argument(
        "--shapes",
        type=_shape,
        nargs="+",
        default=[_shape(s) for s in DEFAULT_SHAPES],
        metavar="NxHxV",
        help=f"tokens x hidden x vocabulary (default: {' '.join(DEFAULT_SHAPES)})",
    )
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="unavailable optional ones (liger, cce) are reported as such",
    )
    _gpu.add_run_arguments(p, iters=5)
    args = p.parse_args(argv)
    _gpu.check_run_arguments(p, args)
    return args


def _available(variant: str, device: str) -> str | None:
    """None if the variant can run here, else why not."""
    module = OPTIONAL.get(variant)
    if module is not None:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
        if device != "cuda":
            return f"{module} runs on CUDA only"
    return None


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _loss_fn(variant: str, eps: float) -> LossFn:
    """The variant as loss(hidden, weight, target) -> scalar mean loss."""

    def builtin(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(F.linear(h, w), y, label_smoothing=eps)

    if variant == "builtin":
        return builtin
    if variant == "compiled":
        return torch.compile(builtin)  # type: ignore[return-value]
    if variant == "labelsmooth":
        import labelsmooth

        return lambda h, w, y: labelsmooth.linear_cross_entropy(
            h, w, y, label_smoothing=eps, validate_args=False
        )
    if variant == "liger":
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        def liger(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = liger_fused_linear_cross_entropy(h, w, y, label_smoothing=eps, reduction="mean")
            return out[0] if isinstance(out, tuple) else out

        return liger
    if variant == "cce":
        from cut_cross_entropy import linear_cross_entropy as cce_linear_cross_entropy

        def cce(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            nll = cce_linear_cross_entropy(h, w, y, reduction="none")  # (N,)
            x_y = (h * w[y]).sum(-1)  # (N,) target logit, no N x V tensor
            x_mean = h @ w.mean(0)  # (N,) mean logit over the vocabulary
            return (nll.float() + eps * (x_y - x_mean).float()).mean()

        return cce
    raise ValueError(f"unknown variant {variant!r}")


def _truth(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    """The mean smoothed loss in float64, a block of tokens at a time (bounded memory)."""
    total, wd = 0.0, w.double()
    for r0 in range(0, h.shape[0], 256):
        logits = h[r0 : r0 + 256].double() @ wd.T
        total += float(
            F.cross_entropy(logits, y[r0 : r0 + 256], label_smoothing=eps, reduction="sum")
        )
    return total / h.shape[0]


def _measure(
    variant: str,
    eps: float,
    h0: torch.Tensor,
    w0: torch.Tensor,
    y: torch.Tensor,
    clock: Any,
    iters: int,
    warmup: int,
) -> dict[str, Any]:
    """Median forward+backward time (ms), peak extra memory (bytes) and the first step's loss.

    ``hidden`` and ``weight`` are leaves that persist across steps (as parameters and
    activations do); their gradients are dropped before each step, so every step allocates
    them afresh and the peak counts them."""
    fn = _loss_fn(variant, eps)
    h = h0.detach().clone().requires_grad_(True)
    w = w0.detach().clone().requires_grad_(True)
    times, peak, loss_value = [], 0, math.nan
    for i in range(warmup + iters):
        h.grad = w.grad = None
        clock.sync()
        before = clock.allocated()
        start = clock.start()
        loss = fn(h, w, y)
        loss.backward()
        ms = clock.elapsed_ms(start)
        if i >= warmup:
            times.append(ms)
            peak = max(peak, clock.peak() - before)
        if i == 0:
            loss_value = float(loss.detach())
        del loss
    times.sort()
    return {"ms": times[len(times) // 2], "ms_min": times[0], "peak_extra_bytes": peak,
            "loss": loss_value}  # fmt: skip


def _machine(args: argparse.Namespace) -> dict[str, Any]:
    info = _gpu._machine(args, None, "not used here")
    for key in ("peak_bandwidth_gbps", "peak_bandwidth_source"):
        info.pop(key, None)
    if importlib.util.find_spec("cut_cross_entropy") is not None:
        try:
            from importlib.metadata import version

            info["cut_cross_entropy"] = version("cut-cross-entropy")
        except Exception as e:
            info["cut_cross_entropy"] = f"version unknown: {type(e).__name__}"
    return info


def _plan(args: argparse.Namespace) -> list[str]:
    lines = [
        f"shapes: {' '.join(f'{n}x{h}x{v}' for n, h, v in args.shapes)}",
        f"dtypes: {' '.join(args.dtypes)}",
        f"label_smoothing: {args.label_smoothing}",
        f"iters: {args.iters} (warmup {args.warmup}), budget {args.budget_s:.0f} s",
    ]
    for variant in args.variants:
        reason = _available(variant, args.device)
        lines.append(
            f"variant {variant}: " + ("available" if reason is None else f"skipped, {reason}")
        )
    for n, h, v in args.shapes:
        for dt in args.dtypes:
            gb = n * v * DTYPES[dt].itemsize / 1e9
            lines.append(f"case {n}x{h}x{v} {dt}: logits would be {gb:.2f} GB")
    return lines


def _markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = ["# GPU benchmark: linear head + label-smoothed cross-entropy, forward + backward", "",
           f"Machine: {m.get('gpu', '?')} ({m.get('sms', '?')} SMs, {m.get('memory_gib', '?')} "
           f"GiB); torch {m['torch']} (CUDA {m['cuda']}), triton {m.get('triton', '-')}, "
           f"liger_kernel {m.get('liger_kernel', '-')}, cut_cross_entropy "
           f"{m.get('cut_cross_entropy', '-')}; Python {m['python']}.", "",
           f"Command: `{result['command']}`; label_smoothing={result['label_smoothing']}, "
           f"median of {result['iters']} steps. Memory = peak allocated during the step beyond "
           "the inputs and parameters; net = that minus the gradients of hidden and weight; "
           "both in multiples of the logits' size (N·V in the case's dtype); Δloss = "
           "|loss − float64 loss| / float64 loss.", ""]  # fmt: skip
    for case in result["cases"]:
        out += [f"## {case['shape']} {case['dtype']}", "",
                f"Logits would be {case['logits_gb']:.2f} GB; gradients of hidden and weight "
                f"{case['grads_gb']:.2f} GB.", "",
                "| variant | ms | × builtin | memory (× logits) | net (× logits) | "
                "net × builtin's | Δloss |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in case["rows"]:
            if "skipped" in row:
                out.append(f"| {row['variant']} | {row['skipped']} | | | | | |")
                continue
            ratio = "-" if row["x_builtin"] is None else f"{row['x_builtin']:.2f}"
            net_ratio = "-" if row["net_x_builtin"] is None else f"{row['net_x_builtin']:.3f}"
            out.append(
                f"| {row['variant']} | {row['ms']:.2f} | {ratio} | {row['mem_x_logits']:.2f} | "
                f"{row['net_x_logits']:.3f} | {net_ratio} | {row['rel_loss_err']:.1e} |"
            )
        out.append("")
    if result.get("stopped"):
        out += [f"Stopped early: {result['stopped']}", ""]
    return "\n".join(out)


def _write(out: Path, result: dict[str, Any]) -> None:
    _gpu._write(out, result, "gpu-linear", _markdown)


def _case(
    args: argparse.Namespace, shape: tuple[int, int, int], dt: str, clock: Any, t0: float
) -> dict[str, Any]:
    n, hid, v = shape
    dev, eps = args.device, args.label_smoothing
    gen = torch.Generator(device=dev).manual_seed(0)
    h0 = torch.randn(n, hid, device=dev, generator=gen).to(DTYPES[dt])
    w0 = (torch.randn(v, hid, device=dev, generator=gen) / hid**0.5).to(DTYPES[dt])
    y = torch.randint(0, v, (n,), device=dev, generator=gen)
    itemsize = DTYPES[dt].itemsize
    logits_bytes, grads_bytes = n * v * itemsize, (h0.numel() + w0.numel()) * itemsize
    truth = _truth(h0, w0, y, eps)
    case: dict[str, Any] = {"shape": f"{n}x{hid}x{v}", "dtype": dt, "truth_loss": truth,
                            "logits_gb": logits_bytes / 1e9, "grads_gb": grads_bytes / 1e9,
                            "rows": []}  # fmt: skip
    builtin_ms = builtin_net = None
    for variant in args.variants:
        row: dict[str, Any] = {"variant": variant}
        case["rows"].append(row)
        reason = _available(variant, dev)
        if reason is None and time.monotonic() - t0 > args.budget_s:
            reason = "time budget spent"
        if reason is not None:
            row["skipped"] = reason
            continue
        r = _gpu.guarded(row, clock, _measure, variant, eps, h0, w0, y, clock, args.iters,
                         args.warmup)  # fmt: skip
        if r is None:
            continue
        net = max(r["peak_extra_bytes"] - grads_bytes, 0)
        if variant == "builtin":
            builtin_ms, builtin_net = r["ms"], net
        row.update(r, x_builtin=None if builtin_ms is None else r["ms"] / builtin_ms,
                   mem_x_logits=r["peak_extra_bytes"] / logits_bytes,
                   net_x_logits=net / logits_bytes,
                   net_x_builtin=None if not builtin_net else net / builtin_net,
                   rel_loss_err=abs(r["loss"] - truth) / abs(truth))  # fmt: skip
        print(f"{case['shape']} {dt} {variant}: {r['ms']:.2f} ms, net memory "
              f"{row['net_x_logits']:.3f}x logits", flush=True)  # fmt: skip
        clock.empty_cache()
    return case


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.dry_run:
        print("\n".join(_plan(args)))
        return 0
    t0 = time.monotonic()
    clock = _gpu._Clock(args.device)
    result: dict[str, Any] = {
        "command": recorded_command("python3 benchmarks/gpu_linear.py", argv),  # no machine paths
        "machine": _machine(args),
        "label_smoothing": args.label_smoothing,
        "iters": args.iters,
        "cases": [],
    }
    print("\n".join(_plan(args)), flush=True)
    for shape in args.shapes:
        for dt in args.dtypes:
            if time.monotonic() - t0 > args.budget_s:
                result["stopped"] = f"time budget of {args.budget_s:.0f} s spent"
                _write(args.out, result)
                return 0
            result["cases"].append(_case(args, shape, dt, clock, t0))
            clock.empty_cache()
            _write(args.out, result)
    _write(args.out, result)
    print(
        f"wrote {args.out / 'gpu-linear.md'} and gpu-linear.json in {time.monotonic() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
