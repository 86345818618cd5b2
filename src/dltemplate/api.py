"""Python API for notebooks and scripts: the command line's wiring, one call per step of the workflow.

from dltemplate import api
cfg = api.compose("titanic", "trainer.max_epochs=20", config_dir="../conf")
run = api.fit(cfg)                      # metrics, best checkpoint, per-epoch history
api.plot_metric(run.history, "acc")
api.show_figures(run.output_dir, "test")  # confusion matrix, ROC, ... of the best checkpoint on the test set
model = api.load(run.best_checkpoint)   # net + preprocessing, from the checkpoint alone
model.predict("new_passengers.csv")     # raw inputs in, a table of predictions out
"""

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities.model_summary import ModelSummary
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig, open_dict

from dltemplate.checkpoint import default_paths, net_input, restore
from dltemplate.config import compose_config
from dltemplate.forecast import check_forecasts, forecast_table
from dltemplate.predict import check_predicts, predict_table
from dltemplate.train import train


def compose(
    task: str, *overrides: str, config_dir: str | Path = "conf", output_dir: str | Path | None = None
) -> DictConfig:
    """The run config of `task` with command-line style `overrides`, e.g. "trainer.max_epochs=5".

    Without `output_dir`, the run gets a new directory under `logs/<task>/runs/`, as on the command line.
    """
    cfg = compose_config(config_dir, [f"task={task}", *overrides])
    if output_dir is None:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
        output_dir = Path(cfg.paths.log_dir) / cfg.task_name / "runs" / stamp
    cfg.paths.output_dir = str(output_dir)
    return cfg


@dataclass
class Run:
    """A finished training run."""

    metrics: dict[str, float]
    best_checkpoint: str | None
    output_dir: str
    history: pd.DataFrame  # one row per epoch: train and validation loss and metrics
    module: LightningModule
    datamodule: LightningDataModule


def fit(cfg: DictConfig, quiet: bool = True) -> Run:
    """Train as `train.py` does (then test the best checkpoint) and collect the per-epoch history.

    `quiet` (for notebooks): no progress bar or layer table, Lightning's start-up messages and
    known harmless warnings hidden; the test metrics are still printed.
    """
    if quiet:
        with open_dict(cfg):
            cfg.trainer.enable_progress_bar = False
            for name in ("progress_bar", "model_summary"):
                if cfg.get("callbacks") and name in cfg.callbacks:
                    cfg.callbacks[name] = None
            cfg.trainer.enable_model_summary = False
        with quiet_training():
            result = train(cfg)
    else:
        result = train(cfg)
    trainer = result.trainer
    return Run(
        result.metrics,
        result.best_checkpoint,
        result.output_dir,
        history(result.output_dir),
        trainer.lightning_module,
        trainer.datamodule,
    )


# warnings a notebook user can do nothing about
_HARMLESS = (
    r"`torch\.jit\.trace",  # TensorBoard's graph tracer
    r"install \"ipywidgets\"",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"The '\w+_dataloader' does not have many workers",
    r"No (negative|positive) samples in targets",
    r"The `srun` command is available on your system but is not used",
)


@contextmanager
def quiet_training() -> Iterator[None]:
    """Lightning's informational messages and known harmless warnings hidden, errors and real warnings kept."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for pattern in _HARMLESS:
            warnings.filterwarnings("ignore", message=f".*{pattern}")
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def figures(run_dir: str | Path, split: str = "test") -> dict[str, bytes]:
    """The latest PNG of each figure a run wrote for `split` ("test", "val"), read from its TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, tuple[int, bytes]] = {}
    for path in sorted({p.parent for p in Path(run_dir).rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(path), size_guidance={"images": 0})
        events.Reload()
        for tag in events.Tags()["images"]:
            if tag.startswith(f"{split}/"):
                last = events.Images(tag)[-1]
                if tag not in found or last.step >= found[tag][0]:
                    found[tag] = (last.step, last.encoded_image_string)
    return {tag: png for tag, (_, png) in sorted(found.items())}


def show_figures(run_dir: str | Path, split: str = "test", columns: int = 2) -> plt.Figure:
    """The run's figures for `split` side by side (confusion matrix, ROC, forecast, ...), as one figure."""
    images = figures(run_dir, split)
    if not images:
        raise KeyError(f"{run_dir} has no {split}/ figures; is the TensorBoard logger on?")
    pictures = [plt.imread(io.BytesIO(png), format="png") for png in images.values()]
    rows = -(-len(pictures) // columns)
    # each row as tall as its tallest picture at the cell's width, so every picture fills its cell's width
    # (a tall forecast figure in a fixed 6 × 5 cell would fill 40 % of it)
    width = 6.0
    heights = [
        max(width * p.shape[0] / p.shape[1] for p in pictures[row * columns : (row + 1) * columns])
        for row in range(rows)
    ]
    figure, axes = plt.subplots(
        rows, columns, figsize=(width * columns, sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture in zip(axes.flat, pictures, strict=False):
        ax.imshow(picture)
    figure.tight_layout()
    return figure


def history(run_dir: str | Path) -> pd.DataFrame:
    """Per-epoch scalars of a run, read back from its TensorBoard events (like the book's `dfhistory`).

    Columns are the epoch-level tags (`train/loss`, `val/loss`, `val/acc`, ...), one row per epoch.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted({p.parent for p in Path(run_dir).rglob("events.out.tfevents.*")})
    rows: dict[int, dict[str, float]] = {}
    for run in runs:
        events = EventAccumulator(str(run), size_guidance={"scalars": 0})
        events.Reload()
        tags = events.Tags()["scalars"]
        epoch_tag = next(
            (t for t in ("train/epoch", "epoch") if t in tags), None
        )  # "epoch": runs written before the rename
        if epoch_tag is None:
            continue
        epoch_at = {e.step: int(e.value) for e in events.Scalars(epoch_tag)}
        for tag in tags:
            if tag == epoch_tag or tag.endswith(("_step", "_best")) or tag.startswith(("hp/", "test/", "weights/")):
                continue
            for event in events.Scalars(tag):
                if event.step in epoch_at:
                    rows.setdefault(epoch_at[event.step], {})[tag.removesuffix("_epoch")] = event.value
    return pd.DataFrame.from_dict(rows, orient="index").sort_index().rename_axis("epoch")


def plot_metric(history: pd.DataFrame, metric: str, ax: plt.Axes | None = None) -> plt.Figure:
    """Training and validation curves of `metric` ("loss", "acc", "mse", ...) over epochs."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for stage, style in (("train", "o--"), ("val", "o-")):
        column = f"{stage}/{metric}"
        if column in history:
            # epochs as Lightning counts them, from 0: as in checkpoint names (epoch003.ckpt) and figure titles
            ax.plot(history.index, history[column], style, label=column)
    if not ax.lines:
        raise KeyError(f"no train/{metric} or val/{metric} in the history; it has {list(history.columns)}")
    ax.set(title=f"training and validation {metric}", xlabel="epoch (from 0)", ylabel=metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return ax.figure


def summary(module: LightningModule, depth: int = -1, datamodule: LightningDataModule | None = None) -> str:
    """Parameter counts per layer, with input and output shapes when the module has an example input.

    Pass the data module for a module not yet attached to a Trainer: its example input is then put
    through the data module's device-side transform (normalisation of images) as in training.
    """
    raw = module.example_input_array
    if datamodule is not None and module._trainer is None and raw is not None:
        module.example_input_array = net_input(datamodule, raw)
    try:
        return str(ModelSummary(module, max_depth=depth))
    finally:
        module.example_input_array = raw


class Model:
    """A trained model with its preprocessing, restored from a checkpoint."""

    def __init__(self, ckpt_path: str | Path, data_dir: str | None = None) -> None:
        self.ckpt_path = str(ckpt_path)
        self.module, self.datamodule, self.config = restore(ckpt_path, paths=default_paths(data_dir))
        self.module.eval()
        from dltemplate.checkpoint import load_checkpoint

        example = load_checkpoint(self.ckpt_path).get("example_input")
        if example is not None:  # as the net sees it, so the summary can show layer shapes
            self.module.example_input_array = net_input(self.datamodule, example)

    def _trainer(self) -> Trainer:
        return Trainer(
            accelerator="auto", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
        )

    def predict(self, inputs: Any) -> pd.DataFrame:
        """Predictions for raw inputs: a CSV path or DataFrame (tables), image files or a folder,
        texts or a text file; for series see `forecast`."""
        with quiet_training():
            return predict_table(self.module, check_predicts(self.datamodule), inputs, self._trainer())

    def forecast(
        self, steps: int = 30, series: str | pd.DataFrame | None = None, floor: float | None = 0.0
    ) -> pd.DataFrame:
        """The next `steps` steps after the end of `series` (default: the series trained on)."""
        with quiet_training():
            return forecast_table(self.module, check_forecasts(self.datamodule), series, steps, floor)

    def export(self, path: str | Path, fmt: str = "onnx") -> tuple[Path, float]:
        """Export the net to ONNX, pt2 (torch.export) or TorchScript.

        Returns the file and its largest difference from the checkpoint's outputs.
        """
        # imported here: export is one of the extras, which a project may delete
        from dltemplate.extras.export import export

        if self.module.example_input_array is None:
            raise ValueError(f"{self.ckpt_path} stores no example input to trace the net with")
        return export(self.module, self.module.example_input_array, path, fmt)

    def summary(self, depth: int = -1) -> str:
        return summary(self.module, depth)


def load(ckpt_path: str | Path, data_dir: str | None = None) -> Model:
    """Restore a trained model and its preprocessing from a checkpoint written by a training run."""
    return Model(ckpt_path, data_dir)
