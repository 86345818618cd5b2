"""Multirun bookkeeping: each job's result file, and the summary table written when a sweep ends."""

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dltemplate.rundir import RESULT_FILE, read_result

log = logging.getLogger(__name__)


def summarise(sweep_dir: str | Path, objective: str | None, mode: str = "max") -> pd.DataFrame:
    """One row per job of a sweep: overrides, status, val/test metrics, run directory; best marked."""
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(sweep_dir).glob(f"*/{RESULT_FILE}"), key=lambda p: job_number(p.parent.name)):
        record = read_result(path.parent)
        if record is None:  # an empty or partial file (a full disk, a killed job): listed, not fatal
            log.warning("%s cannot be read; its job is listed as unreadable", path)
            record = {"status": "unreadable", "overrides": [], "metrics": {}, "output_dir": str(path.parent)}
        metrics = {k: v for k, v in record["metrics"].items() if k.startswith(("val/", "test/"))}
        rows.append(
            {
                "job": job_number(path.parent.name),
                "overrides": " ".join(record["overrides"]),
                "status": record["status"],
                **metrics,
                "run_dir": record.get("output_dir"),
                "error": record.get("error"),
            }
        )
    table = pd.DataFrame(rows)
    if objective and objective in table:
        scores = table[objective].where(table["status"] == "ok")
        valid = scores.dropna().loc[lambda s: s.map(math.isfinite)]
        table["best"] = False
        if len(valid):
            table.loc[valid.idxmax() if mode == "max" else valid.idxmin(), "best"] = True
    return table


def job_number(directory_name: str) -> int:
    """The job number a sweep job's directory starts with: "3" and "3_lr=0.01" are job 3."""
    number = directory_name.split("_", 1)[0]
    return int(number) if number.isdigit() else -1


class SweepSummary(Callback):
    """Hydra callback: when a multirun ends, writes `<sweep dir>/summary.csv` and prints it.

    The best job is marked by `optimized_metric` (default: the monitored metric's best value,
    e.g. `val/acc_best`), in the direction of `monitor_mode`.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        objective = config.get("optimized_metric") or f"{config.get('monitor', 'val/loss')}_best"
        table = summarise(sweep_dir, objective, config.get("monitor_mode", "max"))
        if table.empty:
            log.warning("no job of the sweep in %s wrote a %s", sweep_dir, RESULT_FILE)
            return
        table.to_csv(sweep_dir / "summary.csv", index=False)
        shown = [c for c in table.columns if c not in ("run_dir", "error")]
        log.info(
            "sweep summary (%s, best by %s):\n%s",
            sweep_dir / "summary.csv",
            objective,
            table[shown].to_string(index=False),
        )
        failed = table[table["status"] != "ok"]
        for _, row in failed.iterrows():
            log.error("job %s (%s) failed: %s", row["job"], row["overrides"], row["error"])
