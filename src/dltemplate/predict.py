"""Predict entry point: a checkpoint and raw inputs in, a CSV of predictions out."""

import logging
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig

from dltemplate.build import build_trainer
from dltemplate.checkpoint import restore

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> pd.DataFrame:
    """Predict `cfg.input` with the model and preprocessing stored in `cfg.ckpt_path`.

    The data module decides what an input is (a CSV file, image files, texts, a series) through
    its `predict_input` attribute, and lays out the result in `format_predictions`.
    """
    output = Path(cfg.output)
    if output.exists() and not cfg.get("overwrite", False):
        raise FileExistsError(f"{output} already exists; choose another output=... or pass overwrite=true")
    module, datamodule, _ = restore(cfg.ckpt_path)
    if not hasattr(datamodule, "format_predictions"):
        raise TypeError(f"{type(datamodule).__name__} does not support prediction from raw inputs")
    datamodule.predict_input = cfg.input
    batches = build_trainer(cfg).predict(module, datamodule=datamodule)
    table = datamodule.format_predictions(torch.cat(batches))
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output, index=False)
    return table


def main(cfg: DictConfig) -> None:
    """Hydra task function."""
    table = predict(cfg)
    log.info("%d predictions written to %s", len(table), cfg.output)
