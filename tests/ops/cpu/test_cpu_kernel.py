"""The native CPU row kernel: statistics and gradient against float64, edge values, the
launcher's argument checks, and building / falling back (the cache's defences are in
test_kernel_cache.py)."""

from __future__ import annotations

import hashlib

import pytest
import torch

import labelsmooth
from labelsmooth import runtime
from labelsmooth.ops.cpu import build as cpu_build
from labelsmooth.ops.cpu import kernel as cpu_kernel

CPU = torch.device("cpu")


@pytest.fixture
def kernel():
    reason = cpu_kernel.native_unavailable(CPU)
    if reason is not None:
        pytest.skip(reason)
    return _whole_block


def _whole_block(x, *args, **kwargs):
    """The launcher's checks and its one call on every row of the block."""
    cpu_kernel.launcher(x, *args, **kwargs)(0, x.shape[0])


def _call(kernel, x, y, a=None, a0=0.0, coef=(1.0, 0.1, 0.9), grad=True, inplace=False):
    B = x.shape[0]
    g_p, g_a, g_y = (torch.full((B,), float(c)) for c in coef)
    stats = [torch.empty(B) for _ in range(4)]
    g = (x if inplace else torch.empty_like(x)) if grad else None
    kernel(x, g, y, a, a0, g_p, g_a, g_y, *stats)
    return g, stats


def _truth(x, y, a, coef):
    """float64 statistics (relative to the row max) and gradient from the formulas in
    kernels.c: m, s = sum exp(x - m), d_y = x_y - m, S = sum a (x - m)."""
    x64 = x.double()
    m = x64.amax(1)
    d = x64 - m[:, None]
    e = d.exp()
    s = e.sum(1)
    S = d @ a.double()
    g_p, g_a, g_y = coef
    grad = g_p * e / s[:, None] - g_a * a.double()
    grad[torch.arange(len(y)), y] -= g_y
    return grad, (m, s, d.gather(1, y[:, None]).squeeze(1), S)


@pytest.mark.parametrize("C", [1, 7, 1031, 32003])
@pytest.mark.parametrize("weighted", [False, True])
def test_statistics_and_gradient_match_float64(kernel, C, weighted):
    g = torch.Generator().manual_seed(C)
    x = torch.randn(5, C, generator=g) * 4
    y = torch.randint(0, C, (5,), generator=g)
    a = torch.rand(C, generator=g) if weighted else torch.full((C,), 1 / C)
    coef = (0.7, 0.2, 0.6)
    grad, stats = _call(kernel, x, y, None if not weighted else a, 1 / C, coef)
    want_grad, want_stats = _truth(x, y, a, coef)
    m, s, x_y, S = (t.double() for t in stats)
    torch.testing.assert_close(m, want_stats[0], rtol=0, atol=0)
    torch.testing.assert_close(s, want_stats[1], rtol=2e-6, atol=0)
    torch.testing.assert_close(x_y, want_stats[2], rtol=2**-24, atol=0)  # one rounding
    # a float32 sum of C terms: error relative to the sum of magnitudes, not to S
    scale = ((x.double() - want_stats[0][:, None]).abs() @ a.double()).max().item()
    torch.testing.assert_close(S, want_stats[3], rtol=0, atol=2e-6 * scale)
    torch.testing.assert_close(grad.double(), want_grad, rtol=1e-5, atol=1e-7)


def test_exponential_is_accurate_over_its_range(kernel):
    # one row whose max is 0: the gradient with g_p = 1, g_a = g_y = 0 is exp(x) / s (down to
    # -60 so that exp(x) / s stays a normal float32)
    x = torch.cat([torch.zeros(1), torch.linspace(-60, 0, 200_001)])[None]
    grad, (m, s, _, _) = _call(kernel, x, torch.zeros(1, dtype=torch.long), coef=(1, 0, 0))
    exp64 = x.double().exp()
    got = grad.double() * s.double()  # undoes the division, up to one more rounding
    rel = ((got - exp64).abs() / exp64).max().item()
    assert rel < 4e-7, rel  # ≈ 3 float32 ulp; torch.exp itself is within ≈ 1 ulp here
    torch.testing.assert_close(s.double(), exp64.sum(1), rtol=1e-6, atol=0)


def test_statistics_only_and_in_place_agree_with_separate_gradient(kernel):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 300, generator=g)
    y = torch.randint(0, 300, (9,), generator=g)
    grad, stats = _call(kernel, x.clone(), y, a0=1 / 300)
    _, stats_only = _call(kernel, x.clone(), y, a0=1 / 300, grad=False)
    x_in = x.clone()
    grad_in, stats_in = _call(kernel, x_in, y, a0=1 / 300, inplace=True)
    assert grad_in.data_ptr() == x_in.data_ptr()
    torch.testing.assert_close(grad_in, grad, rtol=0, atol=0)
    for a, b, c in zip(stats, stats_only, stats_in):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_strided_rows(kernel):
    base = torch.randn(6, 64)
    x = base[::2, :50]  # row stride 128, unit stride inside a row
    y = torch.tensor([0, 49, 7])
    grad, stats = _call(kernel, x, y, a0=0.02, coef=(1, 0.1, 0.9))
    grad_c, stats_c = _call(kernel, x.contiguous(), y, a0=0.02, coef=(1, 0.1, 0.9))
    torch.testing.assert_close(grad, grad_c, rtol=0, atol=0)


def test_extreme_logits(kernel):
    x = torch.tensor(
        [
            [1e4, -1e4, 0.0, 3.0],  # huge gaps: no overflow
            [float("-inf"), 0.0, 1.0, float("-inf")],  # masked classes: probability 0
            [0.0, float("nan"), 1.0, 2.0],  # NaN propagates
        ]
    )
    y = torch.tensor([1, 2, 0])
    grad, (m, s, x_y, S) = _call(kernel, x, y, a=torch.tensor([0.0, 1, 1, 0]), coef=(1, 0, 1))
    lse = m.double() + s.double().log()
    assert lse[0].item() == pytest.approx(1e4) and torch.isfinite(grad[0]).all()
    assert grad[0, 1].item() == pytest.approx(-1.0)
    assert grad[1, 0].item() == 0.0 and grad[1, 3].item() == 0.0
    torch.testing.assert_close(lse[1], torch.tensor([0.0, 1.0]).double().logsumexp(0))
    assert torch.isnan(s[2]) and torch.isnan(S[2]) and torch.isnan(grad[2]).all()


def test_statistics_combine_over_a_split_vocabulary(kernel):
    # what a vocabulary-parallel or chunked caller does: max of the maxima, rescaled sums
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 1000, generator=g) * 5
    y = torch.zeros(4, dtype=torch.long)
    parts = [
        _call(kernel, x[:, k : k + 250].contiguous(), y, a0=1.0, grad=False)[1]
        for k in (0, 250, 500, 750)
    ]
    m = torch.stack([p[0] for p in parts]).double()
    s = torch.stack([p[1] for p in parts]).double()
    M = m.amax(0)
    lse = M + (s * (m - M).exp()).sum(0).log()
    torch.testing.assert_close(lse, x.double().logsumexp(1), rtol=1e-6, atol=0)
    # S is relative to each part's max: shift every part's S to the common max M
    S = sum(p[3].double() + 250 * (mp.double() - M) for p, mp in zip(parts, m))
    torch.testing.assert_close(S, (x.double() - M[:, None]).sum(1), rtol=1e-5, atol=1e-4)


def test_ignored_rows_get_neutral_statistics_and_no_gradient(kernel):
    x = torch.tensor([[float("nan"), float("inf"), 1.0], [0.5, -1.0, 2.0]])
    y = torch.tensor([-1, 2])
    grad, (m, s, d_y, S) = _call(kernel, x, y, a0=1 / 3)
    assert (m[0].item(), s[0].item(), d_y[0].item(), S[0].item()) == (0.0, 1.0, 0.0, 0.0)
    assert (grad[0] == 0).all() and torch.isfinite(grad[1]).all()


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(y=torch.tensor([0, 5])), r"target indices must be in \[-1, 5\), got \[0, 5\]"),
        (dict(y=torch.tensor([-2, 0])), r"target indices must be in \[-1, 5\), got \[-2, 0\]"),
        (dict(y=torch.tensor([-1, 0])), None),  # -1: an ignored row
        (dict(y=torch.tensor([0, 1], dtype=torch.int32)), "y must be a contiguous"),
        (dict(x=torch.zeros(2, 5, dtype=torch.float64)), "x must be one of"),
        (dict(x=torch.zeros(2, 5, dtype=torch.float16)), "x must be one of"),
        (dict(x=torch.zeros(2, 5, dtype=torch.bfloat16)), "g must be a"),
        (dict(work=torch.zeros(4)), None),  # float32 rows need no work row: ignored
        (dict(x=torch.zeros(5, 2).t()), "x must be a"),
        (dict(g=torch.zeros(2, 4)), "g must be a"),
        (dict(a=torch.zeros(4)), "a must be a contiguous"),
        (dict(m=torch.zeros(3)), "m must be a contiguous"),
    ],
)
def test_launcher_refuses_bad_arguments(kernel, change, match):
    args = dict(
        x=torch.zeros(2, 5), g=torch.zeros(2, 5), y=torch.tensor([0, 4]), a=None, a0=0.2,
        g_p=torch.ones(2), g_a=torch.ones(2), g_y=torch.ones(2), m=torch.zeros(2),
        s=torch.zeros(2), x_y=torch.zeros(2), S=torch.zeros(2), work=None,
    )  # fmt: skip
    args.update(change)
    if match is None:
        kernel(**args)
        return
    with pytest.raises(ValueError, match=match):
        kernel(**args)


def test_launcher_refuses_a_short_work_row(kernel):
    x = torch.zeros(2, 5, dtype=torch.bfloat16)
    vec = [torch.ones(2) for _ in range(7)]
    with pytest.raises(ValueError, match="work must be a contiguous float32"):
        kernel(x, x.clone(), torch.tensor([0, 4]), None, 0.2, *vec, work=torch.zeros(4))


@pytest.mark.parametrize("dtype", [torch.bfloat16])
@pytest.mark.parametrize("weighted", [False, True])
def test_half_rows_equal_float32_rows_rounded(kernel, dtype, weighted):
    """bfloat16 logits are converted in the kernel: the same float32 arithmetic as on the
    upcast logits, with the gradient rounded once (to nearest even) at the store."""
    g = torch.Generator().manual_seed(5)
    C = 2053
    x = (torch.randn(6, C, generator=g) * 3).to(dtype)
    x[0, 7] = float("-inf")
    y = torch.randint(0, C, (6,), generator=g)
    a = torch.rand(C, generator=g) if weighted else None
    coef = (0.9, 0.05, 0.8)
    grad, stats = _call(kernel, x, y, a, 1 / C, coef)
    grad32, stats32 = _call(kernel, x.float(), y, a, 1 / C, coef)
    assert grad.dtype == dtype
    # one rounding of the float32 value (sums may differ in the last float32 bit: the
    # compiler may order the vector lanes differently for the two loads)
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(grad.float(), grad32, rtol=ulp, atol=0)
    (m, s, x_y, S), (m32, s32, x_y32, S32) = stats, stats32
    torch.testing.assert_close((m, x_y), (m32, x_y32), rtol=0, atol=0)
    torch.testing.assert_close(s, s32, rtol=4e-6, atol=0)
    scale = (x.float().abs() @ (a if weighted else torch.full((C,), 1 / C))).max().item()
    torch.testing.assert_close(S, S32, rtol=0, atol=1e-6 * scale)
    x_in = x.clone()  # in place: the gradient overwrites the half-precision logits
    grad_in, _ = _call(kernel, x_in, y, a, 1 / C, coef, inplace=True)
    torch.testing.assert_close(x_in, grad, rtol=0, atol=0)


@pytest.fixture
def fresh_build(tmp_path, reset_kernel):
    """A clean module state and an empty cache directory (both restored afterwards)."""
    cache = tmp_path / "cache"
    with runtime.options(kernel_cache_dir=cache):
        yield cache


def test_builds_into_the_cache_and_reuses_it(fresh_build, monkeypatch):
    if cpu_build._compiler() is None:
        pytest.skip("no C compiler")
    assert cpu_kernel.native_unavailable(CPU) is None
    built = list(fresh_build.glob("cpu_kernels-*.so"))
    assert len(built) == 1 and cpu_kernel.kernel_path() == str(built[0])
    # the library is private, with its SHA-256 recorded beside it (sha256sum format)
    assert fresh_build.stat().st_mode & 0o777 == 0o700
    assert built[0].stat().st_mode & 0o077 == 0
    record = built[0].with_name(built[0].name + ".sha256").read_text()
    assert record == f"{hashlib.sha256(built[0].read_bytes()).hexdigest()}  {built[0].name}\n"
    files = sorted(fresh_build.iterdir())
    stamp = built[0].stat().st_mtime_ns
    # a new process state finds the cached library instead of compiling again
    monkeypatch.setattr(cpu_kernel, "_lib", None)
    assert cpu_kernel.native_unavailable(CPU) is None
    assert sorted(fresh_build.iterdir()) == files and built[0].stat().st_mtime_ns == stamp


def test_without_a_compiler_fused_falls_back_to_eager(fresh_build, monkeypatch):
    monkeypatch.setattr(cpu_build, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        reason = cpu_kernel.native_unavailable(CPU)
    assert reason is not None and "no C compiler" in reason
    x = torch.randn(6, 11, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, -100])
    loss = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="fused")
    ref = torch.nn.functional.cross_entropy(x, y, label_smoothing=0.1)
    torch.testing.assert_close(loss, ref)


def test_a_failing_compiler_is_reported(fresh_build, monkeypatch, tmp_path):
    fake = tmp_path / "fakecc"
    fake.write_text("#!/bin/sh\necho 'fakecc: cannot compile' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with pytest.warns(RuntimeWarning, match="cannot compile"):
        reason = cpu_kernel.native_unavailable(CPU)
    assert reason is not None and "failed to compile" in reason and "cannot compile" in reason
    assert not list(fresh_build.glob("*.tmp"))  # the failed build left nothing behind


def test_disabled_by_config():
    with runtime.options(native_kernel=False):
        reason = cpu_kernel.native_unavailable(CPU)
        assert cpu_kernel.native_dtypes() == ()
    assert "labelsmooth.runtime.config.native_kernel is False" in reason


def test_not_for_cuda_tensors():
    assert "CPU" in cpu_kernel.native_unavailable(torch.device("cuda"))
