"""The seven implementations users port from, each reproduced exactly by one documented call.

Each reference below is an independent plain formula of what that implementation computes,
written for these tests from its published definition (not copied from its source).
"""

from __future__ import annotations

import pytest
import torch

import labelsmooth

EPS = 0.15


def _data(n=12, c=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64) * 3, torch.randint(
        0, c, (n,), generator=g
    )


def _others_dist(y, c, eps):
    """1-ε on the target, ε/(C-1) on each other class."""
    q = torch.full((y.shape[0], c), eps / (c - 1), dtype=torch.float64)
    q[torch.arange(y.shape[0]), y] = 1 - eps
    return q


def test_1_forum_label_smooth_loss():
    # LabelSmoothLoss(smoothing): weights ε/(C-1) off-target, 1-ε on target, sum over
    # classes of -w·log p, mean over the batch
    x, y = _data()
    expected = (-_others_dist(y, 9, EPS) * torch.log_softmax(x, -1)).sum(-1).mean()
    got = labelsmooth.cross_entropy(x, y, label_smoothing=EPS, convention="others")
    torch.testing.assert_close(got, expected)


def test_2_smooth_one_hot_then_soft_cross_entropy():
    # smooth_one_hot(labels, classes, smoothing) builds the same distribution densely; the loss
    # is then the cross-entropy against those soft targets
    x, y = _data(seed=1)
    dense = _others_dist(y, 9, EPS)
    q = labelsmooth.smooth_labels(y, 9, EPS, convention="others", dtype=torch.float64)
    torch.testing.assert_close(q, dense)
    expected = (-dense * torch.log_softmax(x, -1)).sum(-1).mean()
    torch.testing.assert_close(labelsmooth.cross_entropy(x, q), expected)


def test_3_nvidia_deeplearningexamples_label_smoothing():
    # (1-ε)·NLL + ε·mean_k(-log p_k), averaged over the batch
    x, y = _data(seed=2)
    logp = torch.log_softmax(x, -1)
    nll = -logp[torch.arange(12), y]
    smooth = -logp.mean(-1)
    expected = ((1 - EPS) * nll + EPS * smooth).mean()
    got = labelsmooth.cross_entropy(x, y, label_smoothing=EPS)  # convention="uniform"
    torch.testing.assert_close(got, expected)


def test_4_label_smoothing_loss_classes_smoothing():
    # LabelSmoothingLoss(classes, smoothing): a filled ε/(C-1) distribution with 1-ε scattered
    # on the target, mean over the batch of the summed -q·log p
    x, y = _data(seed=3, c=17)
    q = torch.full((12, 17), EPS / 16, dtype=torch.float64).scatter(1, y[:, None], 1 - EPS)
    expected = torch.mean(torch.sum(-q * torch.log_softmax(x, dim=-1), dim=-1))
    got = labelsmooth.cross_entropy(x, y, label_smoothing=EPS, convention="others")
    torch.testing.assert_close(got, expected)


def test_5_njunmt_nmt_criterion():
    # NMTCriterion(padding_idx, label_smoothing): KL divergence to a target with 1-ε on the
    # gold token, ε/(C-2) on every token but the gold one and the pad, 0 on the pad; padded
    # positions contribute 0; summed over time per sentence.
    g = torch.Generator().manual_seed(4)
    b, t, c, pad = 3, 6, 11, 0
    x = torch.randn(b, t, c, generator=g, dtype=torch.float64) * 2
    y = torch.randint(1, c, (b, t), generator=g)
    y[0, 4:] = pad
    y[2, 2:] = pad
    q = torch.full((b, t, c), EPS / (c - 2), dtype=torch.float64)
    q[..., pad] = 0
    q.scatter_(2, y[..., None], 1 - EPS)
    logp = torch.log_softmax(x, -1)
    kl = (torch.xlogy(q, q) - q * logp).sum(-1) * (y != pad)
    expected = kl.sum(1)  # (B,)

    mask = torch.ones(c, dtype=torch.bool)
    mask[pad] = False
    got = (
        labelsmooth.cross_entropy(
            x.reshape(-1, c),
            y.reshape(-1),
            ignore_index=pad,
            reduction="none",
            label_smoothing=EPS,
            convention="others",
            class_mask=mask,
            kl=True,
        )
        .reshape(b, t)
        .sum(1)
    )
    torch.testing.assert_close(got, expected)
    # the same with the (N, C, T) layout, no reshape needed
    got_nd = labelsmooth.cross_entropy(
        x.transpose(1, 2),
        y,
        ignore_index=pad,
        reduction="none",
        label_smoothing=EPS,
        convention="others",
        class_mask=mask,
        kl=True,
    ).sum(1)
    torch.testing.assert_close(got_nd, expected)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_6_pytorch_loss_label_smooth_softmax_ce(reduction):
    # LabelSmoothSoftmaxCEV1/V2(lb_smooth, reduction, ignore_index): (N, C, H, W) logits,
    # 1-ε on the target and ε/C on every other class (no renormalization), ignored pixels 0,
    # mean over the valid pixels
    g = torch.Generator().manual_seed(5)
    n, c, h, w, ign = 2, 7, 5, 4, 255
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, c, (n, h, w), generator=g)
    y[0, :2] = ign
    ignore = y == ign
    lbl = y.masked_fill(ignore, 0)
    onehot = torch.full_like(x, EPS / c).scatter(1, lbl[:, None], 1 - EPS)
    loss = -(torch.log_softmax(x, 1) * onehot).sum(1)
    loss = loss.masked_fill(ignore, 0)
    expected = {"mean": loss.sum() / (~ignore).sum(), "sum": loss.sum(), "none": loss}[reduction]
    got = labelsmooth.cross_entropy(
        x, y, ignore_index=ign, reduction=reduction, label_smoothing=EPS, convention="unnormalized"
    )
    torch.testing.assert_close(got, expected)


def test_7_torch_toolbox_label_smoothing_loss():
    # torch-toolbox LabelSmoothingLoss(classes, smoothing): ε/(C-1) off-target, 1-ε on target,
    # batch mean of the summed -q·log p
    x, y = _data(seed=6, c=5)
    logp = torch.log_softmax(x, -1)
    per_row = torch.stack(
        [
            -(1 - EPS) * logp[i, y[i]] - sum(EPS / 4 * logp[i, k] for k in range(5) if k != y[i])
            for i in range(12)
        ]
    )
    got = labelsmooth.LabelSmoothingCrossEntropy(EPS, convention="others")(x, y)
    torch.testing.assert_close(got, per_row.mean())
