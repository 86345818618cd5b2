"""Time series from a CSV: sliding windows, chronological splits, transforms fitted on training steps."""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

from dltemplate.data.csv_files import read_csv
from dltemplate.data.dates import (
    SEASONS,
    YEARS,
    best_format,
    find_date_column,
    format_dates,
    frequency_name,
    infer_frequency,
    parse_dates,
    year_column,
)
from dltemplate.data.download import ensure_file
from dltemplate.data.protocols import Forecasts
from dltemplate.data.table_encoder import to_numeric
from dltemplate.data.tensors import TensorDataModule
from dltemplate.errors import ConfigError, DataError, MissingColumnError

DEFAULT_WINDOW = 8  # input steps when no season asks for more
EVAL_SHARE = 0.1  # validation and test each cover this share of the steps (at least a season where it fits)


def cycle(series: pd.DataFrame, threshold: float = 0.3) -> tuple[int | None, float]:
    """The period of a cycle in `series` (the training steps), or None: the lag, between 2 and a third of
    the steps, at which the step-to-step changes correlate most with themselves (averaged over the
    columns), if that correlation reaches `threshold` (and 3 / sqrt(steps), above chance) after having
    turned negative at a shorter lag, as a cycle does (11 years for sunspots); and that correlation."""
    changes = series.diff().iloc[1:].to_numpy()
    changes = changes - changes.mean(axis=0)
    spread = (changes**2).sum(axis=0)
    longest = len(changes) // 3
    if longest < 2 or not (spread > 0).all():
        return None, 0.0
    acf = np.array([((changes[:-k] * changes[k:]).sum(axis=0) / spread).mean() for k in range(1, longest + 1)])
    lag = int(np.argmax(acf[1:])) + 2
    strength = float(acf[lag - 1])
    if strength >= max(threshold, 3 / math.sqrt(len(changes))) and (acf[: lag - 1] < 0).any():
        return lag, strength
    return None, strength


class SeriesDataModule(TensorDataModule, Forecasts):
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

    Settings left null are inferred from the file (`infer`, shown as a table): the date column and
    its format (rules in `dltemplate.data.dates`), the frequency, the value columns (every mostly
    numeric column but the date), the season (7 daily, 5 business daily, 24 hourly, 52 weekly, 12
    monthly, 4 quarterly; for yearly data or numbered steps a cycle the training steps show (`cycle`), else
    none; none for a series under 3 seasons long or a season longer than the window), the
    validation and test spans (each a tenth of the steps, at least `horizon`, and at least a season
    when the series holds 5 seasons), and the window (the season, at least 8, at most half of the
    training steps).

    Args:
        file: CSV file of the series, one row per time step.
        date_column: Column of dates (checked for order, duplicates and gaps); None: found by content.
        date_format: strftime format of the dates ("%Y" for years, numeric or not); None: inferred.
        value_columns: Columns to model; None means every mostly numeric column but the date.
        sep: Column separator; None detects it (the COVID file is tab-separated).
        header: Whether the file's first row names the columns; None detects it
            (`csv_files.detect_header`): without one, columns are named by position, "0", "1", ...
        difference: Model step-to-step differences instead of levels.
        transform: None, or "log1p" to model log(1 + value) of a non-negative series.
        missing: "error": stop at missing values or dates; "interpolate": fill them linearly.
        sort_dates: Sort rows by date; otherwise unsorted dates are an error.
        frequency: Spacing of the dates (a pandas offset such as "D", "W-SUN", "MS", "YS"); None infers it.
        window: Input steps per sample; None infers it.
        horizon: Steps predicted per sample, the forecast a model makes without feeding its own
            forecasts back; None: one season ahead when the series has a season and holds 5 of them
            (12 for monthly data), else 1.
        val_steps: Validation target steps, just before the test steps; None infers them.
        test_steps: Test target steps at the end of the series; None infers them.
        season: Period for the seasonal-naive baseline (7 for daily data); 0 for none; None infers it.
        cutoff: Steps left off the end of the series before anything else (a backtest's earlier
            forecast origins): nothing after them is read into any split or statistic.
        download: Public source of a missing file: {url:, md5:}.
        batch_size, num_workers, on_device: see `TensorDataModule`.
    """

    # each modelled series' training scale (`dltemplate.data.protocols.Forecasts`): set by setup or a checkpoint
    scale: list[float] | None

    def __init__(
        self,
        file: str,
        date_column: str | None = None,
        date_format: str | None = None,
        value_columns: Sequence[str] | None = None,
        sep: str | None = None,
        header: bool | None = None,
        difference: bool = False,
        transform: Literal["log1p"] | None = None,
        missing: Literal["error", "interpolate"] = "error",
        sort_dates: bool = False,
        frequency: str | None = None,
        window: int | None = None,
        horizon: int | None = None,
        val_steps: int | None = None,
        test_steps: int | None = None,
        season: int | None = None,
        cutoff: int = 0,
        download: dict[str, str] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        on_device: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed=0, on_device=on_device)
        if transform not in (None, "log1p"):
            raise ConfigError(f"data.transform must be null or 'log1p', got {transform!r}")
        if missing not in ("error", "interpolate"):
            raise ConfigError(f"data.missing must be 'error' or 'interpolate', got {missing!r}")
        if cutoff < 0:
            raise ConfigError(f"data.cutoff must be 0 or more steps, got {cutoff}")
        if frequency:
            try:
                pd.tseries.frequencies.to_offset(frequency)
            except ValueError:
                raise ConfigError(
                    f"data.frequency={frequency!r} is not a pandas offset such as D, W-SUN, MS or YS"
                ) from None
        # column names as text: data.date_column=0 names the first column of a file without a header row
        date_column = None if date_column is None else str(date_column)
        value_columns = None if value_columns is None else [str(c) for c in value_columns]
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
        if isinstance(source, pd.DataFrame):
            frame = source.copy()
        else:
            frame = read_csv(source, sep=hp.sep, header=hp.header)
            if hp.header is None:
                self.infer("header", *frame.attrs["header"])
        date_column = self._date_column(frame, name)
        if date_column is not None:
            frame = self._index_by_date(frame, name, date_column)
        elif hp.frequency:
            raise DataError(
                f"data.frequency={hp.frequency!r} needs dates, but no column of {name} reads as dates "
                f"(columns: {list(frame.columns)}); set data.date_column, or data.frequency=null"
            )
        columns = self.columns or self._value_columns(frame, name)
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            fix = "the model was trained on them, so it needs them" if self.columns else "fix data.value_columns"
            raise MissingColumnError(f"{name} lacks the value column(s) {absent}; it has {list(frame.columns)}: {fix}")
        hint = "or leave the column out of data.value_columns"
        levels = pd.DataFrame({c: to_numeric(frame[c], name, hint) for c in columns}, index=frame.index)
        if levels.isna().any().any():
            if hp.missing == "error":
                column = levels.columns[levels.isna().any()][0]
                where = self._where(levels[column].isna().idxmax())
                count = int(levels.isna().any(axis=1).sum())
                raise DataError(
                    f"{name} has missing values (first in column {column!r} at {where}; {count} step(s) in all); "
                    "fill them, or set data.missing=interpolate"
                )
            levels = levels.interpolate(limit_direction="both")
        series = levels.diff().iloc[1:] if hp.difference else levels
        if hp.transform == "log1p" and (series < 0).any().any():
            column = series.columns[(series < 0).any()][0]
            raise DataError(
                f"transform=log1p needs non-negative values, but {column!r} of {name} goes to "
                f"{series[column].min()} at {self._where(series[column].idxmin())}; use transform=null"
            )
        return levels, series

    def _where(self, step: Any) -> str:
        """A step's date as the dates are written (2009 for years), or its row number."""
        if isinstance(step, pd.Timestamp):
            return str(format_dates(pd.DatetimeIndex([step]), self.hparams.frequency, self.hparams.date_format)[0])
        return f"row {step}"

    def _date_column(self, frame: pd.DataFrame, name: str) -> str | None:
        """The configured date column, or the one found by content (None when no column reads as dates)."""
        hp = self.hparams
        if hp.date_column is not None:
            if hp.date_column not in frame.columns:
                raise MissingColumnError(
                    f"date column {hp.date_column!r} is not in {name}; it has {list(frame.columns)}: "
                    "fix data.date_column, or set it to null to find the dates by content"
                )
            return hp.date_column
        found = find_date_column(frame.drop(columns=list(self.columns or hp.value_columns or []), errors="ignore"))
        if found is None:
            return self.infer("date_column", None, "no column reads as dates: the steps are numbered")
        column, fmt, why = found
        if hp.date_format is None:
            self.infer("date_format", fmt, why)
        return self.infer("date_column", column, why)

    def _date_format(self, values: pd.Series, name: str) -> str:
        """The configured date format, or the one that reads the date column's values (years included)."""
        hp = self.hparams
        if hp.date_format is not None:
            return hp.date_format
        if year_column(values, named=True):
            return self.infer("date_format", YEARS, f"column {values.name!r}: whole numbers, read as years")
        best = best_format(values, min_share=0.5)
        if best is None:
            sample = values.dropna().head(3).tolist()
            raise DataError(
                f"date column {values.name!r} of {name} holds no dates in a format that can be recognised "
                f"(first values {sample}); fix data.date_column, or set data.date_format (e.g. '%d.%m.%Y')"
            )
        return self.infer("date_format", best[0], f"column {values.name!r}: its values read in this format")

    def _index_by_date(self, frame: pd.DataFrame, name: str, date_column: str) -> pd.DataFrame:
        hp = self.hparams
        raw = frame[date_column]
        fmt = self._date_format(raw, name)
        dates = parse_dates(raw, fmt)
        if dates.isna().any():
            bad = dates.index[dates.isna()]
            shown = ", ".join(f"{row} ({raw[row]!r})" for row in bad[:5])
            raise DataError(
                f"date column {date_column!r} of {name}: {len(bad)} value(s) are not dates in the format {fmt}, "
                f"in row(s) {shown}{' ...' if len(bad) > 5 else ''} (rows numbered from 0 after the header); "
                "fix them, or set data.date_format"
            )
        duplicated = dates.duplicated(keep=False)
        if duplicated.any():
            first = dates[duplicated].iloc[0]
            rows = list(dates.index[dates == first])
            raise DataError(
                f"{name} has duplicated dates ({int(dates.duplicated().sum())} in all), first "
                f"{raw[rows[0]]} in rows {rows}: keep one row per date"
            )
        if not dates.is_monotonic_increasing and not hp.sort_dates:
            raise DataError(f"dates in {name} are not in order; sort the file or set data.sort_dates=true")
        frame = frame.drop(columns=date_column).set_index(pd.DatetimeIndex(dates, name=date_column)).sort_index()
        if hp.frequency:
            step = hp.frequency
        else:
            step = infer_frequency(frame.index, name)
            spacing = pd.Series(frame.index[1:] - frame.index[:-1]).mode()[0]
            whole_days = spacing == pd.Timedelta(days=spacing.days)
            apart = (f"{spacing.days} day" + "s" * (spacing.days != 1)) if whole_days else str(spacing)
            self.infer("frequency", step, f"{frequency_name(step) or step}: dates mostly {apart} apart")
        full = pd.date_range(frame.index[0], frame.index[-1], freq=step)
        off = frame.index.difference(full)
        if len(off):
            raise DataError(
                f"{len(off)} date(s) of {name} are not on the calendar of data.frequency={step!r}, first "
                f"{off[0]}; fix the dates, or set data.frequency to their spacing"
            )
        gaps = full.difference(frame.index)
        if len(gaps):
            if hp.missing == "error":
                raise DataError(
                    f"{name} has {len(gaps)} missing date(s) at its {frequency_name(step) or step} frequency, "
                    f"first {self._where(gaps[0])}; add the rows, or set data.missing=interpolate"
                )
            frame = frame.reindex(full)
            frame.index.name = date_column
        return frame

    def _value_columns(self, frame: pd.DataFrame, name: str) -> list[str]:
        """The configured value columns, or every column whose values are mostly numbers."""
        hp = self.hparams
        if hp.value_columns:
            return list(hp.value_columns)
        numbers = {c: pd.to_numeric(frame[c], errors="coerce").notna().sum() for c in frame}
        numeric = {c: numbers[c] > frame[c].notna().sum() / 2 for c in frame}
        columns = [c for c, is_numeric in numeric.items() if is_numeric]
        left_out = [c for c, is_numeric in numeric.items() if not is_numeric]
        if not columns:
            raise DataError(
                f"{name} has no numeric column to forecast (columns: {list(frame.columns)}); set data.value_columns"
            )
        reason = "every numeric column but the date" + (f"; not numeric, left out: {left_out}" if left_out else "")
        return self.infer("value_columns", columns, reason)

    # ---- windows and splits --------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.train_set is not None or stage == "predict":
            return
        hp = self.hparams
        self.levels, self.series = self.read(hp.file)
        if hp.cutoff:  # an earlier forecast origin: the steps after it do not exist for this run
            self.levels, self.series = self.levels.iloc[: len(self.levels) - hp.cutoff], self.series.iloc[: -hp.cutoff]
        self.columns = list(self.series.columns)
        n = len(self.series)
        self._infer_spans(n)
        if min(hp.val_steps, hp.test_steps) < hp.horizon:
            raise ConfigError(
                f"data.val_steps ({hp.val_steps}) and test_steps ({hp.test_steps}) must be at least "
                f"horizon ({hp.horizon})"
            )
        needed = hp.window + hp.horizon + hp.val_steps + hp.test_steps
        if n < needed:
            raise DataError(
                f"{hp.file} gives {n} modelled steps{' after differencing' if hp.difference else ''}, fewer than "
                f"window + horizon + val_steps + test_steps = {hp.window} + {hp.horizon} + {hp.val_steps} + "
                f"{hp.test_steps} = {needed}, so a split would be empty; add steps, or lower data.window, "
                f"data.val_steps or data.test_steps (e.g. {self._fitting_settings(n)})"
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

    def _infer_spans(self, n: int) -> None:
        """Fill the null ones of season, val_steps, test_steps and window from the frequency and length `n`."""
        hp = self.hparams
        kind = frequency_name(hp.frequency) if isinstance(self.series.index, pd.DatetimeIndex) else None
        season, why = SEASONS.get(kind), f"{kind} data"
        if season is None:  # no calendar season: a cycle the data shows, if any
            why = f"{kind} data has no calendar season" if kind else "no dates"
            if hp.season is None:
                spans = (hp[k] if hp[k] is not None else math.ceil(EVAL_SHARE * n) for k in ("val_steps", "test_steps"))
                held = sum(spans)
                season, strength = cycle(self.series.iloc[: n - held])  # the training steps only
                if season is not None:
                    why += f"; its changes repeat every {season} steps (autocorrelation {strength:.2f})"
        elif n < 3 * season:
            season, why = None, f"{kind} data, but {n} steps are under 3 seasons of {SEASONS[kind]}"
        planned = hp.season if hp.season is not None else season
        self._infer_horizon(n, planned, kind)
        span = max(hp.horizon, math.ceil(EVAL_SHARE * n))
        span_why = f"a tenth of {n} steps"
        if planned and span < planned and n >= 5 * planned:
            span, span_why = planned, f"one season of {planned} steps (a tenth of {n} is less)"
        val = self.infer("val_steps", span, span_why)
        test = self.infer("test_steps", span, span_why)
        room = max(2, (n - val - test - hp.horizon + 1) // 2)  # half the training steps stay targets
        window = max(DEFAULT_WINDOW, planned or 0)
        window_why = f"one season of {planned} steps" if planned and planned > DEFAULT_WINDOW else "the default 8"
        if window > room:
            window, window_why = room, f"{window_why}, cut to half of the {2 * room} training steps"
        window = self.infer("window", window, window_why)
        if season is not None and season > window:
            season, why = None, f"{why}, but a season of {season} is longer than the window of {window}"
        self.infer("season", season or 0, why)  # 0: none (null would mean "infer it again" on restore)

    def _infer_horizon(self, n: int, season: int | None, kind: str | None) -> None:
        """The steps forecast at once: one season ahead (what a seasonal forecast is asked for) when the
        series holds 5 seasons, else 1; the seasonal-naive baseline is then scored at that horizon."""
        if season and n >= 5 * season:
            what = f"{kind} data" if kind else "the series' cycle"
            why = f"one season ahead ({what}: {season} steps); forecast.py steps={season} feeds back no forecast"
            self.infer("horizon", season, why)
        elif season:
            self.infer("horizon", 1, f"one step: {n} steps are under 5 seasons of {season}")
        else:
            self.infer("horizon", 1, "one step: the series has no season to forecast ahead")

    def _fitting_settings(self, n: int) -> str:
        """Settings that would fit `n` steps: spans of a tenth, a window of a third of the rest."""
        hp = self.hparams
        span = max(hp.horizon, n // 10)
        window = max(1, (n - 2 * span - hp.horizon) // 3)
        return f"data.window={window} data.val_steps={span} data.test_steps={span}"

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

    target_kind = "forecasting"  # what its targets ask of a module (checked when the run is built)

    @property
    def dims(self) -> dict[str, Any]:
        hp = self.hparams
        season = hp.season if hp.season and hp.season <= hp.window else None  # 0: none
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
