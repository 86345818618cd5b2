"""Forecast a series past its end:  python forecast.py ckpt_path=<ckpt> [input=<csv>] [steps=30] [report_zero=true]"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dltemplate.cli import check_command_line, run_entry_point
from dltemplate.forecast import main as forecast_main


@hydra.main(version_base="1.3", config_path="conf", config_name="forecast")
def main(cfg: DictConfig) -> None:
    run_entry_point(forecast_main, cfg)


if __name__ == "__main__":
    check_command_line(Path(__file__).parent / "conf", "forecast")
    main()
