"""A small residual CNN for low-resolution images (CIFAR-sized, 32×32)."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a shortcut; stride 2 halves the resolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem conv → stages of basic blocks (each after the first halves the resolution) → pool → linear.

    Args:
        in_channels: Image channels.
        out_features: 1 for binary logits, else the number of classes.
        widths: Channels of each stage, e.g. (32, 64, 128); try (64, 128, 256) on a GPU.
        blocks_per_stage: Basic blocks in each stage.
        dropout: Dropout before the linear head.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_features: int = 1,
        widths: Sequence[int] = (32, 64, 128),
        blocks_per_stage: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        channels = widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, width, stride))
                channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, out_features))

    @classmethod
    def example_input(cls, batch: int, in_channels: int = 3, **config: Any) -> Tensor:
        """(B, C, 32, 32) normalised images."""
        return torch.randn(batch, in_channels, 32, 32)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, C, H, W) -> (B, out_features)
