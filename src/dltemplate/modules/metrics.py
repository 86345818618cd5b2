"""Epoch metrics logged once per epoch, the same way in every module."""

from lightning.pytorch import LightningModule
from torchmetrics import MetricCollection


def log_epoch_metrics(module: LightningModule, metrics: MetricCollection, prog_bar: bool = False) -> None:
    """Log the epoch's metrics once, computed over every process (torchmetrics gathers), then reset them.

    Logging the metric objects on every step instead costs Lightning a walk over each metric's state
    per step, and the computed values are only read at the epoch's end anyway.
    """
    if any(metric.update_called for metric in metrics.values()):
        module.log_dict(metrics.compute(), prog_bar=prog_bar, sync_dist=True)
    metrics.reset()
