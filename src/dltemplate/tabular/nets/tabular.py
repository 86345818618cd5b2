"""Network for encoded table rows: numeric features plus embedded or one-hot categories."""

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dltemplate.nets.mlp import MLP


class TabularNet(nn.Module):
    """An MLP over [numeric features | encoded categorical columns].

    Input rows are laid out as `TableEncoder` writes them: `num_numeric` floats, then one integer
    category code per categorical column (stored as a float).

    Args:
        num_numeric: Width of the numeric part of a row.
        cardinalities: Number of codes of each categorical column.
        out_features: Output width (1 for binary logits or one regression target).
        hidden: Widths of the hidden layers, e.g. [20, 15] for the book's 15→20→15→1 net.
        embedding_dim: Learn an embedding of at most this size per categorical column (capped at
            (cardinality + 1) // 2); None one-hot encodes them instead.
        activation, dropout, batch_norm: see `MLP`.
    """

    def __init__(
        self,
        num_numeric: int,
        cardinalities: Sequence[int],
        out_features: int,
        hidden: Sequence[int] = (64, 32),
        embedding_dim: int | None = None,
        activation: str = "ReLU",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.num_numeric = num_numeric
        self.cardinalities = list(cardinalities)
        if embedding_dim is None:
            self.embeddings = None
            width = num_numeric + sum(self.cardinalities)
        else:
            sizes = [min(embedding_dim, (k + 1) // 2) for k in self.cardinalities]
            self.embeddings = nn.ModuleList(nn.Embedding(k, d) for k, d in zip(self.cardinalities, sizes, strict=True))
            width = num_numeric + sum(sizes)
        self.mlp = MLP(width, out_features, hidden, activation, dropout, batch_norm)
        # codes outside a column's range are read as 0, "unknown": the same answer in PyTorch, ONNX and
        # torch.export (an embedding refuses them in one runtime and wraps negative ones in another)
        self.register_buffer("limits", torch.tensor(self.cardinalities, dtype=torch.long), persistent=False)

    @classmethod
    def example_input(cls, batch: int, num_numeric: int, cardinalities: Sequence[int], **config: Any) -> Tensor:
        """(B, num_numeric + one code per category column), each code within its column's cardinality."""
        codes = [torch.randint(0, k, (batch, 1)).float() for k in cardinalities]
        return torch.cat([torch.randn(batch, num_numeric), *codes], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        numeric, codes = x[:, : self.num_numeric], x[:, self.num_numeric :].long()  # (B, N), (B, C)
        codes = torch.where((codes >= 0) & (codes < self.limits), codes, torch.zeros_like(codes))
        if self.embeddings is None:
            parts = [F.one_hot(codes[:, i], k).float() for i, k in enumerate(self.cardinalities)]
        else:
            parts = [embed(codes[:, i]) for i, embed in enumerate(self.embeddings)]
        return self.mlp(torch.cat([numeric, *parts], dim=1))  # (B, out_features)
