"""Time series from a CSV: sliding windows, chronological splits, transforms fitted on training steps."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

from dltemplate.data.csv_files import read_csv
from dltemplate.data.download import ensure_file
from dltemplate.data.table_encoder import to_numeric
from dltemplate.data.tensors import TensorDataModule
from dltemplate.errors import ConfigError, DataError, MissingColumnError


class SeriesDataModule(TensorDataModule):
    """Forecast the next `horizon` steps of one or more series from the previous `window` steps.

    The modelled series is the CSV's value columns, differenced if `difference` (cumulative counts →
    daily increments). The net sees it log1p-transformed if `transform="log1p"` (counts spanning
    orders of magnitude), divided by each column's standard deviation over the training steps.
    Scaling does not centre: zero stays zero, so growth-rate nets and non-negative floors keep their
    meaning. Metrics and forecasts are reported on the modelled series' own units.

    A sample's targets are steps t .. t+horizon-1 and its inputs the `window` steps before t. The
    last `test_steps` steps are the test targets, the `val_steps` before them the validation
    targets, and training samples only have targets before those: no target crosses a boundary.
    Inputs may reach back across one, as they would in use.

    Args:
        file: CSV file of the series, one row per time step.
        date_column: Column of dates (checked for order, duplicates and gaps); None for none.
        value_columns: Columns to model; None means every column but the date.
        sep: Column separator; None detects it (the COVID file is tab-separated).
        difference: Model step-to-step differences instead of levels.
        transform: None, or "log1p" to model log(1 + value) of a non-negative series.
        missing: "error": stop at missing values or dates; "interpolate": fill them linearly.
        sort_dates: Sort rows by date; otherwise unsorted dates are an error.
        frequency: Spacing of the dates (a pandas offset such as "D"); None infers the most common.
        window: Input steps per sample.
        horizon: Steps predicted per sample.
        val_steps: Validation target steps, just before the test steps.
        test_steps: Test target steps at the end of the series.
        season: Period for the seasonal-naive baseline (7 for daily data); None for none.
        cutoff: Steps left off the end of the series before anything else (a backtest's earlier
            forecast origins): nothing after them is read into any split or statistic.
        download: Public source of a missing file: {url:, md5:}.
        batch_size, num_workers: see `TensorDataModule`.
    """

    def __init__(
        self,
        file: str,
        date_column: str | None = None,
        value_columns: Sequence[str] | None = None,
        sep: str | None = None,
        difference: bool = False,
        transform: Literal["log1p"] | None = None,
        missing: Literal["error", "interpolate"] = "error",
        sort_dates: bool = False,
        frequency: str | None = None,
        window: int = 8,
        horizon: int = 1,
        val_steps: int = 7,
        test_steps: int = 7,
        season: int | None = 7,
        cutoff: int = 0,
        download: dict[str, str] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed=0)
        if transform not in (None, "log1p"):
            raise ConfigError(f"data.transform must be null or 'log1p', got {transform!r}")
        if missing not in ("error", "interpolate"):
            raise ConfigError(f"data.missing must be 'error' or 'interpolate', got {missing!r}")
        if cutoff < 0:
            raise ConfigError(f"data.cutoff must be 0 or more steps, got {cutoff}")
        if min(val_steps, test_steps) < horizon:
            raise ConfigError(
                f"data.val_steps ({val_steps}) and test_steps ({test_steps}) must be at least horizon ({horizon})"
            )
        self.save_hyperparameters(logger=False)
        self.scale: list[float] | None = None
        self.naive_scale: list[float] | None = None
        self.levels: pd.DataFrame | None = None  # the series as read, before differencing
        self.series: pd.DataFrame | None = None  # the modelled series, unscaled
        self.columns: list[str] | None = None  # the modelled columns, in the net's order; in checkpoints

    def fetch_data(self) -> None:
        spec = self.hparams.download or {}
        ensure_file(self.hparams.file, spec.get("url"), spec.get("md5"), "a CSV file, one row per time step")

    # ---- reading ---------------------------------------------------------------------------------

    def read(self, source: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Read and check a series; return (levels as read, modelled series), both unscaled.

        Columns are picked by name: once fitted, the modelled ones in the order the net knows them,
        whatever their order in `source`; other columns are ignored.
        """
        hp = self.hparams
        name = "the given DataFrame" if isinstance(source, pd.DataFrame) else str(source)
        frame = source.copy() if isinstance(source, pd.DataFrame) else read_csv(source, sep=hp.sep)
        if hp.date_column is not None:
            frame = self._index_by_date(frame, name)
        columns = self.columns or (list(hp.value_columns) if hp.value_columns else list(frame.columns))
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            fix = "the model was trained on them, so it needs them" if self.columns else "fix data.value_columns"
            raise MissingColumnError(f"{name} lacks the value column(s) {absent}; it has {list(frame.columns)}: {fix}")
        hint = "or leave the column out of data.value_columns"
        levels = pd.DataFrame({c: to_numeric(frame[c], name, hint) for c in columns}, index=frame.index)
        if levels.isna().any().any():
            if hp.missing == "error":
                column = levels.columns[levels.isna().any()][0]
                raise DataError(
                    f"{name} has missing values (first in column {column!r} at {levels[column].isna().idxmax()}); "
                    "fill them, or set data.missing=interpolate"
                )
            levels = levels.interpolate(limit_direction="both")
        series = levels.diff().iloc[1:] if hp.difference else levels
        if hp.transform == "log1p" and (series < 0).any().any():
            column = series.columns[(series < 0).any()][0]
            raise DataError(
                f"transform=log1p needs non-negative values, but {column!r} of {name} goes to "
                f"{series[column].min()} at {series[column].idxmin()}; use transform=null"
            )
        return levels, series

    def _index_by_date(self, frame: pd.DataFrame, name: str) -> pd.DataFrame:
        hp = self.hparams
        if hp.date_column not in frame.columns:
            raise MissingColumnError(
                f"date column {hp.date_column!r} is not in {name}; it has {list(frame.columns)}: fix data.date_column"
            )
        dates = pd.to_datetime(frame[hp.date_column], errors="coerce")
        if dates.isna().any():
            row = dates.isna().idxmax()
            raise DataError(
                f"date column {hp.date_column!r} of {name}: row {row} holds {frame[hp.date_column][row]!r}, "
                "which is not a date; fix it"
            )
        if dates.duplicated().any():
            raise DataError(
                f"{name} has duplicated dates, first {dates[dates.duplicated()].iloc[0].date()}: keep one row per date"
            )
        if not dates.is_monotonic_increasing and not hp.sort_dates:
            raise DataError(f"dates in {name} are not in order; sort the file or set data.sort_dates=true")
        frame = frame.drop(columns=hp.date_column).set_index(pd.DatetimeIndex(dates, name=hp.date_column)).sort_index()
        if hp.frequency:
            try:
                step = pd.tseries.frequencies.to_offset(hp.frequency)
            except ValueError:
                raise ConfigError(
                    f"data.frequency={hp.frequency!r} is not a pandas offset such as D, W or MS"
                ) from None
        elif len(frame) < 2:
            raise DataError(f"{name} has {len(frame)} row(s): a series needs many more")
        else:
            step = frame.index.to_series().diff().mode()[0]
        full = pd.date_range(frame.index[0], frame.index[-1], freq=step)
        gaps = full.difference(frame.index)
        if len(gaps):
            if hp.missing == "error":
                raise DataError(
                    f"{name} has {len(gaps)} missing date(s), first {gaps[0].date()}; "
                    "add the rows, or set data.missing=interpolate"
                )
            frame = frame.reindex(full)
            frame.index.name = hp.date_column
        return frame

    # ---- windows and splits --------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.train_set is not None or stage == "predict":
            return
        hp = self.hparams
        self.levels, self.series = self.read(hp.file)
        if hp.cutoff:  # an earlier forecast origin: the steps after it do not exist for this run
            self.levels, self.series = self.levels.iloc[: len(self.levels) - hp.cutoff], self.series.iloc[: -hp.cutoff]
        self.columns = list(self.series.columns)
        n, needed = len(self.series), hp.window + hp.horizon + hp.val_steps + hp.test_steps
        if n < needed:
            raise DataError(
                f"{hp.file} gives {n} modelled steps{' after differencing' if hp.difference else ''}, fewer than "
                f"window + horizon + val_steps + test_steps = {needed}, so a split would be empty; "
                "add steps, or lower data.window, data.val_steps or data.test_steps"
            )
        train_end = n - hp.val_steps - hp.test_steps  # first step that is not a training target
        if self.scale is None:  # restored from a checkpoint otherwise
            train_part = self.series.iloc[:train_end]
            self.scale = [float(s) or 1.0 for s in self.transformed(train_part).std(ddof=0)]
            naive_errors = train_part.diff().abs().mean()  # in own units, for MASE
            self.naive_scale = [float(s) if s > 0 else 1.0 for s in naive_errors]
        x, y = self.windows(self.scaled(self.series))
        starts = torch.arange(hp.window, n - hp.horizon + 1)  # first target step of each sample
        last = starts + hp.horizon - 1

        def part(mask: torch.Tensor) -> TensorDataset:
            return TensorDataset(x[mask], y[mask])

        self.train_set = part(last < train_end)
        self.val_set = part((starts >= train_end) & (last < n - hp.test_steps))
        self.test_set = part(starts >= n - hp.test_steps)

    def transformed(self, series: pd.DataFrame) -> pd.DataFrame:
        return np.log1p(series) if self.hparams.transform == "log1p" else series

    def scaled(self, series: pd.DataFrame) -> torch.Tensor:
        """(steps, columns) tensor of `series`, transformed and divided by the training scale."""
        return torch.tensor(self.transformed(series).to_numpy() / self.scale, dtype=torch.float32)

    def windows(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All (inputs, targets) pairs: (N, window, C) and (N, horizon, C)."""
        w, h = self.hparams.window, self.hparams.horizon
        frames = values.unfold(0, w + h, 1).permute(0, 2, 1)  # (N, w + h, C)
        return frames[:, :w], frames[:, w:]

    def step_index(self, stage: str) -> pd.Index:
        """Time index of the first target step of each sample of a split."""
        hp, n = self.hparams, len(self.series)
        first = {"val": n - hp.val_steps - hp.test_steps, "test": n - hp.test_steps}[stage]
        return self.series.index[first : first + len(self.val_set if stage == "val" else self.test_set)]

    @property
    def example_input_array(self) -> torch.Tensor:
        return self.train_set.tensors[0][:2]

    @property
    def class_names(self) -> None:
        return None

    @property
    def dims(self) -> dict[str, Any]:
        hp = self.hparams
        season = hp.season if hp.season is not None and hp.season <= hp.window else None
        return {
            "num_series": len(self.scale),
            "window": hp.window,
            "horizon": hp.horizon,
            "scale": self.scale,
            "naive_scale": self.naive_scale,
            "season": season,
            "transform": hp.transform,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "naive_scale": self.naive_scale, "columns": self.columns} if self.scale else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scale, self.naive_scale = state["scale"], state["naive_scale"]
            self.columns = state.get("columns")  # None in checkpoints from before columns were stored
