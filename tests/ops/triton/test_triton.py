"""impl="triton" against the reference: under the Triton interpreter on CPU, compiled on CUDA.

Without CUDA this module sets ``TRITON_INTERPRET=1`` before triton is imported (the interpreter
is chosen when triton's functions and the kernels are defined), and the kernels run on CPU
tensors, float32/float16/float64 only (the interpreter's bfloat16 arithmetic is
broken). With CUDA the same tests run the compiled kernels on the GPU, and the ``gpu`` tests
add bfloat16, real vocabulary sizes, host-synchronization and memory checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from triton_setup import CUDA, DEVICE  # first: skips this module where triton cannot run

import labelsmooth
from labelsmooth import _dispatch
from labelsmooth.ops.triton import kernels as _triton_kernels
from labelsmooth.ops.triton import launch as ls_triton

pytestmark = pytest.mark.triton
CONVENTIONS = ["uniform", "others", "unnormalized"]
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

assert _triton_kernels.INTERPRETED != CUDA


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch):
    """Blocks small enough for a row of a few hundred classes to take several of them, with a
    ragged last one."""
    monkeypatch.setattr(ls_triton, "MAX_BLOCK", 256)


def _run(impl, x, y, go_seed=3, **kw):
    """Loss and input gradient, the loss weighted by a fixed random incoming gradient."""
    x = x.detach().clone().requires_grad_(True)
    loss = labelsmooth.cross_entropy(x, y, impl=impl, **kw)
    go = torch.rand(loss.shape, generator=torch.Generator().manual_seed(go_seed)) + 0.5
    (loss * go.to(device=loss.device, dtype=loss.dtype)).sum().backward()
    return loss.detach(), x.grad


def _builtin(x, y, **kw):
    """``F.cross_entropy`` at x's dtype: loss and gradient, weighted as in :func:`_run`."""
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(x, y, **kw)
    go = torch.rand(loss.shape, generator=torch.Generator().manual_seed(3)) + 0.5
    (loss * go.to(device=loss.device, dtype=loss.dtype)).sum().backward()
    return loss.detach(), x.grad


def _data(shape, seed=0, ignore_every=4):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = torch.randn(shape, generator=g) * 3
    y = torch.randint(0, c, shape[:1] + shape[2:], generator=g)
    if ignore_every:
        y.view(-1)[::ignore_every] = -100
    return x.to(DEVICE), y.to(DEVICE), g


@pytest.mark.parametrize("shape", [(7, 37), (5, 701), (2, 13, 3)])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_triton_equals_reference_over_options(shape, convention):
    x, y, g = _data(shape)
    c = shape[1]
    w = (torch.rand(c, generator=g) + 0.2).to(DEVICE)
    prior = torch.rand(c, generator=g).to(DEVICE)
    mask = torch.rand(c, generator=g) > 0.3
    mask[0] = True
    mask = mask.to(DEVICE)
    # every option at least once, each with and without the others; ε = 0 and 1 included
    cases = [
        dict(label_smoothing=0.1),  # uniform prior: the scalar a0 path
        dict(weight=w, kl=True, label_smoothing=0.3, reduction="sum"),
        dict(prior=prior, class_mask=mask, label_smoothing=1.0, reduction="none"),
        dict(weight=w, prior=prior, class_mask=mask, kl=True, label_smoothing=0.0),
        dict(class_mask=mask, kl=True, label_smoothing=0.2, reduction="none", ignore_index=3),
    ]
    for kw in cases:
        yk = torch.where(y == -100, kw.get("ignore_index", -100), y)
        ref = _run("reference", x, yk, convention=convention, **kw)
        got = _run("triton", x, yk, convention=convention, **kw)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(7, 37), (5, 701), (2, 13, 3)])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_class_conditional_prior_equals_reference(shape, convention):
    """A (C, C) prior (row y for target y): each program reads its target's row of a."""
    x, y, g = _data(shape)
    c = shape[1]
    w = (torch.rand(c, generator=g) + 0.2).to(DEVICE)
    prior = torch.rand(c, c, generator=g).to(DEVICE)
    prior[1, 1] = 0.0
    mask = torch.rand(c, generator=g) > 0.3
    mask[:2] = True
    mask = mask.to(DEVICE)
    cases = [
        dict(prior=prior, label_smoothing=0.2),
        dict(prior=prior, weight=w, class_mask=mask, kl=True, label_smoothing=0.3),
        dict(prior=prior, class_mask=mask, label_smoothing=1.0, reduction="none"),
    ]
    for kw in cases:
        ref = _run("reference", x, y, convention=convention, **kw)
        got = _run("triton", x, y, convention=convention, **kw)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the in-place backward reads the same rows
    xi = x.clone().requires_grad_(True)
    kw = dict(prior=prior, weight=w, label_smoothing=0.3, convention=convention)
    ref = _run("reference", x, y, **kw)[1]
    loss = labelsmooth.cross_entropy(xi * 1, y, impl="triton", inplace_backward=True, **kw)
    go = torch.rand(loss.shape, generator=torch.Generator().manual_seed(3)) + 0.5
    (loss * go.to(device=loss.device)).sum().backward()
    torch.testing.assert_close(xi.grad, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 50), (2, 300, 4)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_inplace_backward_overwrites_logits_with_gradient(shape, reduction):
    x, y, _ = _data(shape, seed=1)
    kw = dict(label_smoothing=0.1, reduction=reduction, class_mask=None)
    ref_loss, ref_grad = _run("reference", x, y, **kw)
    lin = torch.nn.Linear(shape[1], shape[1]).to(DEVICE)
    torch.nn.init.eye_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    h = x.movedim(1, -1).clone().requires_grad_(True)
    logits = lin(h).movedim(-1, 1).contiguous()  # a non-leaf, as in a real model
    loss = labelsmooth.cross_entropy(logits, y, impl="triton", inplace_backward=True, **kw)
    torch.testing.assert_close(logits.detach(), x)  # forward leaves the logits alone
    go = torch.rand(loss.shape, generator=torch.Generator().manual_seed(3)) + 0.5
    (loss * go.to(DEVICE)).sum().backward()
    torch.testing.assert_close(loss.detach(), ref_loss)
    torch.testing.assert_close(h.grad.movedim(-1, 1), ref_grad)  # eye weight: same gradient
    torch.testing.assert_close(logits.detach(), ref_grad)  # the logits now hold the gradient


def test_inplace_backward_on_logits_saved_elsewhere_raises():
    x = torch.randn(4, 6, device=DEVICE, requires_grad=True)
    logits = x.exp()  # exp saves its output for backward
    y = torch.tensor([0, 1, 2, 3], device=DEVICE)
    loss = labelsmooth.cross_entropy(logits, y, impl="triton", inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_float16_error_no_larger_than_builtin(reduction):
    g = torch.Generator().manual_seed(2)
    x64 = (torch.randn(12, 301, generator=g, dtype=torch.float64) * 4).to(DEVICE)
    y = torch.randint(0, 301, (12,), generator=g).to(DEVICE)
    kw = dict(label_smoothing=0.1, reduction=reduction)
    x = x64.to(torch.float16)
    truth_l, truth_g = _run("reference", x.double(), y, **kw)  # of the values as stored
    got_l, got_g = _run("triton", x, y, **kw)
    assert got_l.dtype == torch.float16 and got_g.dtype == torch.float16
    builtin_l, builtin_g = _builtin(x, y, **kw)
    for got, builtin, truth in ((got_l, builtin_l, truth_l), (got_g, builtin_g, truth_g)):
        err = (got.double() - truth).abs().max()
        builtin_err = (builtin.double() - truth).abs().max()
        floor = (truth.to(torch.float16).double() - truth).abs().max()  # rounding the result
        assert err <= 2 * max(builtin_err, floor) + 1e-7, (err, builtin_err, floor)


@pytest.mark.parametrize("offset", [1e4, 1e6])
def test_large_common_offset_against_float64_truth(offset):
    """Statistics relative to the running max: the error does not grow with the offset."""
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(6, 700, generator=g) * 4 + offset).to(DEVICE)  # the values as stored
    y = torch.randint(0, 700, (6,), generator=g).to(DEVICE)
    for kw in (dict(label_smoothing=0.1), dict(label_smoothing=0.1, reduction="none")):
        truth_l, truth_g = _run("reference", x.double(), y, **kw)
        got_l, got_g = _run("triton", x, y, **kw)
        builtin_l, builtin_g = _builtin(x, y, **kw)
        for got, builtin, truth, atol in (
            (got_l, builtin_l, truth_l, 1e-5),
            (got_g, builtin_g, truth_g, 1e-7),
        ):
            err = (got.double() - truth).abs().max()
            builtin_err = (builtin.double() - truth).abs().max()
            assert err <= 2 * builtin_err + atol, (err, builtin_err)


def test_masked_minus_inf_logits_and_nan_in_ignored_row():
    x, y, g = _data((6, 300), seed=6, ignore_every=0)
    mask = torch.rand(300, generator=g) > 0.2
    mask[y.cpu()] = True
    mask = mask.to(DEVICE)
    x = torch.where(mask, x, float("-inf"))  # excluded classes: -inf logits
    y[2] = -100
    x_nan = x.clone()
    x_nan[2] = float("nan")  # an ignored row may hold anything
    x_zero = x.clone()
    x_zero[2] = 0.0
    for kw in (
        dict(label_smoothing=0.2, class_mask=mask),
        dict(label_smoothing=0.2, class_mask=mask, convention="others", kl=True),
        dict(label_smoothing=0.2, class_mask=mask, reduction="none", inplace_backward=True),
    ):
        got_l, got_g = _run("triton", x_nan, y, **kw)
        kw.pop("inplace_backward", None)
        ref_l, ref_g = _run("reference", x_zero, y, **kw)
        assert torch.isfinite(got_l).all() and torch.isfinite(got_g).all()
        torch.testing.assert_close(got_l, ref_l, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got_g, ref_g, rtol=1e-5, atol=1e-6)
        assert (got_g[2] == 0).all()


def test_float64_matches_reference_tightly():
    x, y, g = _data((5, 300), seed=7)
    w = (torch.rand(300, generator=g) + 0.5).to(DEVICE)
    for kw in (dict(label_smoothing=0.1), dict(label_smoothing=0.3, weight=w, kl=True)):
        got = _run("triton", x.double(), y, **kw)
        ref = _run("reference", x.double(), y, **kw)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_incoming_gradient_scaling_and_non_contiguous_input():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(20, 9, generator=g).t().to(DEVICE)  # (9, 20), non-contiguous
    y = torch.randint(0, 20, (9,), generator=g).to(DEVICE)
    for reduction, factor in (("mean", 1.0), ("sum", 2.5), ("none", 1.0), ("none", -0.5)):
        grads = []
        for impl in ("triton", "reference"):
            xi = x.detach().clone().requires_grad_(True)
            loss = labelsmooth.cross_entropy(
                xi, y, label_smoothing=0.2, reduction=reduction, impl=impl
            )
            (loss.sum() * factor).backward()  # "none": an expanded (stride-0) grad_output
            grads.append(xi.grad)
        torch.testing.assert_close(grads[0], grads[1])


def test_return_nll_is_the_unsmoothed_nll():
    x, y, _ = _data((6, 40), seed=9)
    _, nll = labelsmooth.cross_entropy(
        x, y, label_smoothing=0.1, reduction="none", impl="triton", return_nll=True
    )
    want = F.cross_entropy(x, y, reduction="none")  # 0 on ignored rows
    torch.testing.assert_close(nll, want)
    assert not nll.requires_grad


def test_no_rows_and_no_gradient():
    x = torch.zeros(0, 5, device=DEVICE, requires_grad=True)
    y = torch.zeros(0, dtype=torch.long, device=DEVICE)
    for reduction in ("mean", "sum", "none"):
        got = labelsmooth.cross_entropy(x, y, reduction=reduction, impl="triton")
        ref = labelsmooth.cross_entropy(x, y, reduction=reduction, impl="reference")
        torch.testing.assert_close(got, ref)
    x, y, _ = _data((4, 30))
    with torch.no_grad():
        got = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="triton")
    torch.testing.assert_close(got, labelsmooth.cross_entropy(x, y, label_smoothing=0.1))


def test_double_and_second_backward_raise():
    x = torch.randn(3, 5, device=DEVICE, requires_grad=True)
    y = torch.tensor([0, 1, 2], device=DEVICE)
    loss = labelsmooth.cross_entropy(x, y, impl="triton")
    with pytest.raises(RuntimeError, match="impl='triton' does not support double backward"):
        torch.autograd.grad(loss, x, create_graph=True)
    loss = labelsmooth.cross_entropy(x, y, impl="triton")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="impl='triton' cannot backward twice"):
        loss.backward()


def test_refusals_say_why(monkeypatch):
    x = torch.randn(2, 3, device=DEVICE)
    with pytest.raises(ValueError, match="impl='triton' cannot run here: it takes class-index"):
        labelsmooth.cross_entropy(x, torch.softmax(x, 1), impl="triton")
    w = torch.ones(3, device=DEVICE, requires_grad=True)
    with pytest.raises(ValueError, match="impl='triton' cannot run here: .*weight"):
        labelsmooth.cross_entropy(x, torch.tensor([0, 1], device=DEVICE), w, impl="triton")
    monkeypatch.setattr(_dispatch, "_triton_missing", lambda: True)
    with pytest.raises(ValueError, match="triton is not installed"):
        labelsmooth.cross_entropy(x, torch.tensor([0, 1], device=DEVICE), impl="triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="impl='triton' cannot run here: it runs on CUDA"):
        labelsmooth.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), impl="triton")


def test_launcher_refuses_a_device_its_kernels_were_not_built_for():
    other = "cpu" if CUDA else "meta"
    with pytest.raises(RuntimeError, match=f"impl='triton' got a {other} tensor"):
        ls_triton._launch_setup(torch.empty(2, 3, device=other))


def test_auto_never_chooses_triton():
    x, y, _ = _data((4, 30))
    for kw in (dict(), dict(convention="others"), dict(kl=True, inplace_backward=True)):
        assert labelsmooth.chosen_impl(x, y, **kw) != "triton"


_COMPILE_FOR_SM90 = r"""
import re, triton, triton.language as tl
from triton.backends.compiler import GPUTarget
import importlib.util, sys
spec = importlib.util.spec_from_file_location("kernels", sys.argv[1])  # without torch
K = importlib.util.module_from_spec(spec)
spec.loader.exec_module(K)
assert not K.INTERPRETED
names = ["X", "G", "Y", "A", "LDA", "a0", "GP", "GA", "GY", "M_OUT", "S_OUT", "DY_OUT",
         "SS_OUT", "C"]
types = ["*bf16", "*bf16", "*i64", "*fp32", "i32", "fp32"] + ["*fp32"] * 7 + ["i32"]
sig = dict(zip(names, types), D="i32", HAS_A="constexpr", WRITE_GRAD="constexpr",
           BLOCK="constexpr", ACC="constexpr")
aligned = {(i,): [["tt.divisibility", 16]] for i in (0, 1, 2, 3, 13)}
src = triton.compiler.ASTSource(
    fn=K.forward_kernel, signature=sig, attrs=aligned,
    constexprs=dict(D=1, HAS_A=True, WRITE_GRAD=True, BLOCK=8192, ACC=tl.float32))
ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 16}).asm["ptx"]
assert re.search(r"ld\.global(\.\w+)*\.v4", ptx), "no 16-byte vector loads"
assert re.search(r"st\.global(\.\w+)*\.v4", ptx), "no 16-byte vector stores"
"""


def test_kernels_compile_for_sm90_with_vector_loads():
    """The interpreter accepts code the compiler may not: compile the forward kernel for an
    H100/H200 (sm_90, no GPU needed) in a fresh process, and check that a 2-D bfloat16 row is
    read and written with 16-byte vectors."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = env.get("TRITON_DEFAULT_FP_FUSION", "1")
    kernels = _triton_kernels.__file__
    subprocess.run(
        [sys.executable, "-c", _COMPILE_FOR_SM90, kernels], check=True, env=env, timeout=300
    )


def test_import_labelsmooth_does_not_import_triton():
    code = (
        "import sys, torch, labelsmooth\n"
        "assert 'triton' not in sys.modules, 'triton imported'\n"
        "labelsmooth.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 2]), impl='fused')\n"
        "# the first call of a torch.library op imports torch._dynamo, which imports triton\n"
        "# where it is installed; labelsmooth's own kernels stay unimported\n"
        "assert 'labelsmooth.ops.triton.kernels' not in sys.modules, 'kernels imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_gpu_bench_arguments(capsys, benchmark_script, refuses_each):
    bench = benchmark_script("gpu_bench")
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0 and "--dry-run" in capsys.readouterr().out
    assert bench.main(["--dry-run", "--shapes", "8x1000", "--triton-configs", "4096:8"]) == 0
    plan = capsys.readouterr().out
    assert "case 8x1000 bfloat16" in plan and "triton configs: default, 4096:8" in plan
    bad = [
        (["--dry-run", "--shapes", "8x"], "argument --shapes: expected NxV"),
        (["--dry-run", "--triton-configs", "1000:8"], "BLOCK must be a power of two"),
        (["--dry-run", "--variants", "apex"], "argument --variants: invalid choice"),
        (["--dry-run", "--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1]"),
        (["--dry-run", "--iters", "0"], "--iters must be >= 1"),
        ([], "--out DIR is required"),
    ]
    if not CUDA:
        bad.append((["--out", "x"], "no CUDA device (use --dry-run"))
    refuses_each(bench.main, "gpu_bench.py", bad)


def test_gpu_bench_runs_end_to_end(tmp_path, capsys, benchmark_script):
    """The whole script on a tiny shape (on CPU under the interpreter when there is no GPU)."""
    argv = ["--device", DEVICE, "--shapes", "3x300", "--dtypes", "float32", "--iters", "1",
            "--warmup", "0", "--variants", "torch", "triton", "triton-inplace", "liger",
            "--triton-configs", "64:1", "--out", str(tmp_path)]  # fmt: skip
    assert benchmark_script("gpu_bench").main(argv) == 0
    result = json.loads((tmp_path / "gpu.json").read_text())
    (case,) = result["cases"]
    rows = {row["variant"]: row for row in case["rows"]}
    assert list(rows) == ["torch", "triton", "triton 64:1", "triton-inplace", "liger"]
    for name in ("torch", "triton", "triton 64:1", "triton-inplace"):
        assert rows[name]["rel_loss_err"] < 1e-5, rows[name]
    assert rows["triton 64:1"]["config"] == [64, 1]
    assert "skipped" in rows["liger"] or rows["liger"]["rel_loss_err"] < 1e-5
    assert "| triton-inplace |" in (tmp_path / "gpu.md").read_text()
    # the recorded command names no path of this machine: the output folder is OUT
    assert str(tmp_path) not in result["command"] and "--out OUT" in result["command"]


def test_gpu_check_script_parses():
    script = Path(__file__).parents[3] / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)


# ---------------------------------------------------------------------------------- GPU only


@gpu
@pytest.mark.gpu
def test_gpu_step_has_no_host_synchronization():
    g = torch.Generator().manual_seed(10)
    C = 1000
    x = torch.randn(64, C, generator=g).cuda().requires_grad_(True)
    y = torch.randint(0, C, (64,), generator=g).cuda()
    y[::5] = -100
    w = (torch.rand(C, generator=g) + 0.5).cuda()
    mask = (torch.rand(C, generator=g) > 0.1).cuda()
    prior = torch.rand(C, generator=g).cuda()
    cases = [
        dict(label_smoothing=0.1),
        dict(label_smoothing=0.1, kl=True),  # uniform prior: Python-float coefficients
        dict(label_smoothing=0.1, weight=w, class_mask=mask, convention="others", kl=True),
        dict(label_smoothing=0.2, prior=prior, reduction="none"),
        dict(label_smoothing=0.1, reduction="sum", inplace_backward=True),
    ]

    def step(kw):
        xi = x.detach().clone().requires_grad_(True)
        logits = xi * 1.0  # a non-leaf, as in a model (inplace_backward overwrites it)
        loss = labelsmooth.cross_entropy(logits, y, impl="triton", validate_args=False, **kw)
        loss.sum().backward()
        return xi.grad

    for kw in cases:
        step(kw)  # compile first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for kw in cases:
            step(kw)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("C", [32000, 128256])
def test_gpu_bfloat16_error_no_larger_than_builtin(C, monkeypatch):
    monkeypatch.setattr(ls_triton, "MAX_BLOCK", 8192)
    g = torch.Generator(device="cuda").manual_seed(11)
    x64 = torch.randn(32, C, generator=g, device="cuda", dtype=torch.float64) * 4
    y = torch.randint(0, C, (32,), generator=g, device="cuda")
    y[::7] = -100
    for reduction in ("mean", "none"):
        kw = dict(label_smoothing=0.1, reduction=reduction)
        x = x64.to(torch.bfloat16)
        truth_l, truth_g = _run("reference", x.double(), y, **kw)  # of the values as stored
        builtin_l, builtin_g = _builtin(x, y, **kw)  # PyTorch's kernel in bfloat16
        for inplace in (False, True):
            got_l, got_g = _run("triton", x, y, inplace_backward=inplace, **kw)
            assert got_l.dtype == got_g.dtype == torch.bfloat16
            for got, builtin, truth in ((got_l, builtin_l, truth_l), (got_g, builtin_g, truth_g)):
                err = (got.double() - truth).abs().max()
                builtin_err = (builtin.double() - truth).abs().max()
                floor = (truth.to(torch.bfloat16).double() - truth).abs().max()
                assert err <= 2 * max(builtin_err, floor) + 1e-7, (C, inplace, err, builtin_err)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("C", [128256, 256000])
def test_gpu_large_vocabulary_float32_within_1e5_of_reference(C, monkeypatch):
    monkeypatch.setattr(ls_triton, "MAX_BLOCK", 8192)
    x, y, g = _data((24, C), seed=12)
    mask = (torch.rand(C, generator=g) > 0.01).to(DEVICE)
    mask[y[y >= 0]] = True
    for kw in (
        dict(label_smoothing=0.1),
        dict(label_smoothing=0.1, class_mask=mask, convention="others", kl=True),
    ):
        got = _run("triton", x, y, **kw)
        ref = _run("reference", x.double(), y, **kw)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-8)


@gpu
@pytest.mark.gpu
def test_gpu_offsets_past_2_to_the_31(monkeypatch):
    """16400 × 131072 elements > 2**31: row offsets must be 64-bit (bfloat16: 4.3 GB)."""
    monkeypatch.setattr(ls_triton, "MAX_BLOCK", 8192)
    N, C = 16400, 131072
    x = torch.empty(N, C, device="cuda", dtype=torch.bfloat16).normal_(0, 2)
    y = torch.randint(0, C, (N,), device="cuda")
    x.requires_grad_(True)
    loss = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, reduction="none", impl="triton")
    loss.sum().backward()
    tail = slice(N - 3, N)  # rows past element 2**31
    xt = x.detach()[tail].float().requires_grad_(True)
    ref = labelsmooth.cross_entropy(xt, y[tail], label_smoothing=0.1, reduction="none")
    ref.sum().backward()
    torch.testing.assert_close(loss.detach()[tail].float(), ref.detach(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(x.grad[tail].float(), xt.grad, rtol=2e-2, atol=1e-4)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("inplace", [False, True])
def test_gpu_peak_memory(inplace):
    """Extra memory over the logits: one gradient buffer, or O(N) with inplace_backward."""
    N, C = 2048, 32000
    x = torch.randn(N, C, device="cuda").requires_grad_(True)
    y = torch.randint(0, C, (N,), device="cuda")
    step = lambda: labelsmooth.cross_entropy(  # noqa: E731
        x * 1.0, y, label_smoothing=0.1, impl="triton", inplace_backward=inplace
    ).backward()
    step()  # compile
    x.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    logits = x.numel() * x.element_size()
    # x * 1.0 (the logits) + x.grad, plus the gradient buffer unless in place
    budget = (2 if inplace else 3) * logits + (1 << 20)
    assert extra <= budget, (extra / logits, inplace)
