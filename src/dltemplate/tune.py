"""Hyperparameter search with Optuna: each trial is a training run composed from the same configs.

Why not hydra-optuna-sweeper: its last release (1.3.0) pins optuna < 3, and optuna 2.10's SQLite
storage no longer works with the SQLAlchemy 2 and alembic that pip installs today (checked), so a
search could not be resumed. Optuna itself is maintained; this driver is the little glue needed.
"""

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dltemplate.errors import ConfigError
from dltemplate.resolvers import run_label
from dltemplate.train import train

log = logging.getLogger(__name__)


def suggest(trial: optuna.Trial, name: str, space: dict[str, Any]) -> Any:
    """One value for override `name` from its search space: {type: float|int|categorical, ...}."""
    kind = space["type"]
    if kind == "float":
        return trial.suggest_float(name, space["low"], space["high"], log=space.get("log", False))
    if kind == "int":
        return trial.suggest_int(
            name, space["low"], space["high"], step=space.get("step", 1), log=space.get("log", False)
        )
    if kind == "categorical":
        return trial.suggest_categorical(name, list(space["choices"]))
    raise ValueError(f"search space of {name!r}: type must be float, int or categorical, not {kind!r}")


def search_spaces(params: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Override name → search space, from dotted keys (`module.optimizer.lr: {...}`) or nested ones."""
    spaces = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "type" not in value:
            spaces.update(search_spaces(value, f"{name}."))
        else:
            spaces[name] = value
    return spaces


def tune(cfg: DictConfig, base_overrides: list[str] | None = None) -> optuna.Study:
    """Run `cfg.optuna.n_trials` trials (counting those already in the storage) and return the study.

    Each trial composes `train.yaml` with `base_overrides` (by default this command's overrides)
    plus the trial's suggestions, and trains into `<output dir>/trial_<n>`.

    A trial whose training fails or returns NaN is recorded as failed and the search goes on; an
    interrupted search continues from its storage when started again with the same command.
    """
    if "optuna" not in cfg:
        raise ConfigError("no search configured: pick one with hparams_search=<name> (conf/hparams_search/)")
    settings = cfg.optuna
    objective_name = cfg.optimized_metric
    Path(cfg.paths.log_dir, cfg.task_name).mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=settings.storage,
        direction=settings.direction,
        sampler=instantiate(settings.sampler) if settings.get("sampler") else None,
        load_if_exists=True,
    )
    if base_overrides is None:
        base_overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    spaces = search_spaces(OmegaConf.to_container(settings.params, resolve=True))

    def objective(trial: optuna.Trial) -> float:
        overrides = [f"{name}={suggest(trial, name, space)}" for name, space in spaces.items()]
        trial_cfg = compose(config_name="train", overrides=[*base_overrides, *overrides])
        trial_cfg.run_group = settings.study_name  # MLflow experiment <task>/<study>, W&B group
        name = f"trial_{trial.number:03d}{run_label(overrides)}"  # TensorBoard's run name says what differs
        trial_cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / name)
        trial.set_user_attr("output_dir", trial_cfg.paths.output_dir)
        log.info("trial %d: %s", trial.number, " ".join(overrides))
        metrics = train(trial_cfg).metrics
        if objective_name not in metrics:
            raise KeyError(f"optimized_metric={objective_name!r} was not logged; logged: {sorted(metrics)}")
        return metrics[objective_name]  # NaN marks the trial failed

    done = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL) for t in study.trials)
    remaining = max(settings.n_trials - done, 0)
    log.info("study %s in %s: %d trials done, %d to run", settings.study_name, settings.storage, done, remaining)
    study.optimize(objective, n_trials=remaining, catch=(Exception,))
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    study.trials_dataframe().to_csv(Path(cfg.paths.output_dir) / "trials.csv", index=False)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and not math.isnan(t.value)]
    if completed:
        log.info(
            "best trial %d: %s = %.4f with %s",
            study.best_trial.number,
            objective_name,
            study.best_value,
            study.best_params,
        )
    return study


def main(cfg: DictConfig) -> None:
    """Hydra task function."""
    tune(cfg)
