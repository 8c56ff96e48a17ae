"""Vocabulary-parallel label smoothing: a column-parallel LM head split over the ranks.

Run with ``torchrun --nproc-per-node 2 examples/tensor_parallel.py`` (gloo on CPU; NCCL and
one GPU per rank with ``--backend nccl``). Every rank holds the same hidden states and
targets but only its slice of the vocabulary; the loss exchanges per-row statistics in three
all-reduces in forward (a small float64 header, then 16 bytes per row), none in backward.
Each rank checks its loss and gradients against the single-process loss on the full weight.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist

import labelsmooth
from labelsmooth.parallel import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=1031, help="need not divide evenly")
    args = parser.parse_args()

    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if args.backend == "gloo":
        device = torch.device("cpu")
    # uneven slices of the vocabulary, in rank order: [start, stop) per rank
    bounds = [args.vocab * r // world for r in range(world + 1)]
    start, stop = bounds[rank], bounds[rank + 1]

    # the same data on every rank (one seed); each rank keeps its rows of the weight
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.tokens, args.hidden, generator=g).to(device)
    weight = (0.3 * torch.randn(args.vocab, args.hidden, generator=g)).to(device)
    target = torch.randint(0, args.vocab, (args.tokens,), generator=g).to(device)
    target[::7] = -100  # padding tokens
    local_weight = weight[start:stop].clone().requires_grad_()
    h = hidden.clone().requires_grad_()
    kw = dict(label_smoothing=0.1, convention="others", vocab_range=(start, stop))

    # 1. the logits of this rank's slice, then the loss
    local_logits = h @ local_weight.t()  # (N, V_local)
    loss = vocab_parallel_cross_entropy(local_logits, target, **kw)
    loss.backward()

    # 2. the same, fused with the head: the local logits are never all in memory
    w2 = weight[start:stop].clone().requires_grad_()
    h2 = hidden.clone().requires_grad_()
    loss2 = vocab_parallel_linear_cross_entropy(h2, w2, target, chunk_size=16, **kw)
    loss2.backward()
    assert h2.grad is not None
    dist.all_reduce(h2.grad)  # each rank holds its slice's share of the hidden gradient

    # single-process check on the gathered weight
    full_w = weight.clone().requires_grad_()
    ref = labelsmooth.cross_entropy(hidden @ full_w.t(), target, label_smoothing=0.1,
                                    convention="others")  # fmt: skip
    ref.backward()
    assert full_w.grad is not None and local_weight.grad is not None and w2.grad is not None
    with torch.no_grad():
        err = max(
            float((loss - ref).abs()),
            float((loss2 - ref).abs()),
            float((local_weight.grad - full_w.grad[start:stop]).abs().max()),
            float((w2.grad - full_w.grad[start:stop]).abs().max()),
        )
    print(
        f"rank {rank}/{world}: classes [{start}, {stop}) loss {float(loss):.6f} "
        f"(single process {float(ref):.6f}), fused head {float(loss2):.6f}, max error {err:.1e}"
    )
    if not err < 1e-5:
        raise SystemExit(f"rank {rank}: mismatch {err}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
