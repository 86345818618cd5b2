"""Predict entry point: a checkpoint and raw inputs in, a CSV of predictions out."""

import logging
from typing import Any

import pandas as pd
import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from omegaconf import DictConfig

from dltemplate.build import build_trainer
from dltemplate.checkpoint import restore
from dltemplate.errors import CheckpointError
from dltemplate.files import output_path

log = logging.getLogger(__name__)


def predict_table(
    module: LightningModule, datamodule: LightningDataModule, inputs: Any, trainer: Trainer
) -> pd.DataFrame:
    """Predictions for raw `inputs`, laid out by the data module.

    The data module decides what an input is (a CSV file or DataFrame, image files, texts) through
    its `predict_input` attribute, and lays out the result in `format_predictions`.
    """
    if not hasattr(datamodule, "format_predictions"):
        raise CheckpointError(
            f"this checkpoint's data ({type(datamodule).__name__}) reads no input files, so predict.py cannot "
            "use it: "
            + (
                "forecast its series with forecast.py ckpt_path=<the checkpoint>"
                if hasattr(datamodule, "windows")
                else "score it on its own test split with evaluate.py ckpt_path=<the checkpoint>, or serve it "
                "(serve.py takes rows of features)"
            )
            + "; predict.py takes checkpoints of table, image and text tasks"
        )
    datamodule.predict_input = inputs
    batches = trainer.predict(module, datamodule=datamodule)
    return datamodule.format_predictions(torch.cat(batches))


def predict(cfg: DictConfig) -> pd.DataFrame:
    """Predict `cfg.input` with the model and preprocessing stored in `cfg.ckpt_path`; write `cfg.output`."""
    output = output_path(cfg.output, cfg.get("overwrite", False))
    module, datamodule, _ = restore(cfg.ckpt_path, paths=cfg.paths)
    table = predict_table(module, datamodule, cfg.input, build_trainer(cfg))
    table.to_csv(output, index=False)
    return table


def main(cfg: DictConfig) -> None:
    """Hydra task function."""
    table = predict(cfg)
    log.info("%d predictions written to %s", len(table), cfg.output)
