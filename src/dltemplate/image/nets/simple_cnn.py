"""The book's small CNN for cifar2 (≈54k parameters)."""

from typing import Any

import torch
from torch import Tensor, nn


class SimpleCNN(nn.Module):
    """conv 3→32 (k3) → max-pool → conv 32→64 (k5) → max-pool → dropout2d → adaptive max-pool → 64→32→out.

    As in the book, the convolutions have no activation of their own: the max-pools and the ReLU
    of the head are the non-linearities. With 3 input channels and one output: 54,273 parameters.

    Args:
        in_channels: Image channels.
        out_features: 1 for binary logits, else the number of classes.
        dropout: Dropout2d probability after the second pooling.
    """

    def __init__(self, in_channels: int = 3, out_features: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5),
            nn.MaxPool2d(2),
            nn.Dropout2d(dropout),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, out_features))

    @classmethod
    def example_input(cls, batch: int, in_channels: int = 3, **config: Any) -> Tensor:
        """(B, C, 32, 32) normalised images."""
        return torch.randn(batch, in_channels, 32, 32)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, C, H, W) -> (B, out_features)
