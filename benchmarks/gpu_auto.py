"""Which impl "auto" should run on CUDA for options PyTorch's kernel lacks: the fused eager
blocks against impl="triton" (forward + backward, median of CUDA-event timings).

    PYTHONPATH=src python3 benchmarks/gpu_auto.py --out DIR      # on a CUDA machine

Writes gpu-auto.md (and prints it); the committed table is benchmarks/results/gpu-auto.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

import labelsmooth


def _time(fn, iters: int = 10, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _step(x: torch.Tensor, y: torch.Tensor, impl: str) -> None:
    loss = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, convention="others", impl=impl)
    torch.autograd.grad(loss, x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--shapes", nargs="+", default=["256x1000", "2048x32000", "8192x32000", "4096x128256"]
    )
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_auto: needs a CUDA device", file=sys.stderr)
        return 2
    rows = []
    for shape in args.shapes:
        n, c = (int(v) for v in shape.split("x"))
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(n, c, device="cuda", dtype=dtype).requires_grad_(True)
            y = torch.randint(0, c, (n,), device="cuda")
            for impl in ("fused", "triton"):
                ms = _time(lambda x=x, y=y, impl=impl: _step(x, y, impl))
                rows.append(
                    {"shape": shape, "dtype": str(dtype).split(".")[-1], "impl": impl, "ms": ms}
                )
                print(f"{shape} {rows[-1]['dtype']} {impl}: {ms:.2f} ms", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        "| shape | dtype | fused (eager blocks) ms | triton ms | triton / fused |",
        "|---|---|---|---|---|",
    ]
    for i in range(0, len(rows), 2):
        f, t = rows[i], rows[i + 1]
        lines.append(
            f"| {f['shape']} | {f['dtype']} | {f['ms']:.2f} | {t['ms']:.2f} | "
            f"{t['ms'] / f['ms']:.2f} |"
        )
    (args.out / "gpu-auto.md").write_text("\n".join(lines) + "\n")
    (args.out / "gpu-auto.json").write_text(
        json.dumps(
            {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": rows},
            indent=1,
        )
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
