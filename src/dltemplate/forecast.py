"""Forecast entry point: continue a series past its last step with a trained checkpoint."""

import logging

import pandas as pd
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from omegaconf import DictConfig

from dltemplate.checkpoint import restore
from dltemplate.data.dates import format_dates, next_dates
from dltemplate.data.protocols import Forecasts
from dltemplate.errors import ConfigError, DataError
from dltemplate.files import output_path
from dltemplate.settings import check_settings

log = logging.getLogger(__name__)


def check_forecast_settings(steps: object, floor: object = None) -> None:
    """Refuse `steps` that is not a whole number of at least 1, or a `floor` that is not a number."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(
            f"steps={steps!r} must be a whole number of at least 1 (the steps to forecast); e.g. steps=30"
        )
    if floor is not None and (not isinstance(floor, (int, float)) or isinstance(floor, bool) or floor != floor):
        raise ConfigError(f"floor={floor!r} must be a number (forecasts below it are raised to it) or null for none")


def check_forecasts(datamodule: LightningDataModule) -> Forecasts:
    """`datamodule`, refused with a one-line `ConfigError` when it continues no series (`Forecasts`): checked
    once, when a forecast run is built."""
    if isinstance(datamodule, Forecasts):
        return datamodule
    raise ConfigError(
        f"not a forecasting model ({type(datamodule).__name__}): give the checkpoint of a time-series task "
        "(task=series, task=covid), or use predict.py"
    )


def forecast_table(
    module: LightningModule,
    datamodule: Forecasts,
    source: str | pd.DataFrame | None = None,
    steps: int = 30,
    floor: float | None = 0.0,
) -> pd.DataFrame:
    """Forecast `steps` steps after the end of a series, feeding each forecast back as input.

    The model forecasts its trained horizon (`data.horizon`) at once; past it, its forecasts are fed
    back as inputs, which a one-line warning says.

    The series' columns are matched to the model's by name (extra columns are ignored).

    Returns one row per future step with the modelled series (e.g. daily increments) and, when the
    model was trained on differences, the levels rebuilt from the last observed level
    (`<column>_level`, e.g. cumulative counts). `source` defaults to the series trained on.
    The data module is one `check_forecasts` has accepted.
    """
    check_forecast_settings(steps, floor)
    if source is None and datamodule.hparams.file is None:  # withheld by `restore`: outside this run's paths
        raise ConfigError(
            "the checkpoint names its series file outside this run's paths.data_dir, so it is not read; "
            "give the series to continue (input=<file>, or 'series' rows in a request), or run with "
            "paths.data_dir=<the folder that holds it>"
        )
    levels, series = datamodule.read(datamodule.hparams.file if source is None else source)
    window, horizon = datamodule.hparams.window, datamodule.hparams.horizon
    if steps > horizon:
        log.warning(
            "steps=%d is past the %d step(s) the model was trained to forecast: later steps take its own forecasts "
            "as inputs and their errors compound; train with data.horizon=%d to forecast that far directly",
            steps,
            horizon,
            steps,
        )
    if len(series) < window:
        where = "the given series" if isinstance(source, pd.DataFrame) else source or datamodule.hparams.file
        raise DataError(f"{where} has {len(series)} steps; the model needs the last {window}: give a longer one")
    module.eval()
    history = series.copy()
    with torch.no_grad():
        while len(history) < len(series) + steps:
            x = datamodule.scaled(history.iloc[-window:])[None]  # (1, window, C)
            step = module.to_units(module(x))[0]  # (horizon, C), own units
            if not torch.isfinite(step).all():
                raise _overflow(len(history) - len(series) + 1, float(history.iloc[-window:].abs().max().max()))
            if floor is not None:
                step = step.clamp(min=floor)
            index = _next_index(history.index, horizon, datamodule.hparams.get("frequency"))
            future = pd.DataFrame(step.numpy(), columns=series.columns, index=index)
            history = pd.concat([history, future])
    table = history.iloc[len(series) : len(series) + steps].copy()
    if datamodule.hparams.difference:
        for column in series.columns:
            table[f"{column}_level"] = levels[column].iloc[-1] + table[column].cumsum()
    return table.rename_axis(series.index.name or "step")


def _overflow(step: int, largest: float) -> DataError:
    """The error for a forecast that is not a number (NaN or infinity) from `step` on (counting from 1)."""
    if step == 1:  # the series itself
        return DataError(
            f"the forecast is not a number (NaN or infinity) from step 1: the series' last values (largest "
            f"{largest:.3g}) are far outside what the model was trained on, so its arithmetic overflows; check the "
            "series for values of the wrong scale or unit"
        )
    return DataError(
        f"the forecast is not a number (NaN or infinity) from step {step}: the model's own forecasts, fed back as "
        f"its inputs, grow without bound (largest {largest:.3g} by then); forecast at most steps={step - 1}, or "
        "train the model longer"
    )


def with_written_dates(table: pd.DataFrame, datamodule: LightningDataModule) -> pd.DataFrame:
    """`table` (from `forecast_table`) with its dates as text at the series' resolution: 2009 for years,
    2009-03 for months, 2009-03-14 for days (`dates.format_dates`); numbered steps stay numbers."""
    hp = datamodule.hparams
    table = table.copy()
    table.index = format_dates(table.index, hp.get("frequency"), hp.get("date_format"))
    return table


def first_below(table: pd.DataFrame, columns: list[str], threshold: float) -> dict[str, object]:
    """For each column, the index of the first forecast step below `threshold`, or None."""
    return {c: (table.index[table[c] < threshold][0] if (table[c] < threshold).any() else None) for c in columns}


def forecast(cfg: DictConfig) -> pd.DataFrame:
    """Forecast entry point: `cfg.steps` steps of the checkpoint's series (or `cfg.input`) to `cfg.output`."""
    check_forecast_settings(cfg.steps, cfg.floor)  # before the output's folder is made
    check_settings(cfg)
    output = output_path(cfg.output, cfg.get("overwrite", False))
    module, restored, _ = restore(cfg.ckpt_path, paths=cfg.paths)
    datamodule = check_forecasts(restored)
    table = with_written_dates(forecast_table(module, datamodule, cfg.input, cfg.steps, cfg.floor), datamodule)
    if cfg.get("report_zero", False):
        columns = [c for c in table.columns if not c.endswith("_level")]
        for column, when in first_below(table, columns, cfg.zero_below).items():
            where = (
                f"step {table.index.get_loc(when) + 1} ({when})"
                if when is not None
                else f"not within {cfg.steps} steps"
            )
            log.info("%s reaches zero at %s", column, where)
    table.to_csv(output)
    log.info("forecast:\n%s", table.head(10).to_string())
    return table


def _next_index(index: pd.Index, count: int, frequency: str | None) -> pd.Index:
    """The `count` time steps after the end of `index` (dates continue at `frequency`, else their spacing)."""
    if isinstance(index, pd.DatetimeIndex):
        return next_dates(index, count, frequency)
    return pd.RangeIndex(index[-1] + 1, index[-1] + 1 + count)


def main(cfg: DictConfig) -> None:
    """Hydra task function."""
    table = forecast(cfg)
    log.info("%d forecast steps written to %s", len(table), cfg.output)
