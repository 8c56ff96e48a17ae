"""labelsmooth.cross_entropy of DTensor logits on a 2-rank gloo DeviceMesh on CPU.

Sharded on the class dimension it is the vocabulary-parallel loss: the uniform convention
against ``loss_parallel()`` + ``F.cross_entropy`` (loss, the logits' gradient, the result's
type and placements), every other option against one process on the gathered logits; an
odd vocabulary (uneven shards) throughout. Replicated and batch-sharded logits, the module
form, a 2-D mesh and the one-line refusals too. Each group of ranks runs a grid of cases
and returns what failed (``run_ranks`` in ``tests/parallel/conftest.py``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import labelsmooth

pytestmark = pytest.mark.distributed

N, V = 11, 37  # V odd: shards of 19 and 18 classes
TOL = {"rtol": 1e-6, "atol": 1e-6}


def _data(seed: int, shape: tuple[int, ...] = (N, V)):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(shape, generator=g)
    rows = (shape[0], *shape[2:])
    target = torch.randint(0, V, rows, generator=g)
    target.view(-1)[[1, 6]] = -100
    prior = torch.rand(V, generator=g) + 0.05
    mask = torch.rand(V, generator=g) > 0.3
    mask[target.clamp_min(0)] = True
    return logits, target, prior, mask


def _pair(mesh, logits: torch.Tensor, placements: list):
    """(the DTensor logits, the same values as a plain leaf), both requiring grad."""
    from torch.distributed.tensor import distribute_tensor

    d = distribute_tensor(logits, mesh, placements).requires_grad_()
    return d, logits.clone().requires_grad_()


def _backward(loss: torch.Tensor, reduction: str) -> None:
    (loss.sum() if reduction == "none" else loss).backward()


def _check_against_loss_parallel(mesh) -> None:
    """Uniform, no smoothing: equal to loss_parallel() (value, gradient, type, placements);
    with smoothing, loss_parallel() refuses on this torch, so the truth is F.cross_entropy
    on the gathered logits (and loss_parallel() too, where it accepts it)."""
    from torch.distributed.tensor import DTensor, Shard
    from torch.distributed.tensor.parallel import loss_parallel

    logits, target, _, _ = _data(0)
    for reduction in ("mean", "sum", "none"):
        for eps in (0.0, 0.1):
            d, full = _pair(mesh, logits, [Shard(1)])
            got = labelsmooth.cross_entropy(d, target, reduction=reduction, label_smoothing=eps)
            _backward(got, reduction)
            ref = F.cross_entropy(full, target, reduction=reduction, label_smoothing=eps)
            _backward(ref, reduction)
            assert isinstance(got, DTensor) and isinstance(d.grad, DTensor)
            torch.testing.assert_close(got.full_tensor(), ref, **TOL)
            torch.testing.assert_close(d.grad.full_tensor(), full.grad, **TOL)
            lp_in = _pair(mesh, logits, [Shard(1)])[0]
            try:
                with loss_parallel():
                    want = F.cross_entropy(lp_in, target, reduction=reduction, label_smoothing=eps)
                    _backward(want, reduction)
            except RuntimeError:  # torch 2.13: label_smoothing under loss_parallel fails
                assert eps > 0
                continue
            assert got.placements == want.placements and got.shape == want.shape
            torch.testing.assert_close(got.to_local(), want.to_local(), **TOL)
            assert lp_in.grad is not None and d.grad.placements == lp_in.grad.placements
            torch.testing.assert_close(d.grad.to_local(), lp_in.grad.to_local(), **TOL)


def _option_cases() -> list[dict]:
    return [
        dict(label_smoothing=0.2, convention="others"),
        dict(label_smoothing=0.2, convention="unnormalized", kl=True, reduction="sum"),
        dict(label_smoothing=0.2, convention="others", prior=True, mask=True, reduction="none"),
        dict(label_smoothing=0.3, prior=True, kl=True),
        dict(label_smoothing=0.1, mask=True, ignore_index=5),
        dict(label_smoothing=0.1, validate_args=False, convention="unnormalized"),
        dict(label_smoothing=0.1, shard=-1, dtarget=True),  # Shard(-1), a Replicate target
    ]


def _check_options(mesh, case: dict, seed: int) -> None:
    """Every option of the vocabulary-parallel loss against one process."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    logits, target, prior, mask = _data(seed)
    if "ignore_index" in case:
        target = torch.where(target == -100, case["ignore_index"], target)
    kw = dict(case)
    kw["prior"] = prior if kw.pop("prior", False) else None
    kw["class_mask"] = mask if kw.pop("mask", False) else None
    shard, dtarget = kw.pop("shard", 1), kw.pop("dtarget", False)
    reduction = kw.get("reduction", "mean")
    d, full = _pair(mesh, logits, [Shard(shard)])
    y = distribute_tensor(target, mesh, [Replicate()]) if dtarget else target
    got = labelsmooth.cross_entropy(d, y, **kw)
    _backward(got, reduction)
    want = labelsmooth.cross_entropy(full, target, **kw)
    _backward(want, reduction)
    torch.testing.assert_close(got.full_tensor(), want, **TOL)
    assert d.grad is not None and full.grad is not None
    torch.testing.assert_close(d.grad.full_tensor(), full.grad, **TOL)


def _check_nd_and_module(mesh) -> None:
    """(B, V, T) logits sharded on dim 1, through LabelSmoothingCrossEntropy."""
    from torch.distributed.tensor import Shard

    logits, target, _, _ = _data(3, (3, V, 4))
    loss_fn = labelsmooth.LabelSmoothingCrossEntropy(label_smoothing=0.1, convention="others")
    for reduction in ("mean", "none"):
        loss_fn.reduction = reduction
        d, full = _pair(mesh, logits, [Shard(1)])
        got = loss_fn(d, target)
        _backward(got, reduction)
        want = loss_fn(full, target)
        _backward(want, reduction)
        assert tuple(got.shape) == tuple(want.shape)
        torch.testing.assert_close(got.full_tensor(), want, **TOL)
        torch.testing.assert_close(d.grad.full_tensor(), full.grad, **TOL)


def _check_unbatched(mesh) -> None:
    """(V,) logits with a () target, as F.cross_entropy allows: class dim 0."""
    from torch.distributed.tensor import Shard

    logits, target, _, _ = _data(7)
    for reduction in ("mean", "none"):
        d, full = _pair(mesh, logits[0], [Shard(0)])
        got = labelsmooth.cross_entropy(d, target[0], reduction=reduction, label_smoothing=0.1)
        got.backward()
        want = labelsmooth.cross_entropy(full, target[0], reduction=reduction, label_smoothing=0.1)
        want.backward()
        assert got.shape == want.shape == ()
        torch.testing.assert_close(got.full_tensor(), want, **TOL)
        torch.testing.assert_close(d.grad.full_tensor(), full.grad, **TOL)


def _check_replicated_and_batch(mesh) -> None:
    """Replicate(): the single-process loss on the local value (any option, weight too);
    Shard(0), data parallel: "sum" and "none" exact, "mean" refused in one line."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    logits, target, _, _ = _data(4)
    weight = torch.rand(V, generator=torch.Generator().manual_seed(1)) + 0.5
    kw = dict(label_smoothing=0.1, weight=weight)
    d, full = _pair(mesh, logits, [Replicate()])
    got = labelsmooth.cross_entropy(d, target, **kw)
    got.backward()
    want = labelsmooth.cross_entropy(full, target, **kw)
    want.backward()
    assert got.placements == (Replicate(),)
    torch.testing.assert_close(got.to_local(), want, **TOL)
    torch.testing.assert_close(d.grad.full_tensor(), full.grad, **TOL)
    y = distribute_tensor(target, mesh, [Shard(0)])
    for reduction, placement in (("sum", "Partial"), ("none", "Shard")):
        d, full = _pair(mesh, logits, [Shard(0)])
        got = labelsmooth.cross_entropy(d, y, reduction=reduction, **kw)
        _backward(got, reduction)
        want = labelsmooth.cross_entropy(full, target, reduction=reduction, **kw)
        _backward(want, reduction)
        assert type(got.placements[0]).__name__ == placement, got.placements
        torch.testing.assert_close(got.full_tensor(), want, **TOL)
        torch.testing.assert_close(d.grad.full_tensor(), full.grad, **TOL)
    _expect(lambda: labelsmooth.cross_entropy(d, y, **kw), "reduction='mean'", "batch")
    _expect(lambda: labelsmooth.cross_entropy(d, target, reduction="sum"), "target must be")


def _expect(fn: Callable[[], object], *fragments: str) -> None:
    try:
        fn()
    except ValueError as err:
        msg = str(err)
        assert "\n" not in msg and all(f in msg for f in fragments), msg
        return
    raise AssertionError(f"no ValueError (expected {fragments})")


def _check_refusals(mesh) -> None:
    """One line naming the argument: a Partial placement, options the vocabulary-parallel
    loss does not have, a target with the wrong placements."""
    from torch.distributed.tensor import DTensor, Partial, Shard, distribute_tensor

    logits, target, _, _ = _data(5)
    partial = DTensor.from_local(logits, mesh, [Partial("sum")], run_check=False)
    _expect(lambda: labelsmooth.cross_entropy(partial, target), "input", "Partial(sum)")
    d = distribute_tensor(logits, mesh, [Shard(1)])
    ce = labelsmooth.cross_entropy
    _expect(lambda: ce(d, target, weight=torch.ones(V)), "weight")
    _expect(lambda: ce(d, target, impl="torch"), "impl='torch'")
    _expect(lambda: ce(d, target, return_nll=True), "return_nll")
    _expect(lambda: ce(d, torch.softmax(logits, 1)), "soft targets")
    _expect(lambda: ce(d, distribute_tensor(target, mesh, [Shard(0)])), "target must be")
    _expect(lambda: ce(d, target, reduction="avg"), "reduction")
    # the group still works after all of these
    assert torch.isfinite(ce(d, target, label_smoothing=0.1).full_tensor())


def _check_2d_mesh(world: int) -> None:
    """A (dp, tp) mesh: (1, 2), the vocabulary on tp; (2, 1), the batch on dp."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    logits, target, prior, _ = _data(6)
    kw = dict(label_smoothing=0.1, convention="others", prior=prior, reduction="sum")
    for shape in ((1, world), (world, 1)):
        mesh = init_device_mesh("cpu", shape, mesh_dim_names=("dp", "tp"))
        d, full = _pair(mesh, logits, [Shard(0), Shard(1)])
        y = distribute_tensor(target, mesh, [Shard(0), Replicate()])
        got = labelsmooth.cross_entropy(d, y, **kw)
        got.backward()
        want = labelsmooth.cross_entropy(full, target, **kw)
        want.backward()
        torch.testing.assert_close(got.full_tensor(), want, **TOL)
        torch.testing.assert_close(d.grad.full_tensor(), full.grad, **TOL)


def _worker(rank: int, world: int) -> list[str]:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    failures: list[str] = []

    def run(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # recorded, reported by the test
            failures.append(f"{name}: {traceback.format_exc(limit=4)}")

    run("loss_parallel", lambda: _check_against_loss_parallel(mesh))
    for i, case in enumerate(_option_cases()):
        run(f"options {case}", lambda c=dict(case), i=i: _check_options(mesh, c, 10 + i))
    run("nd and module", lambda: _check_nd_and_module(mesh))
    run("unbatched", lambda: _check_unbatched(mesh))
    run("replicated and batch", lambda: _check_replicated_and_batch(mesh))
    run("refusals", lambda: _check_refusals(mesh))
    run("2-D mesh", lambda: _check_2d_mesh(world))
    dist.barrier()
    return failures


@pytest.mark.timeout(120)
def test_dtensor_cross_entropy(run_ranks) -> None:
    run_ranks(_worker, 2)
