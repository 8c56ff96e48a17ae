"""Calibration of an overconfident classifier before and after temperature scaling.

Run: python examples/calibration.py [output.png]

Every random draw comes from one seeded generator, so every run prints the same numbers.
"""

import sys

import torch

from labelsmooth.metrics import evaluate_calibration, fit_temperature

g = torch.Generator().manual_seed(0)
true_logits = torch.randn(4000, 10, generator=g) * 2
# labels drawn from the true probabilities (the seeded generator, not torch's global one)
target = torch.multinomial(true_logits.softmax(1), 1, generator=g).squeeze(1)
overconfident = true_logits * 2.5  # a model whose logits are 2.5x too large

val, test = slice(0, 2000), slice(2000, None)
T = fit_temperature(overconfident[val], target[val])
before = evaluate_calibration(overconfident[test], target[test])
after = evaluate_calibration(overconfident[test], target[test], temperature=T)
print(f"fitted temperature {T:.2f} (the logits were scaled by 2.5)")
print(
    f"ECE {100 * before['ece']:.2f}% -> {100 * after['ece']:.2f}%, "
    f"NLL {before['nll']:.4f} -> {after['nll']:.4f} nats"
)

if len(sys.argv) > 1:
    from labelsmooth.experiment.plotting import reliability_diagram

    reliability_diagram(torch.softmax(overconfident[test], 1), target[test], path=sys.argv[1])
    print(f"wrote {sys.argv[1]}")
