"""k-fold cross-validation: one training run per fold, a summary of their metrics, out-of-fold predictions.

`python train.py task=titanic cv.folds=5` deals the training rows into 5 stratified folds
(`dltemplate.selection.stratified_folds`); fold k validates run k, which trains on the other folds,
fits its preprocessing on them only, and tests on the untouched test split. Run k's config says so
with `cv.fold=k` (and the deal's seed, `cv.seed`): `build.build_datamodule` gives its data module
that `Split` (`use_split`), so the data module needs no setting of its own for it. Each fold is an
ordinary run in `<run>/fold_<k>/` (its own checkpoints, TensorBoard run and result.json); the parent
directory gets `cv_summary.csv` (one row per fold, then the mean and sd of every metric),
`oof_predictions.csv` (every training row predicted once, by the model that did not train on it)
and a result.json of the means, which is what sweeps and Optuna read.
"""

import copy
import inspect
import logging
import math
from pathlib import Path

import pandas as pd
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, open_dict

from dltemplate.checkpoint import load_checkpoint
from dltemplate.data.predictions import class_table
from dltemplate.data.protocols import HasClasses
from dltemplate.errors import ConfigError
from dltemplate.files import write_text_atomically
from dltemplate.run import RunResult, train
from dltemplate.rundir import claim, write_result
from dltemplate.selection import TakesSplit

log = logging.getLogger(__name__)

SUMMARY_FILE = "cv_summary.csv"
OOF_FILE = "oof_predictions.csv"


def fold_config(cfg: DictConfig, fold: int, repeat: int = 0) -> DictConfig:
    """The config of one fold's run: `cfg` with fold `fold` of repeat `repeat` validating, in its own directory.

    `cv.fold` makes it one run (`selection.run_split`); repeat r deals its folds with seed `cv.seed + r`.
    """
    settings = cfg.cv
    fold_cfg = copy.deepcopy(cfg)
    name = f"fold_{fold}" if settings.repeats == 1 else f"repeat_{repeat}_fold_{fold}"
    with open_dict(fold_cfg):
        fold_cfg.cv.fold = fold
        fold_cfg.cv.seed = settings.seed + repeat
        fold_cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / name)
    return fold_cfg


def cross_validate(cfg: DictConfig) -> dict[str, float]:
    """Train one model per fold (and repeat), write the summary and out-of-fold predictions; return the means."""
    settings = cfg.cv
    if settings.folds < 2 or settings.repeats < 1:
        raise ConfigError(
            f"cv.folds must be at least 2 and cv.repeats at least 1, got {settings.folds}, {settings.repeats}"
        )
    if not issubclass(get_class(cfg.data._target_), TakesSplit):
        raise ConfigError(
            "cv.folds needs a data module that takes a validation split (tables, images and texts; for a series "
            f"use backtest.origins); {cfg.data._target_} takes none"
        )
    refuse_resume(cfg, "cv.folds")
    parent = Path(cfg.paths.output_dir)
    claim(parent)
    rows, predictions = [], []
    try:
        for repeat in range(settings.repeats):
            for fold in range(settings.folds):
                log.info("cross-validation: repeat %d, fold %d of %d", repeat, fold, settings.folds)
                result = train(fold_config(cfg, fold, repeat))
                rows.append(
                    {"repeat": repeat, "fold": fold, **fold_metrics(result.metrics), "run_dir": result.output_dir}
                )
                predictions.append(out_of_fold(result).assign(repeat=repeat, fold=fold))
    except Exception as error:
        write_result(parent, "failed", {}, f"{type(error).__name__}: {error}")
        raise
    table = summarise(rows)
    write_text_atomically(parent / SUMMARY_FILE, table.to_csv(index=False))
    oof = pd.concat(predictions, ignore_index=True)
    first = ["repeat", "fold", "row"]
    write_text_atomically(
        parent / OOF_FILE, oof[first + [c for c in oof.columns if c not in first]].to_csv(index=False)
    )
    means = {k: float(v) for k, v in table.iloc[-2].items() if k not in ("repeat", "fold", "run_dir")}
    write_result(parent, "ok", means, folds=settings.folds, repeats=settings.repeats)
    shown = [c for c in table.columns if c != "run_dir"]
    log.info("cross-validation summary (%s):\n%s", parent / SUMMARY_FILE, table[shown].to_string(index=False))
    return means


def require_setting(cfg: DictConfig, name: str, option: str, families: str) -> None:
    """Refuse `option` for a data module that has no `name` setting, and a resumed run (`ckpt_path`)."""
    if name not in inspect.signature(get_class(cfg.data._target_)).parameters:
        raise ConfigError(f"{option} needs a data module with data.{name} ({families}); {cfg.data._target_} has none")
    refuse_resume(cfg, option)


def refuse_resume(cfg: DictConfig, option: str) -> None:
    """Refuse `option` (several new runs) for a run that resumes one (`ckpt_path`)."""
    if cfg.get("ckpt_path"):
        raise ConfigError(f"{option} trains new models: it cannot resume ckpt_path={cfg.ckpt_path}")


def fold_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The validation and test metrics of a fold (epoch values and best monitored values, no per-step ones)."""
    return {k: v for k, v in sorted(metrics.items()) if k.startswith(("val/", "test/")) and not k.endswith("_step")}


def summarise(rows: list[dict], key: str = "fold", labels: tuple[str, ...] = ("repeat", "run_dir")) -> pd.DataFrame:
    """One row per fold (`key`), then a `mean` and an `sd` row (sample standard deviation over the rows).

    Columns in `labels` (and `key`) describe a row; every other column is a metric.
    """
    table = pd.DataFrame(rows)
    metrics = [c for c in table.columns if c != key and c not in labels]
    sd = table[metrics].std(ddof=1) if len(table) > 1 else table[metrics].iloc[0] * math.nan
    extra = pd.DataFrame([{key: "mean", **table[metrics].mean()}, {key: "sd", **sd}])
    return pd.concat([table.astype({key: object}), extra], ignore_index=True)


def out_of_fold(result: RunResult) -> pd.DataFrame:
    """Predictions of a fold's best model for its validation rows: row (position among the training rows),
    true label and, for classifiers, the predicted class and one probability per class."""
    datamodule, module = result.datamodule, result.module
    if result.best_checkpoint:
        module.load_state_dict(load_checkpoint(result.best_checkpoint)["state_dict"])
    module.eval()
    outputs, targets = [], []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            batch = datamodule.on_after_batch_transfer(batch, 0)
            outputs.append(module.predict_step(batch, 0).cpu())
            targets.append(batch[1].cpu())
    output, target = torch.cat(outputs), torch.cat(targets)
    classes = datamodule.class_names if isinstance(datamodule, HasClasses) else None
    table = pd.DataFrame({"row": datamodule.val_positions.tolist()})
    if classes is None:
        table["target"] = target.reshape(len(target), -1)[:, 0].numpy()
        table["prediction"] = output.reshape(len(output), -1)[:, 0].numpy()
        return table
    table["target"] = [classes[i] for i in target.tolist()]
    return pd.concat([table, class_table(output, classes)], axis=1)
