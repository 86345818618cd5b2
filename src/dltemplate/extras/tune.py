"""Hyperparameter search with Optuna: each trial is a training run composed from the same configs.

Pruning: every trial reports the monitored metric (`monitor`) after each validation, and the
study's pruner (`optuna.pruner`, MedianPruner in the search configs) stops the unpromising ones;
they are recorded as PRUNED. `OptunaPruning` is a small callback rather than optuna-integration's
`PyTorchLightningPruningCallback` (which imports `lightning.pytorch` and would work with Lightning
2.6) because that one raises `TrialPruned` inside `fit`: the run would end as a failure, untested
and without its result.json, where this one stops the fit at the epoch's end, so a pruned trial is
still a complete, recorded run.

Why not hydra-optuna-sweeper: its last release (1.3.0) pins optuna < 3, and optuna 2.10's SQLite
storage no longer works with the SQLAlchemy 2 and alembic that pip installs today (checked), so a
search could not be resumed. Optuna itself is maintained; this driver is the little glue needed.
"""

import logging
import math
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from dltemplate.cli import user_message
from dltemplate.errors import ConfigError, SearchFailedError
from dltemplate.resolvers import run_label
from dltemplate.rundir import write_result
from dltemplate.selection import selection_of
from dltemplate.train import run_metrics, train

_compose_lock = threading.Lock()  # trials in threads (optuna.n_jobs) share Hydra's global state


class OptunaPruning(Callback):
    """Report `monitor` to an Optuna trial after every validation; stop the fit when the pruner says so.

    Args:
        trial: The trial this run is.
        monitor: The metric reported, e.g. "val/loss" (in the study's direction).
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_epoch: int | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned_epoch = trainer.current_epoch
            trainer.should_stop = True  # ends after this epoch: the run is still tested and recorded


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


SPACE_KEYS = {
    "float": {"low", "high", "log", "step"},
    "int": {"low", "high", "log", "step"},
    "categorical": {"choices"},
}


def check_search(settings: DictConfig, spaces: dict[str, Any]) -> None:
    """Refuse a search that cannot run, before the study is opened: `optuna.n_trials` and `optuna.n_jobs`
    out of range, or a search space Optuna would refuse in every trial (each trial would then fail
    and the search end without a result)."""
    n_trials = settings.get("n_trials")
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError(f"optuna.n_trials={n_trials!r} must be a whole number of at least 1; e.g. optuna.n_trials=20")
    n_jobs = settings.get("n_jobs", 1)
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0 or n_jobs < -1:
        raise ConfigError(f"optuna.n_jobs={n_jobs!r} must be a whole number of at least 1 (or -1: one per core)")
    if not spaces:
        raise ConfigError(
            "optuna.params is empty: give at least one setting to search, e.g. {type: float, low: 1e-4, high: 1e-2}"
        )
    for name, space in spaces.items():
        where = f"optuna.params.{name}"
        if not isinstance(space, dict) or space.get("type") not in SPACE_KEYS:
            kind = space.get("type") if isinstance(space, dict) else space
            raise ConfigError(
                f"{where}: type must be float, int or categorical, not {kind!r}; e.g. "
                "{type: float, low: 1e-4, high: 1e-2, log: true} or {type: categorical, choices: [a, b]}"
            )
        kind = space["type"]
        unknown = sorted(set(space) - SPACE_KEYS[kind] - {"type"})
        needed = sorted({"choices"} if kind == "categorical" else {"low", "high"})
        missing = [key for key in needed if key not in space]
        if unknown or missing:
            problem = f"unknown keys {unknown}" if unknown else f"missing {missing}"
            raise ConfigError(f"{where}: a {kind} space has {', '.join(sorted(SPACE_KEYS[kind]))}; {problem}")
        try:
            if kind == "float":
                optuna.distributions.FloatDistribution(
                    space["low"], space["high"], log=space.get("log", False), step=space.get("step")
                )
            elif kind == "int":
                optuna.distributions.IntDistribution(
                    space["low"], space["high"], log=space.get("log", False), step=space.get("step", 1)
                )
            elif not list(space["choices"] or []):
                raise ValueError("choices is empty")
            else:
                optuna.distributions.CategoricalDistribution(list(space["choices"]))
        except (ValueError, TypeError) as error:
            shown = {k: v for k, v in space.items() if k != "type"}
            raise ConfigError(f"{where}={shown} is not a valid {kind} search space: {error}") from None


@contextmanager
def storage_errors(storage: str) -> Iterator[None]:
    """Turn a storage that is not an Optuna database (a text file, a folder, a truncated file) into one
    `ConfigError` naming it."""
    import sqlalchemy.exc

    try:
        yield
    except sqlalchemy.exc.DBAPIError as error:
        path = storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else None
        what = path or storage
        if path is not None and Path(path).is_dir():
            cause = "it is a folder"
        else:
            cause = str(getattr(error, "orig", None) or error).splitlines()[0]
        raise ConfigError(
            f"optuna.storage={storage}: {what} cannot be used as an Optuna database ({cause}); move it aside "
            "(a search continues only from an intact one) or pass optuna.storage=sqlite:///<another file>"
        ) from None


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
    if settings.get("pruner") and not settings.direction.startswith(cfg.monitor_mode):
        raise ConfigError(
            f"pruning reports monitor={cfg.monitor} ({cfg.monitor_mode}) to a study that is to "
            f"{settings.direction}: pick a monitor in the study's direction, or optuna.pruner=null"
        )
    spaces = search_spaces(OmegaConf.to_container(settings.params, resolve=True) or {})
    check_search(settings, spaces)
    Path(cfg.paths.log_dir, cfg.task_name).mkdir(parents=True, exist_ok=True)
    with storage_errors(str(settings.storage)):
        study = optuna.create_study(
            study_name=settings.study_name,
            storage=settings.storage,
            direction=settings.direction,
            pruner=instantiate(settings.pruner) if settings.get("pruner") else optuna.pruners.NopPruner(),
            load_if_exists=True,
        )
    if settings.get("sampler"):
        study.sampler = continued_sampler(settings.sampler, len(study.trials))
    if base_overrides is None:
        base_overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []

    n_jobs = settings.get("n_jobs", 1)
    if n_jobs != 1 and torch.cuda.device_count():
        n_jobs = min(n_jobs, torch.cuda.device_count()) if n_jobs > 0 else torch.cuda.device_count()
    gpus: queue.Queue[int] = queue.Queue()  # one GPU per trial running at once
    for index in range(torch.cuda.device_count()):
        gpus.put(index)

    failures: list[str] = []  # the first line of each failed trial's error, in order

    def objective(trial: optuna.Trial) -> float:
        try:
            value = run_trial(trial)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            failures.append(f"trial {trial.number}: {(user_message(error) or f'{type(error).__name__}: {error}')}")
            raise
        # Optuna records a NaN as a failed trial without an error: counted here, or a search whose every
        # trial returned NaN would end as a success with no result
        if isinstance(value, float) and math.isnan(value):
            failures.append(f"trial {trial.number}: {objective_name} is NaN")
        return value

    def run_trial(trial: optuna.Trial) -> float:
        overrides = [f"{name}={suggest(trial, name, space)}" for name, space in spaces.items()]
        with _compose_lock:
            trial_cfg = compose(config_name="train", overrides=[*base_overrides, *overrides])
        trial_cfg.run_group = settings.study_name  # MLflow experiment <task>/<study>, W&B group
        name = f"trial_{trial.number:03d}{run_label(overrides)}"  # TensorBoard's run name says what differs
        trial_cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / name)
        trial.set_user_attr("output_dir", trial_cfg.paths.output_dir)
        log.info("trial %d: %s", trial.number, " ".join(overrides))
        gpu = gpus.get() if torch.cuda.device_count() else None  # n_jobs ≤ GPUs: one is free
        if n_jobs != 1:
            _for_threads(trial_cfg)
        try:
            if gpu is not None and trial_cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto"):
                with open_dict(trial_cfg):
                    trial_cfg.trainer.devices = [gpu]
            metrics = _trial_metrics(trial, trial_cfg)
        finally:
            if gpu is not None:
                gpus.put(gpu)
        if objective_name not in metrics:
            raise KeyError(f"optimized_metric={objective_name!r} was not logged; logged: {sorted(metrics)}")
        return metrics[objective_name]  # NaN marks the trial failed

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    done = sum(t.state in finished for t in study.trials)
    remaining = max(settings.n_trials - done, 0)
    log.info("study %s in %s: %d trials done, %d to run", settings.study_name, settings.storage, done, remaining)
    with storage_errors(str(settings.storage)):
        study.optimize(objective, n_trials=remaining, n_jobs=n_jobs, catch=(Exception,))
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    study.trials_dataframe().to_csv(Path(cfg.paths.output_dir) / "trials.csv", index=False)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and not math.isnan(t.value)]
    if remaining and not completed and failures:
        raise SearchFailedError(
            f"every trial of study {settings.study_name} failed ({len(failures)} in this search), so there is "
            f"no result; the first: {failures[0].splitlines()[0]} (each trial's log and result.json are under "
            f"{cfg.paths.output_dir})"
        )
    if completed:
        log.info(
            "best trial %d: %s = %.4f with %s",
            study.best_trial.number,
            objective_name,
            study.best_value,
            study.best_params,
        )
    return study


def continued_sampler(spec: DictConfig, trials_so_far: int) -> optuna.samplers.BaseSampler:
    """The sampler `spec` configures, its seed moved on by the trials the study already holds.

    A seeded sampler started again on a study it continues would draw the same first suggestions
    as when the study began: a search continued with more trials would repeat trial 0's parameters
    (and 1's, ...). Seeded with `seed + trials so far`, each continuation draws new ones, and the
    same command on the same storage still draws the same.
    """
    seed = spec.get("seed")
    if seed is None or not trials_so_far:
        return instantiate(spec)
    log.info("continuing a study of %d trials: sampler seed %d + %d", trials_so_far, seed, trials_so_far)
    return instantiate(spec, seed=int(seed) + trials_so_far)


def _for_threads(cfg: DictConfig) -> None:
    """Leave out what cannot run in several threads at once: TorchScript's tracing of the model graph
    and rich's live progress display (one per console)."""
    for logger in (cfg.get("logger") or {}).values():
        if logger is not None and "log_graph" in logger:
            logger.log_graph = False
    with open_dict(cfg):
        if "progress_bar" in (cfg.get("callbacks") or {}):
            cfg.callbacks.progress_bar = None
        cfg.trainer.enable_progress_bar = False


def _trial_metrics(trial: optuna.Trial, cfg: DictConfig) -> dict[str, float]:
    """Run one trial: a training run pruned by epoch, or a cross-validation / backtest (not pruned: its
    value is the mean over folds or origins). A pruned run is recorded as such and raises `TrialPruned`."""
    if selection_of(cfg):
        return run_metrics(cfg)
    pruning = OptunaPruning(trial, cfg.monitor)
    result = train(cfg, callbacks=[pruning])
    if pruning.pruned_epoch is not None:
        write_result(result.output_dir, "pruned", result.metrics, best_checkpoint=result.best_checkpoint)
        raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_epoch}")
    return result.metrics


def main(cfg: DictConfig) -> None:
    """Hydra task function."""
    tune(cfg)
