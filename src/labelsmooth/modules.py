"""Placeholder."""

import torch


class LabelSmoothingCrossEntropy(torch.nn.Module):
    pass
