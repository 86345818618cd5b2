"""Tuner presets (`tuner=lr_find`, `tuner=batch_size`): Lightning's Tuner run before fitting, its choice kept.

The chosen value replaces the configured one for the fit that follows, and is recorded where the
configured one would be: the run config (so TensorBoard's HPARAMS tab and checkpoints show it), the
module's hyperparameters, and `tuned` in result.json.
"""

import logging
import math
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig, OmegaConf, open_dict

from dltemplate.build import checkpoint_config
from dltemplate.callbacks.config import ConfigInCheckpoint
from dltemplate.callbacks.media import log_figure
from dltemplate.errors import ConfigError

log = logging.getLogger(__name__)

LR_PLOT = "lr_find.png"


def run_tuner(cfg: DictConfig, trainer: Trainer, module: LightningModule, datamodule: LightningDataModule) -> dict:
    """Run the tuner `cfg.tuner` picks (nothing without one); return what it chose, e.g. {"lr": 0.003}."""
    settings = dict(cfg.get("tuner") or {})
    method = settings.pop("method", None)
    if method is None:
        return {}
    if method == "lr_find":
        tuned = {"lr": find_lr(cfg, trainer, module, datamodule, settings)}
    elif method == "batch_size":
        tuned = {"batch_size": scale_batch_size(cfg, trainer, module, datamodule, settings)}
    else:
        raise ConfigError(f"tuner.method must be lr_find or batch_size, got {method!r}")
    for callback in trainer.callbacks:
        if isinstance(callback, ConfigInCheckpoint):  # checkpoints record the value used
            callback.config = checkpoint_config(cfg)
    return tuned


def find_lr(
    cfg: DictConfig,
    trainer: Trainer,
    module: LightningModule,
    datamodule: LightningDataModule,
    settings: dict[str, Any],
) -> float:
    """Lightning's learning-rate range test; its suggestion becomes the optimizer's `lr`.

    The plot (loss against learning rate, the suggestion marked) goes to `<run>/lr_find.png` and
    TensorBoard's Images tab (`tuner/lr_find`).
    """
    max_epochs = trainer.fit_loop.max_epochs
    # room for the range test's steps, even where the run itself is shorter (max_epochs=1)
    epochs_needed = math.ceil(settings.get("num_training", 100) / max(len(datamodule.train_dataloader()), 1)) + 1
    trainer.fit_loop.max_epochs = max(max_epochs, epochs_needed) if max_epochs not in (None, -1) else max_epochs
    try:
        finder = Tuner(trainer).lr_find(module, datamodule=datamodule, update_attr=False, **settings)
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None:
        raise ConfigError("the learning-rate finder found no suggestion (too few steps?): raise tuner.num_training")
    configured = module.optimizer_spec.get("lr")
    figure = finder.plot(suggest=True)
    figure.savefig(Path(cfg.paths.output_dir) / LR_PLOT, dpi=100)
    log_figure(trainer, "tuner/lr_find", figure, 0)  # every active logger; closes the figure
    with open_dict(cfg):
        cfg.module.optimizer.lr = suggestion
    # re-resolved, so a schedule that interpolates the rate (OneCycleLR's max_lr) follows it too
    resolved = OmegaConf.to_container(cfg.module, resolve=True)
    module.optimizer_spec, module.scheduler_spec = resolved["optimizer"], resolved.get("scheduler")
    for key in ("optimizer", "scheduler"):
        if key in module.hparams:
            module.hparams[key] = resolved.get(key)
    log.info("learning-rate finder: %.3g suggested (configured: %s); training with it", suggestion, configured)
    return float(suggestion)


def scale_batch_size(
    cfg: DictConfig,
    trainer: Trainer,
    module: LightningModule,
    datamodule: LightningDataModule,
    settings: dict[str, Any],
) -> int:
    """Lightning's batch-size finder: the largest batch that fits (doubling until memory runs out or
    `max_trials` is reached, never past the training set); it becomes `data.batch_size`."""
    size = Tuner(trainer).scale_batch_size(module, datamodule=datamodule, **settings)
    with open_dict(cfg):
        cfg.data.batch_size = size
    log.info("batch-size finder: %d", size)
    return int(size)
