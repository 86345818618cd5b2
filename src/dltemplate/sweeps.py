"""Multirun bookkeeping: each job's result file, and the summary table written when a sweep ends."""

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"


@rank_zero_only
def write_result(output_dir: str | Path, status: str, metrics: dict[str, float], error: str | None = None) -> None:
    """Record how a run ended in `<output_dir>/result.json`: status, metrics, overrides, error (rank 0 only)."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    record = {
        "status": status,
        "overrides": overrides,
        "metrics": metrics,
        "output_dir": str(output_dir),
        "error": error,
    }
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / RESULT_FILE).write_text(json.dumps(record, indent=2, default=float))


def summarise(sweep_dir: str | Path, objective: str | None, mode: str = "max") -> pd.DataFrame:
    """One row per job of a sweep: overrides, status, val/test metrics, run directory; best marked."""
    rows: list[dict[str, Any]] = []
    for path in sorted(
        Path(sweep_dir).glob(f"*/{RESULT_FILE}"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    ):
        record = json.loads(path.read_text())
        metrics = {k: v for k, v in record["metrics"].items() if k.startswith(("val/", "test/"))}
        rows.append(
            {
                "job": path.parent.name,
                "overrides": " ".join(record["overrides"]),
                "status": record["status"],
                **metrics,
                "run_dir": record["output_dir"],
                "error": record["error"],
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
