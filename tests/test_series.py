"""Time-series task: reading and checking series, leak-free windows, baselines, forecast, bad input."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dltemplate.config import compose_config
from dltemplate.data.dates import find_date_column, format_dates, parse_dates
from dltemplate.errors import ConfigError, DataError, MissingColumnError, UserError
from dltemplate.forecast import forecast, forecast_table
from dltemplate.modules.forecasting import ForecastingModule
from dltemplate.series.data.series import SeriesDataModule
from dltemplate.train import train
from tests.datasets import covid_like_frame, provide_task_data, seasonal_frame
from tests.helpers import CONFIG_DIR, tensorboard_tags


def write(frame: pd.DataFrame, path: Path, sep: str = ",") -> str:
    frame.to_csv(path, sep=sep, index=False)
    return str(path)


@pytest.mark.parametrize("sep", [",", "\t", ";", "|"])
def test_separator_is_detected_and_dates_index_the_series(tmp_path, sep):
    dm = SeriesDataModule(write(seasonal_frame(60), tmp_path / "s.csv", sep), date_column="date")
    dm.setup("fit")
    assert list(dm.series.columns) == ["sales", "visits"]
    assert isinstance(dm.series.index, pd.DatetimeIndex)


def test_a_series_without_dates_works_too(tmp_path):
    dm = SeriesDataModule(write(seasonal_frame(60).drop(columns="date"), tmp_path / "s.csv"))
    dm.setup("fit")
    assert dm.dims["num_series"] == 2 and dm.hparams.test_steps == 7  # a tenth of 60 steps is less than a season
    assert dm.hparams.horizon == 7 and len(dm.test_set) == 1  # one forecast of a season, 7 steps
    assert dm.hparams.date_column is None and dm.hparams.frequency is None
    assert dm.dims["season"] == 7 and "repeat every 7 steps" in dm.inferred["season"].reason  # seen in the data


def test_windows_never_leak_targets_across_split_boundaries(tmp_path):
    frame = seasonal_frame(80)
    dm = SeriesDataModule(
        write(frame, tmp_path / "s.csv"), date_column="date", window=10, horizon=3, val_steps=7, test_steps=7
    )
    dm.setup("fit")
    values = dm.scaled(dm.series)  # (80, 2)
    n, test_start, val_start = 80, 80 - 7, 80 - 14

    def target_steps(dataset) -> list[int]:
        """Locate every sample's targets in the series: the step of each first target."""
        steps = []
        for x, y in zip(*dataset.tensors, strict=True):
            starts = [
                t for t in range(10, n - 2) if torch.equal(values[t : t + 3], y) and torch.equal(values[t - 10 : t], x)
            ]
            assert len(starts) == 1
            steps.append(starts[0])
        return steps

    train_steps, val_steps, test_steps = (target_steps(s) for s in (dm.train_set, dm.val_set, dm.test_set))
    assert max(train_steps) + 3 <= val_start  # every training target precedes validation
    assert min(val_steps) >= val_start and max(val_steps) + 3 <= test_start
    assert min(test_steps) >= test_start and max(test_steps) + 3 <= n
    assert len(train_steps) == val_start - 3 - 10 + 1


def test_scaling_is_fitted_on_training_steps_and_inverted_exactly(tmp_path):
    frame = seasonal_frame(80)
    dm = SeriesDataModule(write(frame, tmp_path / "s.csv"), date_column="date", transform="log1p")
    dm.setup("fit")
    train_part = dm.series.iloc[: 80 - 2 * 8]  # inferred spans: a tenth of 80 each
    assert dm.scale[0] == pytest.approx(
        float(torch.log1p(torch.tensor(train_part["sales"].to_numpy())).std(correction=0)), rel=1e-5
    )

    module = ForecastingModule(torch.nn.Identity(), scale=dm.scale, naive_scale=dm.naive_scale, transform="log1p")
    restored = module.to_units(dm.scaled(dm.series))
    assert torch.allclose(restored, torch.tensor(dm.series.to_numpy(), dtype=torch.float32), rtol=1e-4)


def test_differencing_models_increments_of_cumulative_counts(tmp_path):
    frame = covid_like_frame()
    dm = SeriesDataModule(write(frame, tmp_path / "c.csv", "\t"), date_column="date", difference=True)
    dm.setup("fit")
    assert len(dm.series) == 46
    assert dm.series["confirmed_num"].iloc[0] == frame["confirmed_num"].iloc[1] - frame["confirmed_num"].iloc[0]


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
def test_model_beats_both_naive_baselines_on_trend_plus_season(make_cfg, tmp_path):
    overrides = provide_task_data("series", tmp_path / "data")
    result = train(make_cfg("task=series", "data.window=14", *overrides))
    metrics = result.metrics
    assert metrics["test/mae"] < metrics["test/naive_mae"] and metrics["test/rel_mae"] < 1
    assert metrics["test/mae"] < metrics["test/snaive_mae"]
    assert "val/forecast" in tensorboard_tags(Path(result.output_dir))["images"]


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_covid_task_trains_and_forecasts_until_zero(make_cfg, tmp_path):
    provide_task_data("covid", tmp_path / "data")
    result = train(make_cfg("task=covid", "trainer.max_epochs=5"))
    assert {"test/mase", "test/rel_mae", "test/naive_mae", "test/snaive_mae", "test/smape"} <= set(result.metrics)
    cfg = compose_config(
        CONFIG_DIR,
        [f"ckpt_path={result.best_checkpoint}", "steps=20", f"paths.data_dir={tmp_path / 'data'}", "report_zero=true"],
        output_dir=tmp_path / "forecast",
        config_name="forecast",
    )
    try:
        table = forecast(cfg)
    except DataError as error:  # 5 epochs: fed back, the forecasts may grow without bound; then it says so
        allowed = re.search(r"forecast at most steps=(\d+)", str(error))
        assert allowed and int(allowed.group(1)) >= 5, error
        cfg.steps = int(allowed.group(1))
        table = forecast(cfg)
    written = pd.read_csv(tmp_path / "forecast" / "forecast.csv")
    assert len(table) == len(written) == cfg.steps
    assert np.isfinite(table.select_dtypes("number").to_numpy()).all()
    assert written["date"].iloc[0] == "2020-03-11"  # the day after the last row (2020-03-10)
    assert (table["confirmed_num"] >= 0).all()  # floored at zero
    levels = covid_like_frame()["confirmed_num"].iloc[-1] + table["confirmed_num"].cumsum()
    assert table["confirmed_num_level"].tolist() == pytest.approx(levels.tolist())

    for steps in (0, -5, "abc", 2.5):
        cfg.steps, cfg.overwrite = steps, True
        with pytest.raises(ConfigError, match=f"steps={steps!r} must be a whole number of at least 1"):
            forecast(cfg)


class LastValue(torch.nn.Module):
    """Tomorrow is today: (B, window, C) → (B, horizon, C), the last value repeated."""

    def __init__(self, horizon: int = 1) -> None:
        super().__init__()
        self.horizon = horizon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:].expand(-1, self.horizon, -1)


def test_forecast_input_columns_are_matched_by_name_whatever_their_order(tmp_path):
    frame = seasonal_frame(60)
    dm = SeriesDataModule(write(frame, tmp_path / "s.csv"), date_column="date")
    dm.setup("fit")
    keys = ("date_format", "frequency", "window", "horizon", "val_steps", "test_steps")
    restored = SeriesDataModule(str(tmp_path / "s.csv"), date_column="date", **{k: dm.hparams[k] for k in keys})
    restored.load_state_dict(dm.state_dict())  # as a checkpoint does
    module = ForecastingModule(LastValue(dm.hparams.horizon), scale=dm.scale, naive_scale=dm.naive_scale)
    shuffled = frame[["visits", "date", "sales"]].assign(notes=1.0)  # reordered, one column more
    table = forecast_table(module, restored, write(shuffled, tmp_path / "new.csv"), steps=3)
    assert list(table.columns) == ["sales", "visits"]
    assert table["sales"].tolist() == pytest.approx([frame["sales"].iloc[-1]] * 3, rel=1e-5)
    assert table["visits"].tolist() == pytest.approx([frame["visits"].iloc[-1]] * 3, rel=1e-5)
    with pytest.raises(MissingColumnError, match=r"new\.csv lacks the value column\(s\) \['visits'\]"):
        forecast_table(module, restored, write(frame.drop(columns="visits"), tmp_path / "new.csv"), steps=3)


def with_row(frame: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    frame = frame.copy().astype({column: object})
    frame.loc[row, column] = value
    return frame


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (seasonal_frame(60).iloc[::-1], {}, "not in order"),
        (
            pd.concat([seasonal_frame(60), seasonal_frame(60).iloc[[5]]]),
            {"sort_dates": True},
            r"duplicated dates \(1 in all\), first 2024-01-06 in rows \[5, 60\]",
        ),
        (seasonal_frame(60).drop(index=[20, 21]), {}, "2 missing date.*first 2024-01-21"),
        (with_row(seasonal_frame(60), 30, "sales", None), {}, r"missing values \(first in column 'sales'"),
        (
            with_row(seasonal_frame(60), 30, "sales", "lots"),
            {},
            r"'sales' .* row 2024-01-31 00:00:00 holds 'lots'.*value_columns",
        ),
        (seasonal_frame(60), {"frequency": "daily"}, "data.frequency='daily' is not a pandas offset"),
        (
            seasonal_frame(20),
            {"window": 8, "val_steps": 7, "test_steps": 7},
            r"20 modelled steps, fewer than window .* = 8 \+ 1 \+ 7 \+ 7 = 23.* add steps, or lower data.window.*"
            r"e\.g\. data\.window=5 data\.val_steps=2 data\.test_steps=2",
        ),
        (
            with_row(seasonal_frame(60), 30, "sales", "inf"),
            {"missing": "interpolate"},
            r"'sales' .* inf in row 2024-01-31",
        ),
    ],
    ids=["unsorted", "duplicated", "gap", "missing-value", "non-numeric", "bad-frequency", "too-short", "infinite"],
)
def test_bad_series_get_one_clear_error(tmp_path, frame, kwargs, message):
    with pytest.raises(UserError, match=message):
        SeriesDataModule(write(frame, tmp_path / "s.csv"), date_column="date", **kwargs).setup("fit")


def test_configured_handling_sorts_and_interpolates(tmp_path):
    frame = with_row(seasonal_frame(60).drop(index=[20]), 30, "sales", None).iloc[::-1]
    dm = SeriesDataModule(write(frame, tmp_path / "s.csv"), date_column="date", sort_dates=True, missing="interpolate")
    dm.setup("fit")
    assert len(dm.series) == 60 and dm.series.index.is_monotonic_increasing
    assert not dm.series.isna().any().any()
    expected = (seasonal_frame(60)["sales"][19] + seasonal_frame(60)["sales"][21]) / 2
    assert dm.series["sales"].iloc[20] == pytest.approx(expected)


# ---- bring your own series: what is inferred from the file -------------------------------------


def dated_frame(n: int, freq: str, fmt: str = "%Y-%m-%d", start: str = "2000-01-01", column: str = "date"):
    """`n` steps at pandas frequency `freq`, dates written in `fmt`, and one noisy value column."""
    dates = pd.date_range(start, periods=n, freq=freq)
    values = np.sin(np.arange(n) / 3) * 10 + np.random.default_rng(0).normal(0, 1, n) + 50
    return pd.DataFrame({column: dates.strftime(fmt), "value": values})


def test_a_column_of_years_stored_as_floats_is_read_as_years_and_not_modelled(tmp_path):
    walk = 80 + np.random.default_rng(0).normal(0, 5, 60).cumsum()  # no cycle
    frame = pd.DataFrame({"YEAR": np.arange(1700.0, 1760.0), "SUNACTIVITY": walk})
    dm = SeriesDataModule(write(frame, tmp_path / "s.csv"))
    dm.setup("fit")
    hp = dm.hparams
    assert (hp.date_column, hp.date_format, hp.frequency) == ("YEAR", "%Y", "YS-JAN")
    assert hp.value_columns == ["SUNACTIVITY"] and list(dm.series.columns) == ["SUNACTIVITY"]  # never the year
    assert dm.series.index[0] == pd.Timestamp("1700-01-01") and dm.series.index[-1] == pd.Timestamp("1759-01-01")
    assert hp.season == 0 and "no calendar season" in dm.inferred["season"].reason
    assert {"date_column", "date_format", "frequency", "value_columns", "season", "window"} <= set(dm.inferred)


def test_a_yearly_cycle_the_data_shows_becomes_the_season_and_noise_does_not(tmp_path):
    t, noise = np.arange(120), np.random.default_rng(1).normal(0, 1, 120)
    frame = pd.DataFrame({"year": 1800 + t, "spots": 60 + 50 * np.sin(2 * np.pi * t / 11) + 5 * noise})
    dm = SeriesDataModule(write(frame, tmp_path / "s.csv"))
    dm.setup("fit")
    assert (dm.hparams.season, dm.hparams.window, dm.dims["season"]) == (11, 11, 11)
    dm = SeriesDataModule(write(frame.assign(spots=1000 + noise.cumsum()), tmp_path / "w.csv"))
    dm.setup("fit")
    assert dm.hparams.season == 0 and dm.hparams.window == 8  # a random walk has no cycle


def test_years_are_found_by_content_without_a_date_name_but_a_counter_is_not_a_date(tmp_path):
    frame = pd.DataFrame({"t": np.arange(1950, 2010), "v": np.arange(1, 61), "w": np.random.rand(60)})
    dm = SeriesDataModule(write(frame, tmp_path / "s.csv"))
    dm.setup("fit")
    assert dm.hparams.date_column == "t" and dm.hparams.value_columns == ["v", "w"]  # 1..60 are not years


def test_year_forecasts_continue_as_years_not_nanoseconds(tmp_path):
    frame = pd.DataFrame({"year": np.arange(1900.0, 1960.0), "volume": np.linspace(900, 1000, 60)})
    dm = SeriesDataModule(write(frame, tmp_path / "s.csv"))
    dm.setup("fit")
    module = ForecastingModule(LastValue(dm.hparams.horizon), scale=dm.scale, naive_scale=dm.naive_scale)
    table = forecast_table(module, dm, steps=3)
    shown = format_dates(table.index, dm.hparams.frequency, dm.hparams.date_format)
    assert list(shown) == ["1960", "1961", "1962"] and shown.name == "year"
    assert list(parse_dates(pd.Series([2009.0, 1700]), "%Y").dt.year) == [2009, 1700]


@pytest.mark.parametrize(
    ("alias", "n", "frequency", "season", "horizon", "span", "window", "first_forecast"),
    [
        ("D", 100, "D", 7, 7, 10, 8, "2000-04-10"),
        ("W-SUN", 300, "W-SUN", 52, 52, 52, 52, "2005-10-02"),  # a tenth is 30: at least a season
        ("MS", 80, "MS", 12, 12, 12, 12, "2006-09"),
        ("QS-JAN", 40, "QS-JAN", 4, 4, 4, 8, "2010Q1"),
        ("YS-JAN", 40, "YS-JAN", 0, 1, 4, 8, "2040"),
    ],
)
def test_frequency_season_horizon_spans_and_window_follow_the_dates(
    tmp_path, alias, n, frequency, season, horizon, span, window, first_forecast
):
    dm = SeriesDataModule(write(dated_frame(n, alias), tmp_path / "s.csv"))
    dm.setup("fit")
    hp = dm.hparams
    assert (hp.frequency, hp.season, hp.val_steps, hp.test_steps, hp.window) == (frequency, season, span, span, window)
    assert hp.horizon == horizon  # one season ahead, where there is one
    assert dm.dims["season"] == (season or None) and len(dm.test_set) == span - horizon + 1  # dims: None for none
    module = ForecastingModule(LastValue(horizon), scale=dm.scale, naive_scale=dm.naive_scale)
    table = forecast_table(module, dm, steps=2)
    assert format_dates(table.index, hp.frequency, hp.date_format)[0] == first_forecast


def test_day_first_dates_are_read_day_first_and_ambiguous_ones_by_regularity(tmp_path):
    dm = SeriesDataModule(write(dated_frame(60, "D", "%d-%m-%Y", column="Recorded_date"), tmp_path / "d.csv"))
    dm.setup("fit")
    assert (dm.hparams.date_column, dm.hparams.date_format, dm.hparams.frequency) == ("Recorded_date", "%d-%m-%Y", "D")
    # every value reads both ways (day 01 of each month): month-first would be days with yearly jumps
    dm = SeriesDataModule(write(dated_frame(48, "MS", "%d-%m-%Y"), tmp_path / "m.csv"))
    dm.setup("fit")
    assert (dm.hparams.date_format, dm.hparams.frequency, dm.hparams.season) == ("%d-%m-%Y", "MS", 12)


def test_a_short_series_gets_spans_and_a_window_that_fit_it(tmp_path):
    dm = SeriesDataModule(write(dated_frame(30, "W-MON"), tmp_path / "s.csv"))
    dm.setup("fit")
    hp = dm.hparams
    assert hp.season == 0 and "under 3 seasons" in dm.inferred["season"].reason  # 30 weeks < 3 years
    assert (hp.val_steps, hp.test_steps, hp.window) == (3, 3, 8) and len(dm.train_set) > 0


def test_explicit_settings_win_over_inferred_ones(tmp_path):
    path = write(dated_frame(300, "W-SUN").assign(notes="x"), tmp_path / "s.csv")
    dm = SeriesDataModule(path, season=4, val_steps=20, test_steps=10, window=6, frequency="W-SUN")
    dm.setup("fit")
    hp = dm.hparams
    assert (hp.season, hp.val_steps, hp.test_steps, hp.window, hp.frequency) == (4, 20, 10, 6, "W-SUN")
    assert not {"season", "val_steps", "test_steps", "window", "frequency"} & set(dm.inferred)
    assert "left out: ['notes']" in dm.inferred["value_columns"].reason  # a text column is shown, not modelled


def test_gaps_stop_the_run_unless_interpolated(tmp_path):
    frame = dated_frame(120, "W-SAT").drop(index=[40, 41, 90])
    with pytest.raises(DataError, match=r"3 missing date\(s\) at its weekly frequency.*data\.missing=interpolate"):
        SeriesDataModule(write(frame, tmp_path / "s.csv")).setup("fit")
    dm = SeriesDataModule(str(tmp_path / "s.csv"), missing="interpolate")
    dm.setup("fit")
    assert dm.hparams.frequency == "W-SAT" and len(dm.series) == 120 and not dm.series.isna().any().any()


def test_covid_keeps_its_own_spans_and_season(make_cfg):
    data = make_cfg("task=covid").data
    assert (data.window, data.val_steps, data.test_steps, data.season) == (8, 7, 7, 7)
    series = make_cfg("task=series", "data.file=x.csv").data
    assert all(series[k] is None for k in ("date_column", "frequency", "window", "val_steps", "test_steps", "season"))


def with_dates(frame: pd.DataFrame, rows: dict[int, str]) -> pd.DataFrame:
    frame = frame.copy()
    for row, value in rows.items():
        frame.loc[row, "date"] = value
    return frame


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (
            dated_frame(40, "D").assign(date="n/a"),
            {"date_column": "date"},
            r"date column 'date' of .* holds no dates in a format that can be recognised.*data\.date_format",
        ),
        (
            with_dates(dated_frame(40, "D"), {3: "2000-13-45", 7: "soon"}),
            {},
            r"date column 'date' of .*: 2 value\(s\) are not dates in the format %Y-%m-%d, in row\(s\) "
            r"3 \('2000-13-45'\), 7 \('soon'\)",
        ),
        (
            with_dates(dated_frame(40, "D"), {3: "2000-01-03"}),
            {},
            r"duplicated dates \(1 in all\), first 2000-01-03 in rows \[2, 3\]: keep one row per date",
        ),
        (
            dated_frame(40, "D").drop(columns="date").rename(columns={"value": "v"}),
            {"frequency": "D"},
            r"data\.frequency='D' needs dates, but no column of .* reads as dates.*set data\.date_column",
        ),
        (
            dated_frame(40, "MS").assign(date=lambda f: f["date"].str[:8] + "1" + f.index.astype(str).str[-1]),
            {},
            r"dates are most often .* apart but do not lie on one calendar.*data\.frequency",
        ),
        (
            dated_frame(12, "MS"),
            {"window": 12},
            r"s\.csv gives 12 modelled steps, fewer than window \+ horizon \+ val_steps \+ test_steps = "
            r"12 \+ 1 \+ 2 \+ 2 = 17.*lower data\.window",
        ),
        (dated_frame(40, "D"), {"date_column": "when"}, r"date column 'when' is not in .*it has \['date', 'value'\]"),
        (
            dated_frame(40, "D", start="2000-01-02"),
            {"frequency": "W-SUN"},
            r"34 date\(s\) of .* are not on the calendar of data\.frequency='W-SUN', first 2000-01-03",
        ),
    ],
    ids=[
        "no-dates",
        "unparseable-rows",
        "duplicate",
        "frequency-without-dates",
        "off-calendar",
        "too-short",
        "absent",
        "off-given-calendar",
    ],
)
def test_date_problems_get_one_clear_error(tmp_path, frame, kwargs, message):
    with pytest.raises(UserError, match=message):
        SeriesDataModule(write(frame, tmp_path / "s.csv"), **kwargs).setup("fit")


def test_series_read_the_dotted_times_tables_read():
    # a format pandas does not guess, tried by the shared dates.best_format for series as for tables
    frame = pd.DataFrame({"reading": [f"24-02-2015 {hour:02d}.00" for hour in range(10)], "level": range(10)})
    assert find_date_column(frame)[:2] == ("reading", "%d-%m-%Y %H.%M")


def test_step_numbers_are_not_years_and_written_dates_win_over_year_like_numbers():
    from dltemplate.data.dates import find_date_column

    steps = pd.DataFrame({"day": range(1, 48), "cases": range(47)})
    assert find_date_column(steps) is None  # numbered steps: the series has no dates
    dates = pd.date_range("2020-01-01", periods=47).strftime("%Y-%m-%d")
    counts = pd.DataFrame({"cases_today": range(1700, 1747), "date": dates})
    assert find_date_column(counts)[:2] == ("date", "%Y-%m-%d")


def monthly_frame(years: int = 12, seed: int = 0) -> pd.DataFrame:
    """A monthly series with a trend and a yearly season (an airline's passengers, in small)."""
    rng = np.random.default_rng(seed)
    t = np.arange(12 * years)
    yearly = np.array([-20, -25, -5, 0, 5, 25, 45, 45, 15, -5, -30, -15])[t % 12]
    values = 200 + 2.0 * t + yearly * (1 + t / 100) + rng.normal(0, 4, len(t))
    return pd.DataFrame(
        {"month": pd.date_range("2000-01-01", periods=len(t), freq="MS").strftime("%Y-%m"), "n": values}
    )


def test_a_monthly_series_is_trained_a_season_ahead_and_a_longer_forecast_is_warned_of(make_cfg, tmp_path, caplog):
    path = write(monthly_frame(), tmp_path / "monthly.csv")
    result = train(make_cfg("task=series", f"data.file={path}", "trainer.max_epochs=3"))
    dm = result.trainer.datamodule
    assert (dm.hparams.frequency, dm.hparams.season, dm.hparams.horizon) == ("MS", 12, 12)
    assert "one season ahead (monthly data: 12 steps)" in dm.inferred["horizon"].reason
    assert dm.test_set.tensors[1].shape[1] == 12  # each test sample: 12 months, scored against seasonal-naive there
    assert {"test/mae", "test/snaive_mae", "test/naive_mae"} <= set(result.metrics)
    forecast_cfg = lambda steps: compose_config(  # noqa: E731
        CONFIG_DIR,
        [  # input: a file outside paths.data_dir is read only when named
            f"ckpt_path={result.best_checkpoint}",
            f"steps={steps}",
            f"output={tmp_path / f'f{steps}.csv'}",
            f"input={path}",
        ],
        output_dir=tmp_path / f"forecast{steps}",
        config_name="forecast",
    )
    caplog.clear()
    assert len(forecast(forecast_cfg(12))) == 12 and "trained to forecast" not in caplog.text
    assert len(forecast(forecast_cfg(24))) == 24
    warned = [r.message for r in caplog.records if "trained to forecast" in r.message]
    assert len(warned) == 1 and "steps=24 is past the 12 step(s)" in warned[0] and "data.horizon=24" in warned[0]


def test_a_headerless_series_is_read_with_its_columns_named_by_position(tmp_path):
    frame = seasonal_frame(60)[["date", "sales"]]
    frame.to_csv(tmp_path / "s.csv", index=False, header=False)  # 2024-01-01,100.1 on the first line
    dm = SeriesDataModule(str(tmp_path / "s.csv"))
    dm.setup("fit")
    assert dm.hparams.header is False and "the date '2024-01-01'" in dm.inferred["header"].reason
    assert (dm.hparams.date_column, dm.hparams.value_columns) == ("0", ["1"]) and len(dm.series) == 60
    named = SeriesDataModule(str(tmp_path / "s.csv"), date_column=0, value_columns=[1])  # data.date_column=0
    named.setup("fit")
    assert named.series["1"].tolist() == pytest.approx(frame["sales"].tolist())


def test_a_huge_finite_value_in_the_series_is_an_error_not_a_null_forecast(tmp_path):
    frame = seasonal_frame(60)
    dm = SeriesDataModule(write(frame, tmp_path / "s.csv"), date_column="date")
    dm.setup("fit")
    module = ForecastingModule(LastValue(), scale=dm.scale, naive_scale=dm.naive_scale)
    huge = frame.copy()
    huge.loc[huge.index[-1], "sales"] = 1e300
    with pytest.raises(DataError, match=r"not a number \(NaN or infinity\) from step 1: .*largest 1e\+300"):
        forecast_table(module, dm, write(huge, tmp_path / "huge.csv"), steps=3)
