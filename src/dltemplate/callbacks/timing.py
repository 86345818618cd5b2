"""Wall-clock time of each training epoch."""

import time

from lightning.pytorch import Callback, LightningModule, Trainer


class EpochTimer(Callback):
    """Logs `train/epoch_s`, the seconds each epoch took (training and its validation), and keeps them.

    Lightning's `Timer` callback is not used for this: testing from a checkpoint restores its state
    and adds the checkpoint's elapsed time again. This callback keeps no checkpoint state.
    """

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.durations.append(time.perf_counter() - self._start)
        pl_module.log("train/epoch_s", self.durations[-1], on_step=False, on_epoch=True)
