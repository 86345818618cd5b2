"""The book's COVID-19 forecaster: an LSTM that predicts growth rates of the last observed value."""

from typing import Any

import torch
from torch import Tensor, nn


class GrowthRateLSTM(nn.Module):
    """Stacked LSTM over the window → linear layer → growth rates r → max((1 + r) · last value, 0).

    Predicting a rate rather than a value keeps forecasts near the last observation and never
    negative, which suits counts such as daily new cases. The book's configuration was
    LSTM(3, 3, num_layers=5) + Linear(3, 3) on windows of 8 days.

    Args:
        num_series: Number of series (input and output channels).
        horizon: Steps predicted; every step is a rate applied to the last observed value.
        hidden_size: LSTM width.
        num_layers: Stacked LSTM layers.
    """

    def __init__(self, num_series: int, horizon: int = 1, hidden_size: int = 3, num_layers: int = 5) -> None:
        super().__init__()
        self.num_series, self.horizon = num_series, horizon
        self.lstm = nn.LSTM(num_series, hidden_size, num_layers=num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, horizon * num_series)

    @classmethod
    def example_input(cls, batch: int, num_series: int, **config: Any) -> Tensor:
        """(B, window 8, num_series) positive levels, as the growth rates need."""
        return torch.rand(batch, 8, num_series) + 0.1

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(x)  # (B, W, hidden)
        rates = self.linear(out[:, -1]).view(-1, self.horizon, self.num_series)  # (B, H, C)
        last = x[:, -1:, :]  # (B, 1, C)
        return torch.clamp((1 + rates) * last, min=0)  # (B, H, C)
