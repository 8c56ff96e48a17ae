"""Label smoothing on DTensor logits: a ColwiseParallel LM head, as torchtitan lays it out.

Run with ``torchrun --nproc-per-node 2 examples/dtensor_tp.py`` (gloo on CPU). The LM head
is sharded by vocabulary over a 1-D tensor-parallel mesh and keeps its output a DTensor
(``use_local_output=False``), so ``labelsmooth.cross_entropy`` sees logits sharded on the
class dimension and computes the vocabulary-parallel loss over the mesh's process group:
no rank gathers the (N, V) logits. Every rank checks the loss and the gradients of the head
and of the embedding against one process on the unsharded model, and, without smoothing,
against ``F.cross_entropy`` under ``loss_parallel()``.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.parallel import ColwiseParallel, loss_parallel, parallelize_module

import labelsmooth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=1031, help="need not divide evenly")
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tp_mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("tp",))

    # the same model and data on every rank (one seed); the head is then sharded by vocabulary
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Embedding(args.vocab, args.hidden), nn.Linear(args.hidden, args.vocab))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    single = copy.deepcopy(model)  # the unsharded model, for the check
    parallelize_module(model, tp_mesh, {"1": ColwiseParallel(use_local_output=False)})
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g)
    inputs, labels = tokens[:, :-1], tokens[:, 1:].clone()
    labels[:, :3] = -100  # padding

    # the training step: (B, T, V) logits sharded on V, flattened as torchtitan does
    pred = model(inputs)  # DTensor, placements (Shard(dim=2),)
    loss = labelsmooth.cross_entropy(pred.flatten(0, 1), labels.flatten(0, 1), label_smoothing=0.1)
    loss.backward()  # loss: a replicated DTensor, as F.cross_entropy's under loss_parallel()

    # the check: one process on the unsharded model
    ref = labelsmooth.cross_entropy(
        single(inputs).flatten(0, 1), labels.flatten(0, 1), label_smoothing=0.1
    )
    ref.backward()
    head, ref_head = model[1], single[1]
    with torch.no_grad():
        errors = [float((loss.full_tensor() - ref).abs())]
        for p, q in ((head.weight, ref_head.weight), (head.bias, ref_head.bias)):
            errors.append(float((p.grad.full_tensor() - q.grad).abs().max()))
        errors.append(float((model[0].weight.grad - single[0].weight.grad).abs().max()))

        # without smoothing, swappable with F.cross_entropy under loss_parallel()
        pred = model(inputs).flatten(0, 1)
        with loss_parallel():
            builtin = F.cross_entropy(pred, labels.flatten(0, 1))
        ours = labelsmooth.cross_entropy(pred, labels.flatten(0, 1))
        errors.append(float((ours.to_local() - builtin.to_local()).abs()))
        assert ours.placements == builtin.placements
        value, single_value = float(loss.full_tensor()), float(ref)

    local, err = head.weight.to_local().shape[0], max(errors)
    print(
        f"rank {rank}/{world}: {local} of {args.vocab} classes, loss {value:.6f} "
        f"(single process {single_value:.6f}), max error {err:.1e}"
    )
    if not err < 1e-5:
        raise SystemExit(f"rank {rank}: mismatch {err}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
