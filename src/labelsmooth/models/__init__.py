"""Small image models for the label-smoothing experiments."""

from labelsmooth.models.mlp import MLP, mlp
from labelsmooth.models.resnet import BasicBlock, ResNet, resnet

__all__ = ["BasicBlock", "ResNet", "resnet", "MLP", "mlp"]
