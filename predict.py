"""Predict raw inputs with a trained checkpoint:  python predict.py ckpt_path=<ckpt> input=<data> [output=<csv>]"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dltemplate.cli import check_command_line, run_entry_point
from dltemplate.predict import main as predict_main


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_entry_point(predict_main, cfg)


if __name__ == "__main__":
    check_command_line(Path(__file__).parent / "conf", "predict")
    main()
