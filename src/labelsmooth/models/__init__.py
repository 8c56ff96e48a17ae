"""Small models for the label-smoothing experiments (image models, a Transformer LM)."""

from labelsmooth.models.mlp import MLP, mlp
from labelsmooth.models.resnet import BasicBlock, ResNet, resnet
from labelsmooth.models.transformer import TransformerLM

__all__ = ["BasicBlock", "ResNet", "resnet", "MLP", "mlp", "TransformerLM"]
