"""Search hyperparameters with Optuna:  python tune.py task=<name> hparams_search=<search> [overrides ...]

Search spaces live in conf/hparams_search/; results in logs/<task>/runs/<run>/trials.csv and the
study's SQLite storage, from which an interrupted search continues.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dltemplate.cli import check_command_line, run_entry_point
from dltemplate.extras.tune import main as tune_main


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run_entry_point(tune_main, cfg)


if __name__ == "__main__":
    check_command_line(Path(__file__).parent / "conf", "train")
    main()
