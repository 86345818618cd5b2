"""fastText-style classifier: the mean embedding of a text's words and hashed word pairs."""

from typing import Any

import torch
from torch import Tensor, nn


class NGramBag(nn.Module):
    """Averages embeddings of the tokens and of their n-grams (hashed into `buckets`), then a linear layer.

    Word order matters only through the n-grams, which is most of what sentiment needs ("not good");
    it trains in seconds per epoch on a CPU. Padding (id `pad_index`) and n-grams touching it are left
    out of the average.

    Args:
        vocab_size: Vocabulary size (token ids below it).
        out_features: 1 for binary logits, else the number of classes.
        embedding_dim: Embedding width.
        ngrams: Longest n-gram: 1 is a bag of words, 2 adds word pairs.
        buckets: Hash buckets shared by all n-grams; more means fewer collisions and more parameters.
        dropout: Dropout on the averaged embedding.
        pad_index: Id of the padding token.
        sparse: Sparse embedding gradients: a step updates only the rows of the batch's tokens and
            n-grams, not all `vocab_size + buckets` rows (the optimizer gets a sparse-capable part,
            see `dltemplate.modules.optimizers.parameter_groups`; dense under DDP).
    """

    def __init__(
        self,
        vocab_size: int,
        out_features: int = 1,
        embedding_dim: int = 32,
        ngrams: int = 2,
        buckets: int = 2**19,
        dropout: float = 0.0,
        pad_index: int = 0,
        sparse: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size, self.ngrams, self.buckets, self.pad_index = vocab_size, ngrams, buckets, pad_index
        size = vocab_size + (buckets if ngrams > 1 else 0)
        self.embedding = nn.EmbeddingBag(size, embedding_dim, mode="mean", padding_idx=pad_index, sparse=sparse)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embedding_dim, out_features)

    @classmethod
    def example_input(cls, batch: int, vocab_size: int, **config: Any) -> Tensor:
        """(B, 37) token ids."""
        return torch.randint(0, vocab_size, (batch, 37))

    def features(self, ids: Tensor) -> Tensor:
        """(B, L) token ids → (B, L + (L-1) + ...) ids of tokens and hashed n-grams, padding where absent."""
        parts, pad = [ids], ids == self.pad_index
        hashed = ids
        for n in range(2, self.ngrams + 1):
            hashed = hashed[:, :-1] * 1_000_003 + ids[:, n - 1 :]  # a polynomial hash of the n tokens
            touches_pad = pad[:, : pad.shape[1] - n + 1].clone()
            for k in range(1, n):
                touches_pad |= pad[:, k : k + touches_pad.shape[1]]
            gram = self.vocab_size + torch.remainder(hashed, self.buckets)
            parts.append(gram.masked_fill(touches_pad, self.pad_index))
        return torch.cat(parts, dim=1)

    def forward(self, ids: Tensor) -> Tensor:
        features = self.features(ids)  # (B, T)
        if self.training and self.embedding.sparse and not torch.compiler.is_compiling():
            # the padding (most of a batch of uneven texts) left out of the sparse gradient: a flat bag.
            # Its size depends on the data (the host waits for the device), which only a sparse
            # gradient on the CPU repays; on accelerators the embeddings train dense (see
            # `dense_gradients_where_needed`) and take the padded bag below.
            kept = features != self.pad_index
            counts = kept.sum(dim=1)  # (B,)
            bag = self.embedding(features[kept], torch.cumsum(counts, 0) - counts)  # (B, E); empty bags: zeros
        else:  # evaluation, export, compilation, dense gradients: shapes that do not depend on the data
            bag = self.embedding(features)  # (B, E); an all-padding text gives zeros
        return self.head(self.dropout(bag))  # (B, out_features)
