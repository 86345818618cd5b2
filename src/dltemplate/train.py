"""Train entry point: one run, or a cross-validation (`cv.folds`) or a backtest (`backtest.origins`) of runs.

The run itself is `dltemplate.run.train`; `cv.py` and `backtest.py` call it once per fold or origin,
and this module picks which of the three a config asks for.
"""

import importlib
import logging
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dltemplate.errors import ConfigError
from dltemplate.loggers import metric_name
from dltemplate.run import RunResult, train
from dltemplate.selection import move_old_data_keys, selection_of

__all__ = ["RunResult", "main", "run_metrics", "train"]

log = logging.getLogger(__name__)


def main(cfg: DictConfig) -> float | None:
    """Hydra task function: train, record the result, and return `cfg.optimized_metric` for sweepers.

    In a multirun a failing job is recorded (result.json, the sweep summary) and the sweep goes on.
    With `cv.folds` (or `backtest.origins`) set, the run is a cross-validation (a backtest) and the
    value returned is the mean over its folds (origins).
    """
    try:
        metrics = run_metrics(cfg)
    except Exception:
        if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
            raise
        log.exception("job failed; the sweep goes on")
        return float("nan")
    objective = cfg.get("optimized_metric") or (f"{cfg.monitor}_best" if selection_of(cfg) else None)
    if objective is None:
        return None
    objective = metric_name(objective)  # an earlier version's name (lr-AdamW, hp/test/acc) still works
    if objective not in metrics:
        raise ConfigError(f"optimized_metric={objective!r} was not logged; logged: {sorted(metrics)}")
    return metrics[objective]


def run_metrics(cfg: DictConfig) -> dict[str, float]:
    """Train once, or cross-validate (`cv.folds`) or backtest (`backtest.origins`); the metrics (means over folds)."""
    move_old_data_keys(cfg)  # data.folds=5 (an earlier version's) is one fold's run: cv.folds=5 cv.fold=0
    kind = selection_of(cfg)
    if kind == "cv":  # imported when used: a plain run needs neither, and a project may delete them
        return _extra("dltemplate.extras.cv", "cross_validate", "cv.folds")(cfg)
    if kind == "backtest":
        return _extra("dltemplate.extras.backtest", "backtest", "backtest.origins")(cfg)
    result = train(cfg)
    log.info("results in %s (best checkpoint: %s)", result.output_dir, result.best_checkpoint)
    return result.metrics


def _extra(module: str, name: str, setting: str) -> Any:
    """`name` from one of the extras, imported only when asked for: a project may have deleted them."""
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        path = "src/" + module.replace(".", "/") + ".py"
        raise ConfigError(f"{setting} needs {path}, which this project does not have; leave {setting} unset") from None
