"""Score a checkpoint on its task's test split:  python evaluate.py ckpt_path=<path/to.ckpt>"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dltemplate.cli import check_command_line, run_entry_point
from dltemplate.evaluate import main as evaluate_main


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_entry_point(evaluate_main, cfg)


if __name__ == "__main__":
    check_command_line(Path(__file__).parent / "conf", "evaluate")
    main()
