"""Recurrent forecaster that predicts the change from the last observed value."""

from typing import Any, Literal

import torch
from torch import Tensor, nn


class RNNForecaster(nn.Module):
    """LSTM or GRU over the window; a linear head predicts the next `horizon` steps.

    With `residual`, the head predicts the change from the last observed value, so an untrained
    net starts as the naive forecast and training only has to learn what improves on it.

    Args:
        num_series: Number of series (input and output channels).
        horizon: Steps predicted at once.
        hidden_size: Width of the recurrent layers.
        num_layers: Stacked recurrent layers.
        cell: "LSTM" or "GRU".
        dropout: Dropout between recurrent layers (needs num_layers > 1).
        residual: Add the last observed value to the head's output.
    """

    def __init__(
        self,
        num_series: int,
        horizon: int = 1,
        hidden_size: int = 32,
        num_layers: int = 1,
        cell: Literal["LSTM", "GRU"] = "GRU",
        dropout: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.num_series, self.horizon, self.residual = num_series, horizon, residual
        rnn = {"LSTM": nn.LSTM, "GRU": nn.GRU}[cell]
        self.rnn = rnn(num_series, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout)
        self.head = nn.Linear(hidden_size, horizon * num_series)
        self.after_init()

    @classmethod
    def example_input(cls, batch: int, num_series: int, **config: Any) -> Tensor:
        """(B, window 8, num_series) scaled history."""
        return torch.randn(batch, 8, num_series)

    def after_init(self) -> None:
        """With `residual`, start exactly at the naive forecast (also after a `net.init` scheme)."""
        if self.residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)  # (B, W, hidden)
        y = self.head(out[:, -1]).view(-1, self.horizon, self.num_series)  # (B, H, C)
        return y + x[:, -1:, :] if self.residual else y
