"""A progress bar that reads the training loss from the device only every few steps."""

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, showing step values read once per logging interval.

    Lightning turns every value logged with `prog_bar=True` into a Python number after every batch,
    and for a step value (the training loss) that makes the host wait for the device on every step.
    The modules therefore log the training loss without `prog_bar`, and this bar shows it (with any
    other name in `shown`) from the callback metrics, which stay on the device, read once every
    `trainer.log_every_n_steps` steps (when the loggers read it too) and at each epoch's end.

    Args:
        refresh_rate: Batches between redraws.
        leave: Keep each epoch's bar on screen.
        shown: Logged values to show beside the ones logged with `prog_bar=True`.
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        leave: bool = False,
        shown: Sequence[str] = ("train/loss_step", "train/loss_epoch"),
        **kwargs: Any,
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave, **kwargs)
        self.shown = tuple(shown)
        self._values: dict[str, float] = {}
        self._read_at = -1

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        step, every = trainer.global_step, max(trainer.log_every_n_steps, 1)
        if not trainer.training or trainer.is_last_batch or step // every != self._read_at // every:
            found = {name: trainer.callback_metrics[name] for name in self.shown if name in trainer.callback_metrics}
            if found:  # one read for all of them
                values = torch.stack([torch.as_tensor(v, dtype=torch.float32).reshape(()) for v in found.values()])
                self._values = dict(zip(found, values.tolist(), strict=True))
            self._read_at = step
        return {**metrics, **self._values}
