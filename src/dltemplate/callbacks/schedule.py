"""When evaluation records are drawn: at the best epoch, at the last epoch, and on the test set.

A figure of epoch 0, or of every fifth epoch, shows a model nobody keeps. `EvaluationRecords`
collects what validation returns every epoch, keeps the collection of the best epoch so far (by
the checkpoint's monitored metric, as ModelCheckpoint picks it) and of the latest epoch, and draws
both when fitting ends; testing (the best checkpoint) is drawn when the test epoch ends.
"""

from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import Metric


@dataclass
class Snapshot:
    """What one evaluation collected, and where it sits in the run."""

    stage: str  # "val" or "test"
    epoch: int
    step: int
    data: Any
    score: float | None = None  # the monitored metric
    role: str = ""  # "best", "last", "best and last", "every n epochs"

    def caption(self, monitor: str | None = None) -> str:
        """ "validation · epoch 12 (best by val/acc = 0.931)" or "test · best checkpoint (epoch 12)"."""
        if self.stage == "test":
            return f"test · best checkpoint (epoch {self.epoch})" if self.epoch >= 0 else "test"
        value = f" by {monitor} = {self.score:.4g}" if monitor and self.score is not None else ""
        role = f" ({self.role}{value})" if self.role else ""
        return f"validation · epoch {self.epoch}{role}"


class EvaluationRecords(Callback):
    """Base class: collect validation and test outputs; draw at the best and last epochs and on test.

    Subclasses implement `collector` (a fresh torchmetrics Metric that gathers across processes),
    `collect`, and `record(trainer, snapshot)`, which writes the records through `callbacks.media`.

    Args:
        every_n_epochs: Also draw every N epochs as training goes (0: only best, last and test).
        test: Draw the test set's records too.
    """

    def __init__(self, every_n_epochs: int = 0, test: bool = True) -> None:
        self.every_n_epochs = every_n_epochs
        self.test = test
        self._collector: Metric | None = None
        self._pending: Snapshot | None = None
        self._best: Snapshot | None = None
        self._last: Snapshot | None = None

    # --- what subclasses provide
    def collector(self, pl_module: LightningModule) -> Metric:
        raise NotImplementedError

    def collect(self, collector: Metric, outputs: Any, batch: Any) -> None:
        collector.update(outputs["preds"], outputs["target"])

    def record(self, trainer: Trainer, snapshot: Snapshot) -> None:
        raise NotImplementedError

    # --- the schedule
    @property
    def best_epoch(self) -> int:
        return self._best.epoch if self._best is not None else -1

    def _start(self, pl_module: LightningModule) -> None:
        self._collector = self.collector(pl_module).to(pl_module.device)

    def _finish(self, trainer: Trainer, stage: str) -> Snapshot | None:
        if self._collector is None:
            return None
        data = self._collector.compute()  # every rank: compute() is a collective under DDP
        self._collector = None
        data = _to_cpu(data)
        epoch = self.best_epoch if stage == "test" else trainer.current_epoch
        return Snapshot(stage, epoch, metric_step(trainer), data)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._collector is not None:
            self.collect(self._collector, outputs, batch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._pending = self._finish(trainer, "val")
        if self._pending is not None and trainer.state.fn == TrainerFn.VALIDATING:  # validate(): no epoch end
            self._pending.role = "validate"
            self._draw(trainer, self._pending)
            self._pending = None

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """After the epoch's validation: its metrics are final, ModelCheckpoint has not yet run."""
        snapshot, self._pending = self._pending, None
        if snapshot is None:
            return
        monitor, mode = _monitor(trainer)
        value = trainer.callback_metrics.get(monitor) if monitor else None
        snapshot.score = float(value) if value is not None else None
        if monitor is None or self._best is None or _improves(snapshot.score, self._best.score, mode):
            self._best = snapshot
        self._last = snapshot
        if self.every_n_epochs and trainer.current_epoch % self.every_n_epochs == 0:
            self._draw(trainer, Snapshot(**{**vars(snapshot), "role": f"every {self.every_n_epochs} epochs"}))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        best, last = self._best, self._last
        if best is not None:
            best.role = "best and last" if last is best else "best"
            self._draw(trainer, best)
        if last is not None and last is not best:
            last.role = "last"
            self._draw(trainer, last)
        if best is not None:  # keep only what the test caption needs
            best.data = None
        self._last = None

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.test:
            self._start(pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._collector is not None:
            self.collect(self._collector, outputs, batch)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        snapshot = self._finish(trainer, "test")
        if snapshot is not None:
            self._draw(trainer, snapshot)

    def _draw(self, trainer: Trainer, snapshot: Snapshot) -> None:
        if trainer.is_global_zero and snapshot.data is not None:
            self.record(trainer, snapshot)

    def monitor(self, trainer: Trainer) -> str | None:
        return _monitor(trainer)[0]


class PairsCollector(Metric):
    """Keeps every (prediction, target) pair; a Metric so that DDP gathers them across processes."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().float())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        cat = torch.cat if isinstance(self.preds, list) else (lambda t: t)
        return cat(self.preds), cat(self.target)


def metric_step(trainer: Trainer) -> int:
    """The step Lightning writes the current epoch's metrics at, so that figures line up with them.

    During validation inside fitting it is one less than `global_step` (the last batch's optimizer
    step is counted afterwards).
    """
    return getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)


def _monitor(trainer: Trainer) -> tuple[str | None, str]:
    """The metric and mode of the first ModelCheckpoint that monitors one."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor:
            return callback.monitor, callback.mode
    return None, "min"


def _improves(value: float | None, best: float | None, mode: str) -> bool:
    if value is None or value != value:  # no monitored metric, or NaN: the latest epoch counts
        return best is None
    if best is None or best != best:
        return True
    return value < best if mode == "min" else value > best


def _to_cpu(data: Any) -> Any:
    if isinstance(data, torch.Tensor):
        return data.detach().cpu()
    if isinstance(data, (tuple, list)):
        return type(data)(_to_cpu(d) for d in data)
    if isinstance(data, dict):
        return {k: _to_cpu(v) for k, v in data.items()}
    return data
