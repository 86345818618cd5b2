"""Text summaries: the validation texts the model gets most wrong, and an embedding projector."""

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from dltemplate.callbacks.media import log_embedding, log_text_table, plain_text
from dltemplate.callbacks.schedule import metric_step


class TextSamples(Callback):
    """Writes `val/worst_mistakes`: validation texts ranked by the probability given to the wrong
    class, with predicted and true labels, after the last epoch and again with the best checkpoint
    (when testing); and, when fitting ends, the embeddings of the most frequent words to
    TensorBoard's projector, each word labelled with the class whose training texts use it most.

    Needs a data module with `val_texts`, `val_set`, `class_names` and `tokenizer`.

    Args:
        every_n_epochs: Also write the table every N epochs (0: only last and best).
        num_texts: Texts shown.
        pool: Validation texts scored to find them (the first `pool` ones).
        max_chars: Characters of each text shown.
        projector_words: Most frequent words sent to the projector; 0 for none.
    """

    def __init__(
        self,
        every_n_epochs: int = 0,
        num_texts: int = 8,
        pool: int = 512,
        max_chars: int = 400,
        projector_words: int = 1000,
    ) -> None:
        self.every_n_epochs, self.num_texts, self.pool = every_n_epochs, num_texts, pool
        self.max_chars, self.projector_words = max_chars, projector_words
        self._last_step: int | None = None

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._last_step = metric_step(trainer)  # the last epoch's table goes beside its validation metrics
        every = self.every_n_epochs
        if every and trainer.current_epoch % every == 0:
            self.write(trainer, pl_module, f"epoch {trainer.current_epoch}")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.write(trainer, pl_module, f"last epoch ({trainer.current_epoch - 1})", self._last_step)
        self.write_projector(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.write(trainer, pl_module, "best checkpoint")

    @torch.no_grad()
    def write(self, trainer: Trainer, pl_module: LightningModule, when: str, step: int | None = None) -> None:
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        count = min(self.pool, len(dm.val_set), len(dm.val_texts))  # the data module keeps the first texts only
        ids, labels = dm.val_set.__getitems__(list(range(count)))
        was_training = pl_module.training
        pl_module.eval()
        probs = pl_module.predict_proba(pl_module(ids.to(pl_module.device))).float().cpu()
        pl_module.train(was_training)
        if probs.ndim == 1:  # binary: P(class 1)
            probs = torch.stack([1 - probs, probs], dim=1)
        true_prob = probs[torch.arange(count), labels]
        names = dm.class_names
        rows = []
        for i in true_prob.argsort()[: self.num_texts].tolist():
            text = plain_text(dm.val_texts[i])
            rows.append(
                {
                    "P(true class)": round(float(true_prob[i]), 3),
                    "predicted": names[int(probs[i].argmax())],
                    "true": names[int(labels[i])],
                    "text": text[: self.max_chars] + ("…" if len(text) > self.max_chars else ""),
                }
            )
        caption = f"validation texts the model gets most wrong · {when}"
        step = metric_step(trainer) if step is None else step
        log_text_table(trainer, "val/worst_mistakes", pd.DataFrame(rows), step, "text", caption)

    def write_projector(self, trainer: Trainer, pl_module: LightningModule) -> None:
        embedding = next((m for m in pl_module.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))), None)
        if embedding is None or not self.projector_words or not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        vocab = dm.tokenizer.get_vocab()  # word → id; frequent words have small ids
        words = sorted(vocab, key=vocab.get)[2 : 2 + self.projector_words]  # skip [PAD] and [UNK]
        ids = torch.tensor([vocab[w] for w in words])
        vectors = embedding.weight[ids.to(embedding.weight.device)].detach().float().cpu()
        try:
            leaning = word_classes(dm, ids)
        except AttributeError:  # training split not held as token tensors: words only
            leaning = [("", "")] * len(words)
        metadata = [[w, *extra] for w, extra in zip(words, leaning, strict=True)]
        log_embedding(trainer, "word_embeddings", vectors, metadata, ["word", "class", "share"])


def word_classes(dm, ids: torch.Tensor) -> list[tuple[str, str]]:
    """For each word id: the class whose training texts use it most often (relative to their length),
    and that class's share of the word's uses, e.g. ("pos", "0.81")."""
    names = dm.class_names
    train = dm.train_set
    size = int(ids.max()) + 1
    counts = np.zeros((len(names), size))
    labels, offsets = train.labels.numpy(), np.asarray(train.offsets)
    for start in range(0, len(labels), 4096):  # a chunk of texts at a time: the ids may be memory-mapped
        stop = min(start + 4096, len(labels))
        tokens = np.asarray(train.ids[offsets[start] : offsets[stop]])
        token_labels = np.repeat(labels[start:stop], np.diff(offsets[start : stop + 1]))
        for label in range(len(names)):
            chosen = tokens[(token_labels == label) & (tokens < size)]
            counts[label] += np.bincount(chosen, minlength=size)
    counts = torch.from_numpy(counts).float()
    rates = (counts + 1) / (counts.sum(1, keepdim=True) + size)  # per class, smoothed
    shares = rates[:, ids] / rates[:, ids].sum(0, keepdim=True)
    best = shares.argmax(0)
    return [(names[int(c)], f"{float(shares[c, i]):.2f}") for i, c in enumerate(best)]
