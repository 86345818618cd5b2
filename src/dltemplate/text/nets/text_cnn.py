"""The book's IMDB net: a tiny embedding and two Conv1d layers over 200 tokens."""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BookTextCNN(nn.Module):
    """Embedding(vocab, 3) → Conv1d(3→16, k5) → max-pool 2 → ReLU → Conv1d(16→128, k2) → max-pool 2 → ReLU
    → flatten → linear, as in the book (which used 10,000 words and 200 tokens: 6144 flattened features).

    Texts are padded or cut to `max_length` tokens, since the flattened width depends on it.

    Args:
        vocab_size: Vocabulary size (token ids below it).
        out_features: 1 for binary logits, else the number of classes.
        max_length: Tokens per text.
        embedding_dim: Embedding width (3 in the book).
        pad_index: Id of the padding token.
    """

    def __init__(
        self, vocab_size: int, out_features: int = 1, max_length: int = 200, embedding_dim: int = 3, pad_index: int = 0
    ) -> None:
        super().__init__()
        self.max_length, self.pad_index = max_length, pad_index
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_index)
        self.conv = nn.Sequential(
            nn.Conv1d(embedding_dim, 16, kernel_size=5),
            nn.MaxPool1d(2),
            nn.ReLU(),
            nn.Conv1d(16, 128, kernel_size=2),
            nn.MaxPool1d(2),
            nn.ReLU(),
            nn.Flatten(),
        )
        width = ((max_length - 4) // 2 - 1) // 2 * 128
        self.head = nn.Linear(width, out_features)

    @classmethod
    def example_input(cls, batch: int, vocab_size: int, **config: Any) -> Tensor:
        """(B, 37) token ids, a length the net pads or cuts to its own."""
        return torch.randint(0, vocab_size, (batch, 37))

    def forward(self, ids: Tensor) -> Tensor:
        ids = F.pad(ids[:, : self.max_length], (0, max(self.max_length - ids.shape[1], 0)), value=self.pad_index)
        x = self.embedding(ids).transpose(1, 2)  # (B, E, L)
        return self.head(self.conv(x))  # (B, out_features)
