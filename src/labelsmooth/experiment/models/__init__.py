"""Small models for the label-smoothing experiments (image models, a Transformer LM)."""

from labelsmooth.experiment.models.mlp import MLP, mlp
from labelsmooth.experiment.models.resnet import BasicBlock, ResNet, resnet
from labelsmooth.experiment.models.transformer import TransformerLM

__all__ = ["BasicBlock", "ResNet", "resnet", "MLP", "mlp", "TransformerLM"]
