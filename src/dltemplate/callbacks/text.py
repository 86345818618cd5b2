"""Text summaries: the validation texts the model gets most wrong, and an embedding projector."""

import html

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from dltemplate.callbacks.tensorboard import tensorboard_writer


class TextSamples(Callback):
    """Writes `val/worst_mistakes`: validation texts ranked by the probability given to the wrong
    class, with predicted and true labels; and, at the end of fitting, the embeddings of the most
    frequent words to TensorBoard's projector.

    Needs a data module with `val_texts`, `val_set`, `class_names` and `tokenizer`.

    Args:
        every_n_epochs: Epoch interval.
        num_texts: Texts shown.
        pool: Validation texts scored to find them (the first `pool` ones).
        max_chars: Characters of each text shown.
        projector_words: Most frequent words sent to the projector; 0 for none.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_texts: int = 8,
        pool: int = 512,
        max_chars: int = 400,
        projector_words: int = 1000,
    ) -> None:
        self.every_n_epochs, self.num_texts, self.pool = every_n_epochs, num_texts, pool
        self.max_chars, self.projector_words = max_chars, projector_words

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        if writer is None or trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        dm = trainer.datamodule
        count = min(self.pool, len(dm.val_set))
        ids, labels = dm.val_set.__getitems__(list(range(count)))
        probs = pl_module.predict_proba(pl_module(ids.to(pl_module.device))).float().cpu()
        if probs.ndim == 1:  # binary: P(class 1)
            probs = torch.stack([1 - probs, probs], dim=1)
        wrong_prob = 1 - probs[torch.arange(count), labels]
        rows = ["| P(true class) | predicted | true | text |", "| --- | --- | --- | --- |"]
        for i in wrong_prob.argsort(descending=True)[: self.num_texts].tolist():
            text = html.escape(dm.val_texts[i][: self.max_chars].replace("\n", " ").replace("|", "/"))
            names = dm.class_names
            rows.append(
                f"| {1 - wrong_prob[i]:.3f} | {names[int(probs[i].argmax())]} | {names[int(labels[i])]} | {text} |"
            )
        writer.add_text("val/worst_mistakes", "\n".join(rows), trainer.global_step)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        embedding = next((m for m in pl_module.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))), None)
        if writer is None or embedding is None or not self.projector_words:
            return
        vocab = trainer.datamodule.tokenizer.get_vocab()  # word → id; frequent words have small ids
        words = sorted(vocab, key=vocab.get)[2 : 2 + self.projector_words]  # skip [PAD] and [UNK]
        vectors = embedding.weight[[vocab[w] for w in words]].detach().float().cpu()
        writer.add_embedding(vectors, metadata=words, tag="word_embeddings", global_step=trainer.global_step)
