"""Store the run's resolved config inside every checkpoint."""

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class ConfigInCheckpoint(Callback):
    """Adds `checkpoint["config"]`, the resolved run config as plain containers.

    With it, evaluation and prediction rebuild the data pipeline from the checkpoint alone, and
    the checkpoint still loads with `torch.load(weights_only=True)`.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint["config"] = self.config
