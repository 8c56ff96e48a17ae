"""Every smoothing convention on one batch, with the dense target each one trains against.

Run: python examples/conventions.py
"""

import torch

import labelsmooth

g = torch.Generator().manual_seed(0)
logits = torch.randn(4, 5, generator=g)
target = torch.tensor([0, 1, 2, 3])
mask = torch.tensor([True, True, True, True, False])  # class 4 is padding: no smoothing mass

for convention in ("uniform", "others", "unnormalized"):
    q = labelsmooth.smooth_labels(target[:1], 5, 0.1, convention=convention, class_mask=mask)
    loss = labelsmooth.cross_entropy(
        logits, target, label_smoothing=0.1, convention=convention, class_mask=mask
    )
    kl = labelsmooth.cross_entropy(
        logits, target, label_smoothing=0.1, convention=convention, class_mask=mask, kl=True
    )
    print(f"{convention:>12}: q = {[round(v, 4) for v in q[0].tolist()]}")
    print(f"{'':>12}  cross-entropy {loss.item():.4f}, KL form {kl.item():.4f}")
