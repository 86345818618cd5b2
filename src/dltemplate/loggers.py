"""Lightning's TensorBoard, MLflow, W&B and CSV loggers, writing one set of metric names.

Each class is Lightning's own logger with one change: metric names are made consistent before
they are written (`metric_name`), so every logger shows the same tags:

    Lightning writes          every logger here writes
    train/loss_epoch          train/loss           (the epoch mean; the per-step value stays train/loss_step)
    epoch                     train/epoch
    lr-AdamW                  train/lr             (lr-AdamW/<group> → train/lr/<group>, lr-SGD-momentum → …/momentum)

The learning rate itself is written by `dltemplate.callbacks.learning_rate.LearningRateMonitor` as
`train/lr`, the main parameter group's, whatever the groups (`lr-AdamW/decayed` before).

Runs of one sweep or Optuna study share a `group`: the MLflow experiment `<task>/<group>`, the
W&B group. Pick loggers with `logger=tensorboard`, `logger=mlflow`, `logger=[tensorboard,mlflow]`.
"""

import re
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch import loggers

# Lightning's LearningRateMonitor tags: lr-<Optimizer>[-momentum][/<group>][-momentum]
_LR = re.compile(
    r"^lr-[^/]+?(?:-(?P<what>momentum|beta1|weight_decay))?(?:/(?P<group>.+?))?(?:-(?P<after>momentum|weight_decay))?$"
)
_OLD_GROUP = re.compile(r"^train/(?P<what>lr|momentum)_(?P<group>pg\d+)$")  # train/lr_pg2 → train/lr/pg2


# the experiment tag that picks the view MLflow's UI opens an experiment in (model training or GenAI)
EXPERIMENT_KIND = "mlflow.experimentKind"

# names of earlier versions, still accepted where a user names a metric (monitor, optimized_metric)
OLD_NAMES = {"time/epoch_s": "train/epoch_s"}


def metric_name(name: str) -> str:
    """The name every logger writes for Lightning's metric `name` (see the module docstring).

    Also maps an earlier version's name to today's (`OLD_NAMES`, `hp/test/acc` → `test/acc`).
    """
    name = OLD_NAMES.get(name, name.removeprefix("hp/"))
    if name == "epoch":
        return "train/epoch"
    if name.endswith("_epoch"):
        return name.removesuffix("_epoch")
    match = _LR.match(name) or _OLD_GROUP.match(name)
    if match:
        what = match.groupdict().get("after") or match["what"] or "lr"
        return f"train/{what}" + (f"/{match['group']}" if match["group"] else "")
    return name


def metric_names(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {metric_name(k): v for k, v in metrics.items()}


class TensorBoardLogger(loggers.TensorBoardLogger):
    """Lightning's TensorBoardLogger with consistent metric names, writing the model graph once.

    Lightning traces the graph again for every stage (fit, then test); one GRAPHS entry is enough.
    """

    _graph_written = False

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        if not self._graph_written:
            with warnings.catch_warnings():
                # the graph is drawn from one trace on the example input: that the trace holds for those
                # shapes only (what TracerWarning says of a recurrent layer's size checks) is all it needs
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                super().log_graph(model, input_array)
            self._graph_written = True

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metric_names(metrics), step)


class CSVLogger(loggers.CSVLogger):
    """Lightning's CSVLogger (metrics.csv) with consistent metric names, keeping Lightning's `epoch` and `step`.

    `metrics.csv` has the `train/epoch` column every logger has, and also Lightning's own `epoch`
    (and `step`) columns, so the usual `pd.read_csv(...).groupby("epoch")` works.
    """

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        renamed = metric_names(metrics)
        if "epoch" in metrics:
            renamed["epoch"] = metrics["epoch"]
        super().log_metrics(renamed, step)


class MLFlowLogger(loggers.MLFlowLogger):
    """Lightning's MLFlowLogger with consistent metric names; runs of a sweep go to experiment `<name>/<group>`.

    Args:
        group: The sweep or study the run belongs to; None for a single run.
        artifact_location: Where a new experiment keeps its artifacts (made absolute: the SQLite
            store records it, and `mlflow ui` may run from another directory).
        **kwargs: Lightning's MLFlowLogger arguments (`experiment_name`, `tracking_uri`, ...).
    """

    def __init__(self, group: str | None = None, artifact_location: str | None = None, **kwargs: Any) -> None:
        if group:
            kwargs["experiment_name"] = f"{kwargs.get('experiment_name', 'runs')}/{group}"
        if artifact_location is not None:
            artifact_location = Path(artifact_location).resolve().as_uri()
        self._store_lock = _store_lock(kwargs.get("tracking_uri") or "")
        with self._store_lock:  # MLflow creates (migrates) a new store's tables here
            super().__init__(artifact_location=artifact_location, **kwargs)

    @property
    def experiment(self) -> Any:
        """Lightning's MLflow client; the experiment and the run are created once, under the store's lock.

        Two runs starting together would both find no experiment `<task>` and both create it.
        """
        if self._initialized or rank_zero_only.rank != 0:
            return super().experiment
        with self._store_lock:
            client = super().experiment
            experiment = client.get_experiment(self._experiment_id)
            if EXPERIMENT_KIND not in experiment.tags:  # open it in MLflow's model-training view, not GenAI's
                client.set_experiment_tag(self._experiment_id, EXPERIMENT_KIND, "custom_model_development")
            return client

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metric_names(metrics), step)


def _store_lock(tracking_uri: str) -> FileLock | nullcontext:
    """An inter-process lock for setting up the local MLflow store `tracking_uri` (none for a server).

    MLflow creates a new SQLite store's tables on first use, and two processes doing it at once
    fail (`duplicate column name: step`, or an Alembic version mismatch) and lose a run: runs of a
    parallel sweep, or two people sharing a log directory, start together. Under this lock the
    store is created by the first and found complete by the others.
    """
    if tracking_uri.startswith("sqlite:///"):
        store = Path(tracking_uri.removeprefix("sqlite:///"))
    elif tracking_uri.startswith("file:"):
        store = Path(tracking_uri.removeprefix("file://").removeprefix("file:"))  # a folder store (mlruns)
    elif tracking_uri and ":" not in tracking_uri and tracking_uri != "databricks":
        store = Path(tracking_uri)  # a folder store given as a path
    else:
        return nullcontext()
    store.parent.mkdir(parents=True, exist_ok=True)  # the folder must exist before SQLite creates the file
    return FileLock(f"{store}.lock")


class WandbLogger(loggers.WandbLogger):
    """Lightning's WandbLogger with consistent metric names, one W&B run per logger, quiet by default.

    Lightning's logger reuses a W&B run still open in the process (an earlier training in the same
    notebook or sweep); this one finishes it first, so every training is its own W&B run.

    Args:
        quiet: Silence W&B's console output and its system-metrics sampling.
        **kwargs: Lightning's WandbLogger arguments (`project`, `offline`, `group`, `save_dir`, ...).
    """

    def __init__(self, quiet: bool = True, **kwargs: Any) -> None:
        import wandb

        if wandb.run is not None:
            wandb.finish()
        if quiet and "settings" not in kwargs:
            kwargs["settings"] = wandb.Settings(silent=True, console="off", x_disable_stats=True)
        if kwargs.get("save_dir"):
            Path(kwargs["save_dir"]).mkdir(parents=True, exist_ok=True)
        super().__init__(**kwargs)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metric_names(metrics), step)
