"""CIFAR-style ResNet (He et al. 2016, section 4.2) for small grey-scale or colour images.

Depth ``6n + 2``: a 3x3 stem, three stages of ``n`` basic blocks at widths ``(w, 2w, 4w)`` with
stride 2 between stages, global average pooling and a linear classifier ``fc``. Small widths
(``w = 8`` or ``16``) keep a 28x28 Fashion-MNIST epoch within seconds to minutes on 2 CPU cores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "ResNet", "resnet"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution (2 halves the spatial size).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_planes, H, W)`` to ``(N, planes, H / stride, W / stride)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet with configurable blocks per stage and widths.

    Args:
        blocks_per_stage: Number of basic blocks in each of the three stages.
        widths: Channels of the three stages.
        in_channels: Image channels (1 for MNIST / Fashion-MNIST).
        num_classes: Number of classes ``C``.

    Example:
        >>> model = resnet(depth=8, width=8, num_classes=10)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> model.forward_features(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        blocks_per_stage: tuple[int, int, int] = (1, 1, 1),
        widths: tuple[int, int, int] = (16, 32, 64),
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        in_planes = widths[0]
        for stage, (n, planes) in enumerate(zip(blocks_per_stage, widths)):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(in_planes, num_classes)
        self.num_features = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations.

        Args:
            x: Images ``(N, in_channels, H, W)``.

        Returns:
            Pooled features ``(N, D)`` with ``D = widths[2]``; ``fc`` maps them to logits.
        """
        out = F.relu(self.bn1(self.conv1(x)))  # (N, w, H, W)
        out = self.layers(out)  # (N, 4w, H/4, W/4)
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)  # (N, 4w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C)`` for images ``(N, in_channels, H, W)``."""
        return self.fc(self.forward_features(x))


def resnet(
    depth: int = 8, width: int = 16, *, in_channels: int = 1, num_classes: int = 10
) -> ResNet:
    """Build a CIFAR-style ResNet of depth ``6n + 2`` (8, 14, 20, 32, ...).

    Args:
        depth: Total number of weighted layers, ``6n + 2``.
        width: Channels of the first stage; the stages use ``(width, 2 width, 4 width)``.
        in_channels: Image channels.
        num_classes: Number of classes.

    Returns:
        The model, with ``forward_features`` (``(N, 4 width)``) and the final layer ``fc``.

    Raises:
        ValueError: If ``depth`` is not of the form ``6n + 2`` or ``width < 1``.
    """
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {depth}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    n = (depth - 2) // 6
    return ResNet((n, n, n), (width, 2 * width, 4 * width), in_channels, num_classes)
