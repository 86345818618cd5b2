"""Predict entry point: a checkpoint and raw inputs in, a CSV of predictions out."""

import logging
from typing import Any

import pandas as pd
import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from omegaconf import DictConfig

from dltemplate.build import build_trainer
from dltemplate.checkpoint import restore
from dltemplate.data.protocols import Forecasts, PredictsInputs, PredictsRows
from dltemplate.errors import CheckpointError, ConfigError, DataError, UserError
from dltemplate.files import output_path
from dltemplate.settings import check_settings

log = logging.getLogger(__name__)
KEEP = ("keys", "all", "none")  # input columns written beside a table's predictions


def check_predicts(datamodule: LightningDataModule) -> PredictsInputs:
    """`datamodule`, refused with a one-line `CheckpointError` naming what to use instead when it reads no
    raw inputs (`PredictsInputs`): checked once, when a predict run is built."""
    if isinstance(datamodule, PredictsInputs):
        return datamodule
    raise CheckpointError(
        f"this checkpoint's data ({type(datamodule).__name__}) reads no input files, so predict.py cannot "
        "use it: "
        + (
            "forecast its series with forecast.py ckpt_path=<the checkpoint>"
            if isinstance(datamodule, Forecasts)
            else "score it on its own test split with evaluate.py ckpt_path=<the checkpoint>, or serve it "
            "(serve.py takes rows of features)"
        )
        + "; predict.py takes checkpoints of table, image and text tasks"
    )


def predict_table(module: LightningModule, datamodule: PredictsInputs, inputs: Any, trainer: Trainer) -> pd.DataFrame:
    """Predictions for raw `inputs`, laid out by the data module (`check_predicts` has accepted it).

    The data module decides what an input is (a CSV file or DataFrame, image files, texts) in
    `use_predict_input`, and lays out the result in `format_predictions`.
    """
    datamodule.use_predict_input(inputs)
    batches = trainer.predict(module, datamodule=datamodule)
    return datamodule.format_predictions(finite_outputs(torch.cat(batches)))


def finite_outputs(outputs: torch.Tensor) -> torch.Tensor:
    """`outputs` (one row per input), refused with a `DataError` naming the rows where they are not numbers.

    Finite but huge inputs (Age=1e300, a value of 1e39 in float32) overflow inside the net, and a
    NaN probability would otherwise become class 0 (argmax) or an empty cell without a word.
    """
    bad = ~torch.isfinite(outputs.reshape(len(outputs), -1)).all(dim=1) if outputs.is_floating_point() else None
    if bad is None or not bad.any():
        return outputs
    rows = (bad.nonzero().flatten() + 1).tolist()
    listed = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    raise DataError(
        f"input row(s) {listed} (counting from 1) give outputs that are not numbers (NaN or infinity): their "
        "values are far outside what the model was trained on (e.g. 1e300), so its arithmetic overflows; "
        "check those rows for values of the wrong scale or unit"
    )


def predict(cfg: DictConfig) -> pd.DataFrame:
    """Predict `cfg.input` with the model and preprocessing stored in `cfg.ckpt_path`; write `cfg.output`.

    For a table, `cfg.keep` says which input columns go beside the predictions (keys: the id column
    or the columns that identify rows, else the row's position; all; none), and when the input has
    the target column its metrics are logged (and kept in the returned table's `attrs["metrics"]`).
    """
    check_settings(cfg)
    output = output_path(cfg.output, cfg.get("overwrite", False))
    keep = cfg.get("keep", "keys")
    if keep not in KEEP:
        raise ConfigError(f"keep={keep!r}: must be one of {', '.join(KEEP)}")
    module, restored, _ = restore(cfg.ckpt_path, paths=cfg.paths)
    datamodule = check_predicts(restored)
    table_rows = isinstance(datamodule, PredictsRows)
    if table_rows:
        datamodule.predict_keep = keep
    elif keep == "all":
        raise ConfigError(f"keep=all copies a table's columns; {type(datamodule).__name__} predicts no table")
    table = predict_table(module, datamodule, cfg.input, build_trainer(cfg))
    table.to_csv(output, index=False)
    try:
        scores = datamodule.predict_metrics() if table_rows else None
    except UserError as error:  # the predictions are written; only their score is missing
        log.warning("the input's target column was not scored: %s", error)
        scores = None
    if scores:
        rows = int(scores.pop("rows"))
        target = datamodule.hparams.target
        shown = ", ".join(f"{name} {value:.4g}" for name, value in scores.items())
        log.info("the input has the target column %r: %s on its %d rows with a target", target, shown, rows)
        table.attrs["metrics"] = {**scores, "rows": rows}
    return table


def main(cfg: DictConfig) -> None:
    """Hydra task function."""
    table = predict(cfg)
    log.info("%d predictions written to %s", len(table), cfg.output)
