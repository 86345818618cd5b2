"""Fully connected network for vectors of features."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """Stack of [Linear → (BatchNorm) → activation → (Dropout)] blocks and a linear output layer.

    Args:
        in_features: Width of the input vectors.
        out_features: Width of the output (1 for binary logits or one regression target).
        hidden: Widths of the hidden layers; `[]` gives a linear model.
        activation: Name of a `torch.nn` activation class, e.g. "ReLU", "GELU", "Tanh".
        dropout: Dropout probability after each hidden block (never on the output).
        batch_norm: Put BatchNorm1d between each hidden Linear and its activation.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "ReLU",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(getattr(nn, activation)())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)

    @classmethod
    def example_input(cls, batch: int, in_features: int, **config: Any) -> Tensor:
        """(B, in_features) features."""
        return torch.randn(batch, in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)  # (B, in_features) -> (B, out_features)
