"""Rolling-origin backtest of a forecaster: one training run per forecast origin, an expanding window.

`python train.py task=covid backtest.origins=5` trains 5 models. The last origin is the usual
split (its test targets are the series' last `horizon` steps); each earlier origin moves the end of
the series back by `step` steps (`data.cutoff`), so its test targets are earlier steps and nothing
after them is read, let alone trained on. Training always starts at the first step (an expanding
window). Each origin is an ordinary run in `<run>/origin_<k>/`; the parent directory gets
`backtest_summary.csv`: per origin the model's test errors beside the naive and seasonal-naive
forecasts' on the same targets (and its validation metrics), then their mean and sd, and a
result.json of the means, whose `val/mae_best` (the monitored metric's best) sweeps optimise.
"""

import copy
import logging
from pathlib import Path

from omegaconf import DictConfig, open_dict

from dltemplate.build import build_datamodule
from dltemplate.errors import ConfigError, DataError
from dltemplate.extras.cv import fold_metrics, require_setting, summarise
from dltemplate.files import write_text_atomically
from dltemplate.run import train
from dltemplate.rundir import claim, write_result

log = logging.getLogger(__name__)

SUMMARY_FILE = "backtest_summary.csv"


def origin_config(cfg: DictConfig, origin: int) -> DictConfig:
    """The config of origin `origin` (0 = the earliest): its steps cut off the end, in its own directory."""
    settings = cfg.backtest
    origin_cfg = settle_inferred(copy.deepcopy(cfg))
    horizon = settings.horizon or origin_cfg.data.test_steps
    step = settings.step or horizon
    with open_dict(origin_cfg):
        origin_cfg.backtest.origins = None  # an origin is a plain run
        origin_cfg.data.test_steps = horizon
        origin_cfg.data.cutoff = (settings.origins - 1 - origin) * step
        origin_cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / f"origin_{origin}")
    return origin_cfg


def settle_inferred(cfg: DictConfig) -> DictConfig:
    """`cfg` with the data settings left null (spans, window, season, ...) inferred once from the whole
    series, so that every origin uses the same ones whatever its cutoff (the season too: an origin's
    shorter series could show another cycle).

    The whole series is set up as a plain run's would be (`build_datamodule`, which writes what it
    inferred into its config); each origin's run then infers nothing.
    """
    probe = copy.deepcopy(cfg)
    with open_dict(probe):
        probe.paths.output_dir = None  # no inferred.yaml in the parent: every origin's config holds the values
    build_datamodule(probe)
    with open_dict(cfg):
        for key, value in probe.data.items():
            if cfg.data.get(key) is None and value is not None:
                cfg.data[key] = value
    return cfg


def backtest(cfg: DictConfig) -> dict[str, float]:
    """Train one model per origin, write `backtest_summary.csv`; return the mean metrics over the origins."""
    settings = cfg.backtest
    if settings.origins < 1 or (settings.step is not None and settings.step < 1):
        raise ConfigError(
            f"backtest.origins and backtest.step must be at least 1, got {settings.origins}, {settings.step}"
        )
    require_setting(cfg, "cutoff", "backtest.origins", "series")
    parent = Path(cfg.paths.output_dir)
    claim(parent)
    rows = []
    try:
        for origin in range(settings.origins):
            origin_cfg = origin_config(cfg, origin)
            log.info(
                "backtest: origin %d of %d (last %d steps cut off)", origin, settings.origins, origin_cfg.data.cutoff
            )
            try:
                result = train(origin_cfg)
            except DataError as error:  # the earliest origins are the first to run out of steps
                raise DataError(
                    f"backtest origin {origin} (the last {origin_cfg.data.cutoff} steps cut off): {error}; "
                    "or lower backtest.origins or backtest.step"
                ) from None
            first = result.datamodule.step_index("test")[0]
            metrics = fold_metrics(result.metrics)
            rows.append({"origin": origin, "first_target": str(first), **metrics, "run_dir": result.output_dir})
    except Exception as error:
        write_result(parent, "failed", {}, f"{type(error).__name__}: {error}")
        raise
    table = summarise(rows, key="origin", labels=("first_target", "run_dir"))
    write_text_atomically(parent / SUMMARY_FILE, table.to_csv(index=False))
    means = {k: float(v) for k, v in table.iloc[-2].items() if k not in ("origin", "first_target", "run_dir")}
    write_result(parent, "ok", means, origins=settings.origins)
    shown = [c for c in table.columns if c != "run_dir"]
    log.info("backtest summary (%s):\n%s", parent / SUMMARY_FILE, table[shown].to_string(index=False))
    return means
