"""Evaluate entry point: score a trained checkpoint on its task's test split."""

import logging

from omegaconf import DictConfig, OmegaConf

from dltemplate.build import build_trainer
from dltemplate.checkpoint import restore
from dltemplate.settings import check_settings

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test `cfg.ckpt_path` with the data pipeline stored in it (data read from `cfg.paths.data_dir`).

    `cfg.data` replaces data settings of the checkpoint (e.g. `test_file`) to score another labelled set.
    """
    check_settings(cfg)  # `+data.batch_size=0` and the like, before the checkpoint is read
    data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else {}
    module, datamodule, _ = restore(cfg.ckpt_path, paths=cfg.paths, data_overrides=data, reads_data=True)
    trainer = build_trainer(cfg)
    metrics = trainer.test(module, datamodule=datamodule)[0]
    return {k: float(v) for k, v in metrics.items()}


def main(cfg: DictConfig) -> None:
    """Hydra task function."""
    metrics = evaluate(cfg)
    log.info("test metrics of %s: %s", cfg.ckpt_path, metrics)
