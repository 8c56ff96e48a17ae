"""Every bad input gets a clear error naming the argument and the value."""

from __future__ import annotations

import pytest
import torch

import labelsmooth

X = torch.randn(4, 5)
Y = torch.tensor([0, 1, 2, 3])


def ce(**kw):
    args = {"input": X, "target": Y, **kw}
    return labelsmooth.cross_entropy(**args)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"label_smoothing": 1.5}, r"label_smoothing must be in \[0, 1\], got label_smoothing=1.5"),
        (
            {"label_smoothing": -0.1},
            r"label_smoothing must be in \[0, 1\], got label_smoothing=-0.1",
        ),
        (
            {"label_smoothing": float("nan")},
            r"label_smoothing must be in \[0, 1\], got label_smoothing=nan",
        ),
        ({"weight": torch.ones(4)}, r"weight must have shape \(5,\).*got weight.shape=\(4,\)"),
        (
            {"weight": torch.ones(5, dtype=torch.long)},
            r"weight must be a floating-point tensor, got weight.dtype=torch.int64",
        ),
        ({"weight": torch.ones(5, 1)}, r"weight must have shape \(5,\)"),
        ({"prior": torch.ones(6)}, r"prior must have shape \(5,\).*got prior.shape=\(6,\)"),
        (
            {"prior": torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0])},
            r"prior must be non-negative, found prior value -1.0",
        ),
        ({"prior": torch.zeros(5)}, r"prior must have positive total mass"),
        (
            {
                "prior": torch.tensor([1.0, 0, 0, 0, 0]),
                "class_mask": torch.tensor([False, True, True, True, True]),
            },
            r"prior must have positive total mass on the classes class_mask allows",
        ),
        ({"prior": torch.tensor([1.0, float("inf"), 1, 1, 1])}, r"prior must be finite"),
        ({"class_mask": torch.zeros(5, dtype=torch.bool)}, r"class_mask allows no class"),
        (
            {"class_mask": torch.ones(5)},
            r"class_mask must be a bool tensor, got class_mask.dtype=torch.float32",
        ),
        ({"class_mask": torch.ones(3, dtype=torch.bool)}, r"class_mask must have shape \(5,\)"),
        (
            {"target": torch.tensor([0, 1, 2, 5])},
            r"target holds class index 5, outside \[0, 5\).*ignore_index=-100",
        ),
        ({"target": torch.tensor([0, -1, 2, 3])}, r"target holds class index -1, outside \[0, 5\)"),
        (  # 156 is -100 wrapped into uint8, but not ignore_index
            {"target": torch.tensor([0, 156, 2, 3], dtype=torch.uint8)},
            r"target holds class index 156, outside \[0, 5\)",
        ),
        (
            {"target": torch.tensor([0, 1, 2])},
            r"target of class indices must have shape \(4,\).*got target.shape=\(3,\)",
        ),
        (
            {"target": torch.ones(4, 3)},
            r"soft\) target must have the input's shape \(4, 5\), got target.shape=\(4, 3\)",
        ),
        ({"target": torch.ones(4, dtype=torch.bool)}, r"got target.dtype=torch.bool"),
        (
            {"input": torch.ones(4, 5, dtype=torch.long)},
            r"input must be a floating-point tensor.*got input.dtype=torch.int64",
        ),
        ({"input": torch.tensor(1.0)}, r"input must have a class dimension"),
        (
            {"input": torch.ones(4, 0), "target": torch.zeros(4, dtype=torch.long)},
            r"input must have at least one class",
        ),
        (
            {"convention": "fairseq"},
            r"convention must be one of \['uniform', 'others', 'unnormalized'\], got conv\w+='fa",
        ),
        ({"impl": "cuda"}, r"impl must be one of .*got impl='cuda'"),
        (
            {"reduction": "avg"},
            r"reduction must be one of \['none', 'mean', 'sum'\], got reduction='avg'",
        ),
        (
            {"target": torch.full((4, 5), 0.2), "convention": "others"},
            r"soft \(probability\) targets are defined only for convention='uniform'",
        ),
        (
            {"target": torch.full((4, 5), 0.3), "kl": True},
            r"soft target rows must sum to 1.*differs from 1 by 0.5",
        ),
        (
            {"target": torch.tensor([[1.5, -0.5, 0, 0, 0]] * 4), "kl": True},
            r"soft target rows must be probability distributions.*-0.5",
        ),
        ({"ignore_index": 1.0}, r"ignore_index must be an int, got ignore_index=1.0"),
    ],
)
def test_bad_input_message(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ce(**kw)


def test_label_smoothing_wrong_type():
    with pytest.raises(
        TypeError, match=r"label_smoothing must be a number in \[0, 1\], got label_smoothing='0.1'"
    ):
        ce(label_smoothing="0.1")


def test_input_not_a_tensor():
    with pytest.raises(TypeError, match="input must be a torch.Tensor of logits, got list"):
        labelsmooth.cross_entropy([[1.0, 2.0]], Y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
@pytest.mark.gpu
def test_device_mismatch():
    with pytest.raises(ValueError, match="weight must be on the input's device"):
        ce(input=X.cuda(), target=Y.cuda(), weight=torch.ones(5))


def test_device_mismatch_meta():
    # the meta device stands in for a second device on CPU-only machines
    with pytest.raises(
        ValueError, match="weight must be on the input's device, got weight.device=meta"
    ):
        ce(weight=torch.ones(5, device="meta"))
    with pytest.raises(ValueError, match="target must be on the input's device"):
        ce(target=Y.to("meta"))


def test_module_reports_bad_arguments_on_call():
    crit = labelsmooth.LabelSmoothingCrossEntropy(2.0)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        crit(X, Y)


@pytest.mark.parametrize(
    "args, kw, match",
    [
        ((torch.tensor([0, 7]), 5, 0.1), {}, r"target holds class index 7, outside \[0, 5\)"),
        ((torch.tensor([0.0]), 5, 0.1), {}, r"target must be an integer tensor of class indices"),
        ((torch.tensor([0]), 0, 0.1), {}, r"num_classes must be a positive int, got num_classes=0"),
        ((torch.tensor([0]), 5, 1.1), {}, r"label_smoothing must be in \[0, 1\]"),
        ((torch.tensor([0]), 5, 0.1), {"convention": "x"}, r"convention must be one of"),
        (
            (torch.tensor([0]), 5, 0.1),
            {"dtype": torch.int64},
            r"dtype must be a floating-point dtype",
        ),
        ((torch.tensor([0]), 5, 0.1), {"prior": torch.ones(4)}, r"prior must have shape \(5,\)"),
        (
            (torch.tensor([0]), 5, 0.1),
            {"class_mask": torch.zeros(5, dtype=torch.bool)},
            r"class_mask allows no class",
        ),
    ],
)
def test_smooth_labels_bad_input(args, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        labelsmooth.smooth_labels(*args, **kw)
