"""A run's settings and results, the same way for every logger and every task.

At the start of fitting (or testing): a short, fixed set of hyperparameters (`HPARAMS`) and the full
resolved config go to every logger (`callbacks.media.log_config`), and TensorBoard gets a
custom-scalars layout that overlays training and validation curves. When the run ends (`finish`):
the validation metrics of the best epoch, the one whose checkpoint is tested, are written as
`val/<metric>_best`, and TensorBoard's HPARAMS tab gets this run's hyperparameters beside the fixed
metric columns `COLUMNS`. Every run writes the same columns, so whichever run TensorBoard reads the
definition from, a logs folder of many tasks shows the same columns; their order puts the metrics
this run has first (TensorBoard shows the first five until the user picks others): its monitored
metric's best validation value, its test metrics, its other `val/*_best`, then the columns other
tasks fill. The run's row is named by what tells it apart first (`session_name`): the overrides,
then the start time, then the task's folder (`lr=0.01 · 2026-12-07 10:00:00.123456 · titanic/runs`),
not by its path, which TensorBoard cuts to `titanic/runs/202…`.
"""

import inspect
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.tensorboard.summary import hparams

from dltemplate.callbacks.media import log_config, log_scalars
from dltemplate.callbacks.schedule import _improves, _monitor, metric_step
from dltemplate.loggers import metric_name
from dltemplate.modules.step import StepModule
from dltemplate.resolvers import run_label

# the HPARAMS columns, in order; every run fills every one (numbers as numbers, the rest as short strings)
HPARAMS = (
    "task",
    "net",
    "size",
    "params",
    "optimizer",
    "lr",
    "weight_decay",
    "batch_size",
    "epochs",
    "seed",
    "scheduler",
    "overrides",
)
# every metric a module logs for validation and test, of every objective
METRICS = ("loss", "acc", "auroc", "f1", "mse", "mae", "r2", "rmse", "smape", "mase", "rel_mae")
COLUMNS = tuple(f"test/{m}" for m in METRICS) + tuple(f"val/{m}_best" for m in METRICS)
# the columns TensorBoard's HPARAMS table shows before the user picks others (it shows five)
SHOWN = ("task", "net", "size", "params", "lr")
_DIMS_ONLY = ("pad_index",)  # net settings that are not sizes


def curated_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The settings that tell runs apart, with short values: {"task": "rings", "net": "MLP", "lr": 0.01, ...}."""
    net = OmegaConf.to_container(cfg.get("net") or OmegaConf.create({}), resolve=False)
    module = OmegaConf.to_container(cfg.get("module") or OmegaConf.create({}), resolve=True)
    optimizer, scheduler = module.get("optimizer") or {}, module.get("scheduler") or {}
    sizes = [
        f"{k}={_short_value(v)}"
        for k, v in net.items()
        if k not in _DIMS_ONLY and not k.startswith("_") and _is_size(v) and "${dims." not in str(v)
    ]
    seed = cfg.get("seed")
    return {
        "task": str(cfg.get("task_name")),
        "net": _short_name(net.get("_target_")),
        "size": " ".join(sizes)[:60] or "-",
        "params": 0,  # filled in when the module exists
        "optimizer": _short_name(optimizer.get("_target_")),
        "lr": float(optimizer.get("lr", _default(optimizer, "lr"))),
        "weight_decay": float(optimizer.get("weight_decay", _default(optimizer, "weight_decay"))),
        "batch_size": _number(OmegaConf.select(cfg, "data.batch_size", default=None)),
        "epochs": _number(OmegaConf.select(cfg, "trainer.max_epochs", default=None)),
        "seed": "none" if seed is None else str(seed),
        "scheduler": _short_name(scheduler.get("_target_")) if scheduler else "none",
        "overrides": run_label(_command_line_overrides(), prefix="", max_chars=100) or "-",
    }


class RunSummary(Callback):
    """Writes the run's settings at the start and its summary at the end to every logger (see the module docstring).

    `build_trainer` adds it to every Trainer; `train` calls `finish` once testing is done.
    """

    def __init__(self, cfg: DictConfig) -> None:
        try:
            self.params = curated_hparams(cfg)
        except Exception:  # a config missing a part (evaluate.yaml before restoring): the columns stay, blank
            numbers = ("params", "lr", "weight_decay", "batch_size", "epochs")  # the same types as other runs'
            self.params = {k: float("nan") if k in numbers else "-" for k in HPARAMS} | {
                "task": str(cfg.get("task_name"))
            }
        try:
            self.config = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # an unresolvable value (a `???` left for later) must not stop the run
            self.config = OmegaConf.to_container(cfg, resolve=False)
        try:
            self.session = session_name(cfg.paths.output_dir, cfg.paths.log_dir)
        except Exception:  # no paths (a bare config): TensorBoard names the row by its run
            self.session = ""
        self.best_val: dict[str, float] = {}
        self.best_score: float | None = None
        self.best_step = 0
        self._val_step = 0
        self._started = False

    def _start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._started:
            return
        self._started = True
        self.params["params"] = sum(p.numel() for p in pl_module.parameters())
        log_config(trainer, self.params, self.config)
        layout = custom_scalars_layout(pl_module)
        for logger in trainer.loggers if trainer.is_global_zero else []:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_custom_scalars(layout)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val_step = metric_step(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Keep the validation metrics of the best epoch so far (ModelCheckpoint's choice, made right after)."""
        monitor, mode = _monitor(trainer)
        metrics = {metric_name(k): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if not metrics:
            return
        score = metrics.get(monitor) if monitor else None
        if monitor is None or not self.best_val or _improves(score, self.best_score, mode):
            self.best_val, self.best_score, self.best_step = metrics, score, self._val_step

    def finish(self, trainer: Trainer, metrics: Mapping[str, float]) -> dict[str, float]:
        """Write the end-of-run summary; returns the `val/<metric>_best` values it added."""
        best = {f"{k}_best": v for k, v in self.best_val.items() if not k.endswith("_best")}
        if not trainer.is_global_zero:
            return best
        log_scalars(trainer, best, self.best_step)  # a dot on the validation curves' best epoch
        final = {**metrics, **best}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                write_hparams(logger, self.params, final, _monitor(trainer)[0], self.session)
                logger.finalize("success")  # flush: nothing else closes the writer after this
            elif isinstance(logger, WandbLogger):
                summary = {k: v for k, v in final.items() if isinstance(v, (int, float))}
                summary["trainer/global_step"] = trainer.global_step  # not the step of the last record
                logger.experiment.summary.update(summary)
                logger.experiment.finish()
            elif isinstance(logger, (MLFlowLogger, CSVLogger)):
                logger.finalize("success")
        return best


def write_hparams(
    logger: TensorBoardLogger,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    monitor: str | None = None,
    session: str = "",
) -> None:
    """TensorBoard's HPARAMS records: the experiment definition (`COLUMNS`, this run's first), its values, its end.

    The metric columns read the scalars `test/*` and `val/*_best` of this run; no `hp/` copies.
    `session` names the run's row (default: its run path).
    """
    values = {name: params[name] for name in HPARAMS}
    experiment, start, end = hparams(values, {column: math.nan for column in metric_columns(metrics, monitor)})
    data = plugin_data_pb2.HParamsPluginData.FromString(experiment.value[0].metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in SHOWN  # TensorBoard shows the "differing" ones first
    experiment.value[0].metadata.plugin_data.content = data.SerializeToString()
    if session:
        data = plugin_data_pb2.HParamsPluginData.FromString(start.value[0].metadata.plugin_data.content)
        data.session_start_info.group_name = session
        start.value[0].metadata.plugin_data.content = data.SerializeToString()
    writer = logger.experiment._get_file_writer()  # reopened if a stage's teardown closed it (train=false)
    for summary in (experiment, start, end):
        writer.add_summary(summary)
    missing = sorted(k for k in metrics if k.startswith("test/") and k not in COLUMNS and "naive" not in k)
    if missing:
        import logging

        logging.getLogger(__name__).warning("not in TensorBoard's HPARAMS columns (COLUMNS): %s", missing)


def metric_columns(metrics: Mapping[str, float], monitor: str | None = None) -> list[str]:
    """`COLUMNS`, those this run has first: the monitored metric's best and test values, its test metrics, its bests.

    TensorBoard shows the first five metric columns until the user picks others: for a classifier
    monitored on val/loss, `val/loss_best`, `test/loss`, `test/acc`, `test/auroc`, `test/f1`; for a
    forecast on val/mae, `val/mae_best`, `test/mae`, then `test/rel_mae`, `test/mase` ... .
    """
    has = [c for c in COLUMNS if isinstance(metrics.get(c), (int, float)) and metrics[c] == metrics[c]]
    name = metric_name(monitor).split("/", 1)[-1] if monitor else None
    first = [c for c in (f"val/{name}_best", f"test/{name}") if name and c in has]
    tests = [c for c in has if c.startswith("test/") and c not in first]
    tests.sort(key=lambda c: c == "test/loss")  # the task's own metrics before the loss
    ordered = first + tests + [c for c in has if c not in first and c not in tests]
    return ordered + [c for c in COLUMNS if c not in ordered]


# a run directory's name: <date>_<time>_<µs> (a run) or <job number> (a multirun job), then _<overrides>
_RUN_DIR = re.compile(
    r"^(?:(?P<date>\d{4}-\d{2}-\d{2})_(?P<time>\d{2}-\d{2}-\d{2})(?:_(?P<us>\d+))?|(?P<job>\d+))(?:_(?P<label>.+))?$"
)


def session_name(output_dir: str | Path, log_dir: str | Path) -> str:
    """A run's name with what tells it apart first: `lr=0.01 · 2026-12-07 10:00:00.123456 · titanic/runs`.

    From the run directory `<log_dir>/<task>/runs/<date>_<time>_<µs>_<overrides>` (a multirun job:
    `lr=0.01 · job 3 · titanic/multiruns/<date>...`). Unique as the directory is, so TensorBoard
    keeps every run its own row.
    """
    path = Path(output_dir).resolve()
    try:
        relative = path.relative_to(Path(log_dir).resolve())
    except ValueError:
        relative = path
    match = _RUN_DIR.match(relative.name)
    if match is None:
        parts = [relative.name]
    else:
        when = f"job {match['job']}" if match["job"] else f"{match['date']} {match['time'].replace('-', ':')}"
        when += f".{match['us']}" if match["us"] else ""
        parts = [match["label"], when] if match["label"] else [when]
    folder = relative.parent.as_posix()
    return " · ".join(parts + ([folder] if folder not in ("", ".") else []))


def custom_scalars_layout(pl_module: LightningModule) -> dict:
    """TensorBoard CUSTOM SCALARS: each metric's training and validation curves on one chart, and for
    forecasts the model's error beside the naive forecasts'."""
    names = ["loss"]
    step_module = isinstance(pl_module, StepModule)  # a module of one's own: its loss alone
    for collection in (pl_module.val_metrics, pl_module.train_metrics) if step_module else ():
        if collection is not None:
            names += [k.split("/", 1)[-1] for k in collection.keys(keep_base=False)]
    overlay = {
        name: ["Multiline", [f"^(train|val)/{name}$"]] for name in dict.fromkeys(n for n in names if n in METRICS)
    }
    layout = {"train vs val": overlay}
    if step_module and pl_module.compares_to_naive:
        layout["forecast error vs naive"] = {
            "validation MAE": ["Multiline", [r"^val/(mae|naive_mae|snaive_mae)$"]],
            "MAE relative to naive (below 1 beats it)": ["Multiline", [r"^val/rel_mae$"]],
        }
    return layout


def _number(value: Any) -> float | int:
    return value if isinstance(value, int) and not isinstance(value, bool) else float("nan")


def _is_size(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) for v in value)


def _short_value(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _short_name(target: str | None) -> str:
    return str(target).rsplit(".", 1)[-1] if target else "-"


def _default(spec: Mapping[str, Any], name: str) -> float:
    """The default of `name` in the optimizer class `spec` names (AdamW's weight_decay is 0.01, not 0)."""
    try:
        parameter = inspect.signature(get_class(spec["_target_"])).parameters.get(name)
        default = parameter.default if parameter is not None else None
        return float(default) if isinstance(default, (int, float)) else float("nan")
    except Exception:
        return float("nan")


def _command_line_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
