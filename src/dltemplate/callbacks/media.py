"""One logger-neutral layer for everything that is not a scalar: figures, image grids, text tables,
histograms, embeddings and the run's config.

Callbacks call these functions with the Trainer; each record goes to every active logger that can
show it, on global rank 0 only:

    record       TensorBoard        MLflow                        W&B                 CSV (files beside metrics.csv)
    figure       IMAGES             images/, step slider in UI    media, step slider  media/<tag>/step<step>.png
    image grid   IMAGES             images/                       media               media/<tag>/step<step>.png
    text table   TEXT (markdown)    tables/<tag>_step<step>.json  Table               media/<tag>/step<step>.csv
    histogram    HISTOGRAMS         -                             Histogram           -
    embedding    PROJECTOR          -                             -                   -
    config       TEXT; HPARAMS      params, config.yaml artifact  config              hparams.yaml
"""

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from torch import Tensor
from torchvision.utils import make_grid


def active_loggers(trainer: Trainer) -> list[Logger]:
    """The trainer's loggers on global rank 0; none on other ranks (only rank 0 writes)."""
    return list(trainer.loggers) if trainer.is_global_zero else []


def figure_to_array(figure: plt.Figure) -> np.ndarray:
    """The figure rendered as an (H, W, 3) uint8 RGB array."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def log_figure(trainer: Trainer, tag: str, figure: plt.Figure, step: int, close: bool = True) -> None:
    """A matplotlib figure, as an image, to every logger; closes the figure unless `close=False`."""
    loggers = active_loggers(trainer)
    if loggers:
        array = None if _only_tensorboard(loggers) else figure_to_array(figure)
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(tag, figure, step, close=False)
            else:
                _log_array(logger, tag, array, step)
    if close:
        plt.close(figure)


def log_image_grid(trainer: Trainer, tag: str, images: Tensor, step: int, nrow: int = 8) -> None:
    """A grid of (B, C, H, W) images with values in [0, 1] to every logger."""
    loggers = active_loggers(trainer)
    if not loggers:
        return
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, pad_value=1.0)  # (3, H, W)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, grid, step)
        else:
            _log_array(logger, tag, array, step)


def log_text_table(
    trainer: Trainer, tag: str, table: pd.DataFrame, step: int, text_column: str | None = None, caption: str = ""
) -> None:
    """A table of short values, and optionally one long text column, to every logger.

    TensorBoard shows it as markdown under `caption`: a table, or with `text_column` one numbered
    entry per row (its short values on one line, the text below), which stays readable for long texts.
    """
    for logger in active_loggers(trainer):
        if isinstance(logger, TensorBoardLogger):
            heading = f"**{html.escape(caption)}**\n\n" if caption else ""
            logger.experiment.add_text(tag, heading + markdown_table(table, text_column), step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_table(logger.run_id, table, f"tables/{_file_name(tag)}_step{step:06d}.json")
        elif isinstance(logger, WandbLogger):
            import wandb

            logger.log_metrics({tag: wandb.Table(dataframe=table.astype(str))}, step)
        elif isinstance(logger, CSVLogger):
            table.to_csv(_media_path(logger, tag, step, "csv"), index=False)


def log_histogram(trainer: Trainer, tag: str, values: Tensor, step: int) -> None:
    """A histogram of `values` to the loggers that show histograms (TensorBoard, W&B)."""
    for logger in active_loggers(trainer):
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_histogram(tag, values.detach().float().cpu(), step)
        elif isinstance(logger, WandbLogger):
            import wandb

            logger.log_metrics({tag: wandb.Histogram(values.detach().float().cpu().numpy())}, step)


def log_scalars(trainer: Trainer, metrics: Mapping[str, float], step: int) -> None:
    """Scalars outside Lightning's `self.log` (written at once, whatever the logging interval)."""
    for logger in active_loggers(trainer):
        logger.log_metrics({k: float(v) for k, v in metrics.items()}, step)


def log_embedding(
    trainer: Trainer, tag: str, vectors: Tensor, metadata: Sequence[Sequence[str]], header: list[str]
) -> None:
    """Vectors with one row of labels each, to TensorBoard's projector (colour points by a label column)."""
    for logger in active_loggers(trainer):
        if isinstance(logger, TensorBoardLogger):
            rows = [list(row) for row in metadata] if len(header) > 1 else [row[0] for row in metadata]
            logger.experiment.add_embedding(
                vectors.detach().float().cpu(),
                metadata=rows,
                metadata_header=header if len(header) > 1 else None,
                tag=tag,
                global_step=trainer.global_step,
            )


def log_config(trainer: Trainer, params: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """The run's settings: `params`, a short flat selection, and `config`, the full resolved config.

    TensorBoard gets the full config as text (its HPARAMS tab is written with the final metrics, see
    `dltemplate.callbacks.hparams`); MLflow the params and a config.yaml artifact; W&B both in its
    run config; CSV the params in hparams.yaml.
    """
    text = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
    for logger in active_loggers(trainer):
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text("config", "```yaml\n" + text + "\n```", 0)
            logger.hparams.update(params)  # saved as hparams.yaml beside the events
        elif isinstance(logger, MLFlowLogger):
            logger.log_hyperparams(dict(params))
            logger.experiment.log_text(logger.run_id, text, "config.yaml")
        elif isinstance(logger, WandbLogger):
            logger.experiment.config.update({**params, "config": dict(config)}, allow_val_change=True)
        elif isinstance(logger, CSVLogger):
            logger.log_hyperparams(dict(params))


def markdown_table(table: pd.DataFrame, text_column: str | None = None) -> str:
    """Markdown for TensorBoard's TEXT tab: HTML tags stripped, cells escaped."""
    short = [c for c in table.columns if c != text_column]
    if text_column is None:
        lines = ["| " + " | ".join(map(str, short)) + " |", "|" + " --- |" * len(short)]
        lines += ["| " + " | ".join(_cell(row[c]) for c in short) + " |" for _, row in table.iterrows()]
        return "\n".join(lines)
    entries = []
    for number, (_, row) in enumerate(table.iterrows(), start=1):
        values = " · ".join(f"{c}: **{_cell(row[c])}**" for c in short)
        entries.append(f"{number}. {values}\n\n    > {_cell(row[text_column])}")
    return "\n\n".join(entries)


def plain_text(text: str) -> str:
    """Text without HTML tags (`<br />` becomes a space) and with runs of whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]{0,200}>", " ", html.unescape(str(text)))).strip()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.3f}"
    return html.escape(plain_text(value)).replace("|", "/")


def _only_tensorboard(loggers: list[Logger]) -> bool:
    return all(isinstance(logger, TensorBoardLogger) for logger in loggers)


def _log_array(logger: Logger, tag: str, array: np.ndarray, step: int) -> None:
    """An (H, W, 3) uint8 image to a logger other than TensorBoard."""
    if isinstance(logger, MLFlowLogger):
        key = re.sub(r"[^a-zA-Z0-9_\-./ ]", "_", tag)
        logger.experiment.log_image(logger.run_id, array, key=key, step=step, synchronous=True)
    elif isinstance(logger, WandbLogger):
        logger.log_image(key=tag, images=[array], step=step)
    elif isinstance(logger, CSVLogger):
        from PIL import Image

        Image.fromarray(array).save(_media_path(logger, tag, step, "png"))


def _file_name(tag: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", tag)


def _media_path(logger: Logger, tag: str, step: int, suffix: str) -> Path:
    folder = Path(logger.log_dir) / "media" / _file_name(tag)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"step{step:06d}.{suffix}"
