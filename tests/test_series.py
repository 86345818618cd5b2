"""Time-series task: reading and checking series, leak-free windows, baselines, forecast, bad input."""

from pathlib import Path

import pandas as pd
import pytest
import torch

from dltemplate.config import compose_config
from dltemplate.data.series import SeriesDataModule
from dltemplate.errors import ConfigError, MissingColumnError, UserError
from dltemplate.forecast import forecast, forecast_table
from dltemplate.modules.forecasting import ForecastingModule
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
    assert dm.dims["num_series"] == 2 and len(dm.test_set) == 6  # a tenth of 60 steps
    assert dm.hparams.date_column is None and dm.dims["season"] is None  # no dates: no calendar season


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


def test_model_beats_both_naive_baselines_on_trend_plus_season(make_cfg, tmp_path):
    overrides = provide_task_data("series", tmp_path / "data")
    result = train(make_cfg("task=series", "data.window=14", *overrides))
    metrics = result.metrics
    assert metrics["test/mae"] < metrics["test/naive_mae"] and metrics["test/rel_mae"] < 1
    assert metrics["test/mae"] < metrics["test/snaive_mae"]
    assert "val/forecast" in tensorboard_tags(Path(result.output_dir))["images"]


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
    table = forecast(cfg)
    written = pd.read_csv(tmp_path / "forecast" / "forecast.csv")
    assert len(table) == len(written) == 20
    assert written["date"].iloc[0] == "2020-03-11"  # the day after the last row (2020-03-10)
    assert (table["confirmed_num"] >= 0).all()  # floored at zero
    levels = covid_like_frame()["confirmed_num"].iloc[-1] + table["confirmed_num"].cumsum()
    assert table["confirmed_num_level"].tolist() == pytest.approx(levels.tolist())

    for steps in (0, -5):
        cfg.steps, cfg.overwrite = steps, True
        with pytest.raises(ConfigError, match=f"steps={steps}: the number of steps to forecast must be at least 1"):
            forecast(cfg)


class LastValue(torch.nn.Module):
    """Tomorrow is today: (B, window, C) → (B, 1, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:]


def test_forecast_input_columns_are_matched_by_name_whatever_their_order(tmp_path):
    frame = seasonal_frame(60)
    dm = SeriesDataModule(write(frame, tmp_path / "s.csv"), date_column="date")
    dm.setup("fit")
    settings = {k: dm.hparams[k] for k in ("date_format", "frequency", "window", "val_steps", "test_steps")}
    restored = SeriesDataModule(str(tmp_path / "s.csv"), date_column="date", **settings)  # as a checkpoint does
    restored.load_state_dict(dm.state_dict())
    module = ForecastingModule(LastValue(), scale=dm.scale, naive_scale=dm.naive_scale)
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
