"""Store the run's resolved config inside every checkpoint."""

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor


class ConfigInCheckpoint(Callback):
    """Adds `checkpoint["config"]`, the run config as plain containers, and `checkpoint["example_input"]`.

    With them, evaluation, prediction and export rebuild the data pipeline and trace the net from
    the checkpoint alone, which still loads with `torch.load(weights_only=True)`.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint["config"] = self.config
        if isinstance(pl_module.example_input_array, Tensor):  # a few raw inputs, as the data module serves them
            checkpoint["example_input"] = pl_module.example_input_array.detach().cpu()
