"""Vocabulary-parallel losses under gloo on CPU equal the single-process losses on the full
logits (loss and every slice's gradient within 1e-6 in float32).

One ``torch.multiprocessing`` spawn per world size (2 and 4 ranks with even slices, 3 with
uneven ones); each spawned group runs the whole grid of cases and writes what failed to a
JSON file per rank, which the test then reads: spawning costs seconds, a case milliseconds.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist

import labelsmooth
from labelsmooth.parallel import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy

pytestmark = pytest.mark.distributed

N, H = 13, 6
#: world size -> the slices' (start, stop), None for the even default
LAYOUTS: dict[int, list[tuple[int, int]] | None] = {
    2: None,
    3: [(0, 10), (10, 25), (25, 37)],  # uneven, and a prime V
    4: None,
}
VOCAB = {2: 38, 3: 37, 4: 36}
TOL = {"rtol": 1e-6, "atol": 1e-6}


def _ranges(world: int) -> list[tuple[int, int]]:
    layout = LAYOUTS[world]
    if layout is not None:
        return layout
    w = VOCAB[world] // world
    return [(r * w, (r + 1) * w) for r in range(world)]


def _data(V: int, seed: int, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(N, V, generator=g, dtype=torch.float64)).to(dtype)
    target = torch.randint(0, V, (N,), generator=g)
    target[[2, 7]] = -100
    prior = torch.rand(V, generator=g, dtype=torch.float64).float() + 0.05
    mask = torch.rand(V, generator=g) > 0.3
    mask[target.clamp_min(0)] = True
    return logits, target, prior, mask


def _check_ce(world: int, rank: int, case: dict, seed: int) -> None:
    V = VOCAB[world]
    start, stop = _ranges(world)[rank]
    dtype = case.pop("dtype", torch.float32)
    logits, target, prior, mask = _data(V, seed, dtype)
    if "ignore_index" in case:
        target = torch.where(target == -100, case["ignore_index"], target)
    use_prior, use_mask = case.pop("prior", False), case.pop("mask", False)
    kw = dict(case, prior=prior if use_prior else None, class_mask=mask if use_mask else None)
    if case.get("reduction") == "none":
        go = torch.linspace(0.5, 1.5, N, dtype=dtype)
    else:
        go = torch.tensor(0.7, dtype=dtype)
    full = logits.clone().requires_grad_()
    want = labelsmooth.cross_entropy(full, target, **kw)
    (want * go).sum().backward()
    local = logits[:, start:stop].clone().requires_grad_()
    vr = None if LAYOUTS[world] is None else (start, stop)
    got = vocab_parallel_cross_entropy(local, target, vocab_range=vr, **kw)
    (got * go).sum().backward()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, **TOL)
    assert full.grad is not None and local.grad is not None
    torch.testing.assert_close(local.grad, full.grad[:, start:stop], **TOL)


def _ce_cases() -> list[dict]:
    cases: list[dict] = []
    # prior and class_mask together or neither; each alone below
    for conv, kl, red, (prior, mask) in itertools.product(
        ("uniform", "others", "unnormalized"),
        (False, True),
        ("mean", "sum", "none"),
        ((False, False), (True, True)),
    ):
        cases.append(
            dict(label_smoothing=0.2, convention=conv, kl=kl, reduction=red, prior=prior, mask=mask)
        )
    cases += [
        dict(label_smoothing=0.2, convention="others", prior=True),
        dict(label_smoothing=0.2, convention="others", mask=True, reduction="none"),
        dict(label_smoothing=0.2, convention="unnormalized", kl=True, prior=True),
        dict(),  # defaults: no smoothing
        dict(label_smoothing=1.0, convention="others", mask=True),
        dict(label_smoothing=0.1, ignore_index=5),
        dict(label_smoothing=0.1, validate_args=False, prior=True),
        dict(label_smoothing=0.1, dtype=torch.float64, convention="others", prior=True),
    ]
    return cases


def _check_nd(world: int, rank: int) -> None:
    """(B, T, V_local) logits, Megatron's layout; the truth puts the class dimension at 1."""
    V = VOCAB[world]
    start, stop = _ranges(world)[rank]
    logits, target, _, _ = _data(V, 99)
    x3, y2 = logits[:12].reshape(3, 4, V), target[:12].reshape(3, 4)
    full = x3.clone().requires_grad_()
    want = labelsmooth.cross_entropy(full.movedim(-1, 1), y2, label_smoothing=0.1, reduction="none")
    want.sum().backward()
    local = x3[..., start:stop].clone().requires_grad_()
    vr = None if LAYOUTS[world] is None else (start, stop)
    got = vocab_parallel_cross_entropy(
        local, y2, vocab_range=vr, label_smoothing=0.1, reduction="none"
    )
    got.sum().backward()
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(local.grad, full.grad[..., start:stop], **TOL)


def _check_gap(world: int, rank: int) -> None:
    """A logit gap of 1000 (and 1e4) stays finite: no log of a normalized probability."""
    V = VOCAB[world]
    start, stop = _ranges(world)[rank]
    vr = None if LAYOUTS[world] is None else (start, stop)
    for gap in (1000.0, 1e4):
        logits = torch.zeros(4, V)
        logits[0, 0] = gap  # target elsewhere: p_y = e^-gap underflows
        logits[1, V - 1] = gap  # the max on the last rank, target on the first
        logits[2, V // 2] = -gap
        logits[3] = torch.linspace(-gap, gap, V)
        target = torch.tensor([V - 1, 0, 1, V // 2])
        for eps, conv in ((0.0, "uniform"), (0.1, "uniform"), (0.1, "others")):
            full = logits.clone().requires_grad_()
            want = labelsmooth.cross_entropy(full, target, label_smoothing=eps, convention=conv)
            want.backward()
            local = logits[:, start:stop].clone().requires_grad_()
            got = vocab_parallel_cross_entropy(
                local, target, vocab_range=vr, label_smoothing=eps, convention=conv
            )
            got.backward()
            assert torch.isfinite(got) and local.grad is not None
            assert torch.isfinite(local.grad).all()
            torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
            torch.testing.assert_close(local.grad, full.grad[:, start:stop], **TOL)


def _check_masked_slice(world: int, rank: int) -> None:
    """The last rank's slice is all padding: -inf logits, excluded by class_mask."""
    V = VOCAB[world]
    start, stop = _ranges(world)[rank]
    last = _ranges(world)[-1][0]
    logits, target, _, _ = _data(V, 5)
    logits[:, last:] = float("-inf")
    target = torch.where(target >= last, 0, target)
    mask = torch.ones(V, dtype=torch.bool)
    mask[last:] = False
    full = logits.clone().requires_grad_()
    want = labelsmooth.cross_entropy(full, target, label_smoothing=0.1, class_mask=mask)
    want.backward()
    local = logits[:, start:stop].clone().requires_grad_()
    vr = None if LAYOUTS[world] is None else (start, stop)
    got = vocab_parallel_cross_entropy(
        local, target, vocab_range=vr, label_smoothing=0.1, class_mask=mask
    )
    got.backward()
    torch.testing.assert_close(got, want, **TOL)
    assert local.grad is not None and torch.isfinite(local.grad).all()
    torch.testing.assert_close(local.grad, full.grad[:, start:stop], **TOL)


def _check_adversarial(world: int, rank: int) -> None:
    """NaN and inf in ignored rows: a finite loss and an exactly zero gradient there; a
    mean over all-ignored targets is 0 with zero gradients."""
    V = VOCAB[world]
    start, stop = _ranges(world)[rank]
    vr = None if LAYOUTS[world] is None else (start, stop)
    logits, target, _, _ = _data(V, 8)
    logits[2] = float("nan")  # target[2] is ignored
    logits[7, 0] = float("inf")  # so is target[7]
    full = logits.clone().requires_grad_()
    want = labelsmooth.cross_entropy(full, target, label_smoothing=0.1)
    want.backward()
    local = logits[:, start:stop].clone().requires_grad_()
    got = vocab_parallel_cross_entropy(local, target, vocab_range=vr, label_smoothing=0.1)
    got.backward()
    assert torch.isfinite(got) and local.grad is not None
    assert (local.grad[[2, 7]] == 0).all()
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(local.grad, full.grad[:, start:stop], **TOL)
    none = torch.full((N,), -100)
    local = logits[:, start:stop].clone().requires_grad_()
    got = vocab_parallel_cross_entropy(local, none, vocab_range=vr, label_smoothing=0.1)
    got.backward()
    assert float(got) == 0.0 and local.grad is not None and (local.grad == 0).all()


def _check_linear(world: int, rank: int, case: dict) -> None:
    V = VOCAB[world]
    start, stop = _ranges(world)[rank]
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(N, H, generator=g)
    weight = torch.randn(V, H, generator=g)
    bias = torch.randn(V, generator=g) if case.pop("bias", False) else None
    _, target, prior, mask = _data(V, 4)
    kw = dict(case)
    kw["prior"] = prior if kw.pop("prior", False) else None
    kw["class_mask"] = mask if kw.pop("mask", False) else None
    reduce_h = kw.pop("reduce_hidden_grad", False)
    chunk = kw.pop("chunk_size", 4)
    go = torch.linspace(0.5, 1.5, N) if kw.get("reduction") == "none" else torch.tensor(0.7)

    h_full, w_full = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    b_full = None if bias is None else bias.clone().requires_grad_()
    want = labelsmooth.linear_cross_entropy(h_full, w_full, target, b_full, **kw)
    (want * go).sum().backward()

    h = hidden.clone().requires_grad_()
    w = weight[start:stop].clone().requires_grad_()
    b = None if bias is None else bias[start:stop].clone().requires_grad_()
    vr = None if LAYOUTS[world] is None else (start, stop)
    got = vocab_parallel_linear_cross_entropy(
        h, w, target, b, vocab_range=vr, chunk_size=chunk, reduce_hidden_grad=reduce_h, **kw
    )
    (got * go).sum().backward()
    torch.testing.assert_close(got, want, **TOL)
    assert w.grad is not None and w_full.grad is not None and h.grad is not None
    torch.testing.assert_close(w.grad, w_full.grad[start:stop], **TOL)
    if b is not None:
        assert b.grad is not None and b_full is not None and b_full.grad is not None
        torch.testing.assert_close(b.grad, b_full.grad[start:stop], **TOL)
    gh = h.grad
    if not reduce_h:  # each rank holds its slice's share: the caller's layer sums them
        gh = gh.clone()
        dist.all_reduce(gh)
    torch.testing.assert_close(gh, h_full.grad, **TOL)


def _linear_cases() -> list[dict]:
    return [
        dict(label_smoothing=0.1),
        dict(label_smoothing=0.2, convention="others", prior=True, mask=True, bias=True),
        dict(label_smoothing=0.2, convention="unnormalized", kl=True, reduction="sum"),
        dict(label_smoothing=0.1, reduction="none", bias=True, reduce_hidden_grad=True),
        dict(label_smoothing=0.1, softcap=5.0, mask=True, reduce_hidden_grad=True),
        dict(label_smoothing=0.3, convention="others", kl=True, chunk_size=100),
    ]


def _expect_error(fn: Callable[[], object], *fragments: str) -> None:
    try:
        fn()
    except ValueError as err:
        msg = str(err)
        assert any(f in msg for f in fragments), msg
        return
    raise AssertionError(f"no ValueError (expected one of {fragments})")


def _check_errors(world: int, rank: int) -> None:
    """Every rank raises (none waits in a collective), and the group stays usable."""
    V = VOCAB[world]
    ranges = _ranges(world)
    start, stop = ranges[rank]
    logits, target, prior, _ = _data(V, 11)
    local = logits[:, start:stop]
    last = world - 1

    def call(x=local, y=target, **kw):
        kw.setdefault("vocab_range", (start, stop))
        return vocab_parallel_cross_entropy(x, y, label_smoothing=0.1, **kw)

    # one rank's vocab_range does not match its logits' width
    bad = (start, stop + 1) if rank == last else (start, stop)
    own = "holds" if rank == last else f"rank(s) [{last}]"
    _expect_error(lambda: call(vocab_range=bad), own)
    # slices with a gap (the last rank starts one class late)
    gap = (start + 1, stop + 1) if rank == last else (start, stop)
    _expect_error(lambda: call(vocab_range=gap), "tile [0, V)")
    # one rank's target differs
    t2 = target.clone()
    if rank == 0:
        t2[0] = (int(t2[0]) + 1) % V
    _expect_error(lambda: call(y=t2), "target differs")
    # a target outside [0, V) on every rank
    t3 = target.clone()
    t3[1] = V
    _expect_error(lambda: call(y=t3), f"outside [0, {V})")
    # one rank with another label_smoothing
    _expect_error(
        lambda: vocab_parallel_cross_entropy(
            local, target, vocab_range=(start, stop), label_smoothing=0.2 if rank == 0 else 0.1
        ),
        "different label_smoothing",
    )
    # the prior of the local slice instead of the full vocabulary
    _expect_error(lambda: call(prior=prior[start:stop]), "full vocabulary", "rank(s) [")
    # a negative prior value on one rank
    p2 = prior.clone()
    if rank == last:
        p2[0] = -1.0
    _expect_error(lambda: call(prior=p2), "non-negative", f"rank(s) [{last}]")
    if LAYOUTS[world] is not None:  # uneven slices without vocab_range
        _expect_error(lambda: call(vocab_range=None), "vocab_range=None assumes equal slices")
    # what would change a later collective's dtype or size on one rank (a mismatch there
    # kills the ranks inside gloo): every rank raises the same error instead
    wide = local.double() if rank == last else local
    _expect_error(lambda: call(x=wide), "different dtype of the statistics")
    # float16 next to float32: the same statistics dtype, so it is allowed
    rounded = local.half().float()
    mixed = call(x=local.half() if rank == 0 else rounded)
    torch.testing.assert_close(float(mixed), float(call(x=rounded)), rtol=1e-3, atol=0)
    rows = (local[:-1], target[:-1]) if rank == last else (local, target)
    _expect_error(lambda: call(x=rows[0], y=rows[1]), "different number of rows")
    for validate in (True, False):
        _expect_error(
            lambda v=validate: call(validate_args=v if rank == 0 else not v),
            "different validate_args",
        )
    # the group still works after all of these
    _check_ce(world, rank, dict(label_smoothing=0.1), 0)


def _check_collectives(world: int, rank: int) -> None:
    """Forward: one all-reduce MAX of a float64 header of 3W + 26 values (its size depends on
    the group only), one all-reduce MAX of N and one all-reduce SUM of 3N float32 values;
    backward: none (plain and linear)."""
    V = VOCAB[world]
    start, stop = _ranges(world)[rank]
    vr = None if LAYOUTS[world] is None else (start, stop)
    logits, target, _, _ = _data(V, 21)
    calls: list[tuple[str, int, torch.dtype]] = []
    real = dist.all_reduce

    def spy(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        calls.append((str(op), tensor.numel(), tensor.dtype))
        return real(tensor, op=op, group=group, async_op=async_op)

    dist.all_reduce = spy  # type: ignore[assignment]
    try:
        for validate in (True, False):
            calls.clear()
            x = logits[:, start:stop].clone().requires_grad_()
            loss = vocab_parallel_cross_entropy(
                x, target, vocab_range=vr, label_smoothing=0.1, validate_args=validate
            )
            want = [
                ("max", 3 * world + 26, torch.float64),
                ("max", N, torch.float32),
                ("sum", 3 * N, torch.float32),
            ]
            got = [(op.lower().rsplit(".", 1)[-1], n, dt) for op, n, dt in calls]
            assert got == want, (got, want)
            calls.clear()
            loss.backward()
            assert calls == [], calls
        g = torch.Generator().manual_seed(0)
        h = torch.randn(N, H, generator=g, requires_grad=True)
        w = torch.randn(stop - start, H, generator=g, requires_grad=True)
        calls.clear()
        loss = vocab_parallel_linear_cross_entropy(h, w, target, vocab_range=vr)
        assert len(calls) == 3, calls
        calls.clear()
        loss.backward()
        assert calls == [], calls
    finally:
        dist.all_reduce = real  # type: ignore[assignment]


def _check_compiled(world: int, rank: int) -> None:
    """torch.compile(fullgraph=True) of a step with the vocabulary-parallel loss equals eager
    (the collectives run inside the op when the graph runs)."""
    V = VOCAB[world]
    start, stop = _ranges(world)[rank]
    logits, target, prior, _ = _data(V, 11)
    vr = None if LAYOUTS[world] is None else (start, stop)

    def step(x, y):
        return vocab_parallel_cross_entropy(
            x, y, vocab_range=vr, label_smoothing=0.1, convention="others", prior=prior
        )

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (compiled, step):
        local = logits[:, start:stop].clone().requires_grad_()
        loss = fn(local, target)
        loss.backward()
        results.append((loss.detach(), local.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOL)


def _check_explicit_group(world: int, rank: int) -> None:
    """A group passed by the caller gives the default group's loss, and the loss keeps no
    reference to it once the caller has destroyed and dropped it."""
    import gc

    from labelsmooth.parallel import _cross_entropy

    V = VOCAB[world]
    start, stop = _ranges(world)[rank]
    logits, target, _, _ = _data(V, 12)
    vr = None if LAYOUTS[world] is None else (start, stop)
    sub = dist.new_group(list(range(world)))
    name = sub.group_name
    local = logits[:, start:stop]
    got = vocab_parallel_cross_entropy(
        local, target, group=sub, vocab_range=vr, label_smoothing=0.1
    )
    want = vocab_parallel_cross_entropy(local, target, vocab_range=vr, label_smoothing=0.1)
    torch.testing.assert_close(got, want, **TOL)
    dist.destroy_process_group(sub)
    del sub
    gc.collect()
    assert name not in _cross_entropy._GROUPS


def _worker(rank: int, world: int) -> list[str]:
    """Every case in one gloo group (the ``run_ranks`` fixture of conftest.py)."""
    failures: list[str] = []

    def run(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # recorded, reported by the test
            failures.append(f"{name}: {traceback.format_exc(limit=4)}")

    # 4 ranks on a 2-core machine are slow: every second case of the grid there
    step = 2 if world > 3 else 1
    for i, case in enumerate(_ce_cases()):
        if i % step == 0:
            run(f"ce {case}", lambda c=dict(case), i=i: _check_ce(world, rank, c, i))
    run("nd", lambda: _check_nd(world, rank))
    run("gap", lambda: _check_gap(world, rank))
    run("masked slice", lambda: _check_masked_slice(world, rank))
    run("adversarial", lambda: _check_adversarial(world, rank))
    for case in _linear_cases()[:: 2 if world > 3 else 1]:
        run(f"linear {case}", lambda c=dict(case): _check_linear(world, rank, c))
    run("collectives", lambda: _check_collectives(world, rank))
    run("errors", lambda: _check_errors(world, rank))
    run("explicit group", lambda: _check_explicit_group(world, rank))
    if world == 2:
        run("compiled", lambda: _check_compiled(world, rank))
    return failures


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_vocab_parallel_matches_single_process(world: int, run_ranks: Callable) -> None:
    run_ranks(_worker, world)
