"""One training run: config in, fitted checkpoint, test metrics and result.json out.

`train.py` runs it once, `cv.py` once per fold, `backtest.py` once per forecast origin and `tune.py`
once per trial; it knows nothing of them.
"""

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig

from dltemplate.build import (
    build_datamodule,
    build_module,
    build_trainer,
    claim_output_dir,
    resolve_checkpoint,
)
from dltemplate.callbacks.interrupt import RunInterrupted, SaveOnInterrupt, stop_on_signals
from dltemplate.callbacks.summary import RunSummary
from dltemplate.errors import ConfigError
from dltemplate.loggers import metric_names
from dltemplate.rundir import release_resumed, write_result
from dltemplate.settings import check_settings
from dltemplate.tuner import run_tuner

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a training run leaves behind."""

    metrics: dict[str, float]
    best_checkpoint: str | None
    output_dir: str
    trainer: Trainer = field(repr=False)
    data_seconds: float = 0.0  # reading, decoding, tokenising or loading the cache
    datamodule: LightningDataModule | None = field(default=None, repr=False)
    module: LightningModule | None = field(default=None, repr=False)
    tuned: dict[str, float] = field(default_factory=dict)  # what a tuner preset chose (tuner=lr_find, ...)


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Fit the task described by `cfg`, test its best checkpoint on the test split, record the result.

    With `train=false`, test `cfg.ckpt_path` itself (its weights, not fresh ones). The record
    (result.json) goes to the run's directory; a SIGTERM or SIGINT stops the run at once, saves
    `last.ckpt` when it was training and records `interrupted` (`callbacks/interrupt.py`); a
    failure is recorded only in a directory this call claimed, never in one it was refused or in
    the run a failed resume tried to continue.
    `callbacks` join those the config lists (a search's pruning).
    """
    check_settings(cfg)
    if cfg.get("seed") is not None:
        seed_everything(cfg.seed, workers=True)
    own_dir = cfg.paths.output_dir
    resume_step = resolve_checkpoint(cfg)  # reads and checks the checkpoint before anything is written
    threads = check_threads(cfg.get("threads"))
    try:
        claimed = claim_output_dir(cfg, own_dir)
        try:
            with cpu_threads(threads), stop_on_signals():
                result = _fit_and_test(cfg, resume_step, callbacks)
        except RunInterrupted as stop:  # SIGTERM or Ctrl+C: last.ckpt saved when it was training
            write_result(cfg.paths.output_dir, "interrupted", {}, str(stop), last_checkpoint=stop.checkpoint)
            raise
        except Exception as error:
            if claimed:  # a failed resume leaves the record of the run it continued as it was
                write_result(own_dir, "failed", {}, f"{type(error).__name__}: {error}")
            raise
    finally:
        release_resumed()
    extra = {"tuned": result.tuned} if result.tuned else {}
    write_result(result.output_dir, "ok", result.metrics, best_checkpoint=result.best_checkpoint, **extra)
    return result


def check_threads(threads: int | None) -> int | None:
    """The `threads` setting, checked before anything is written."""
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(
            f"threads must be null (torch's default) or a positive number of CPU threads such as 1, got {threads!r}"
        )
    return threads


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op CPU threads (None: as set), then restore the count.

    Small nets on a CPU gain nothing from several threads per op and lose much when the cores are
    busy: a 32-unit GRU step on 64 windows of 8 steps took 2.3 ms in one thread and 450 ms in two on a
    loaded 2-core machine (each op waits for a thread that is not scheduled), so the series tasks set 1. Threaded
    trials (tune.py with n_jobs > 1) share the process's count: give them all the same `threads`.
    """
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit_and_test(cfg: DictConfig, resume_step: int | None, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Build data, module and trainer; fit (unless `train=false`); test the best (or given) checkpoint."""
    started = time.perf_counter()
    datamodule = build_datamodule(cfg)
    data_seconds = time.perf_counter() - started
    log.info("data ready in %.1f s", data_seconds)
    module = build_module(cfg, datamodule)
    trainer = build_trainer(cfg, resume_step, [*callbacks, SaveOnInterrupt(Path(cfg.paths.output_dir) / "checkpoints")])
    precision = cfg.get("matmul_precision") or "highest"
    if precision not in ("highest", "high", "medium"):
        raise ConfigError(f"matmul_precision={precision!r}: choose highest, high (TF32) or medium (bf16)")
    if trainer.strategy.root_device.type == "cuda":  # TF32 for float32 matmuls (convolutions use it already)
        torch.set_float32_matmul_precision(precision)

    fitting = cfg.get("train", True)
    tuned = run_tuner(cfg, trainer, module, datamodule) if fitting and cfg.get("ckpt_path") is None else {}
    if fitting:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in metric_names(trainer.callback_metrics).items()}

    best = _best_checkpoint(trainer) if fitting else cfg.get("ckpt_path")
    if cfg.get("test", True):
        if best is None:
            log.warning("no best checkpoint was saved (fast_dev_run?): testing the last weights")
        metrics.update(trainer.test(module, datamodule=datamodule, ckpt_path=best)[0])

    if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_score is not None:
        metrics[f"{trainer.checkpoint_callback.monitor}_best"] = float(trainer.checkpoint_callback.best_model_score)
    for callback in trainer.callbacks:
        if isinstance(callback, RunSummary):  # val/*_best of the tested epoch; HPARAMS; flush loggers
            metrics.update(callback.finish(trainer, metrics))
    return RunResult(metrics, best, str(cfg.paths.output_dir), trainer, data_seconds, datamodule, module, tuned)


def _best_checkpoint(trainer: Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return callback.best_model_path
    return None
