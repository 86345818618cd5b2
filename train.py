"""Train a task:  python train.py [task=<name>] [trainer=cpu|gpu|ddp|ddp_cpu|mps] [key=value ...]

See conf/train.yaml for what can be chosen, and `python train.py --help` for the choices.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dltemplate.cli import check_command_line, run_entry_point
from dltemplate.train import main as train_main


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_entry_point(train_main, cfg)


if __name__ == "__main__":
    check_command_line(Path(__file__).parent / "conf", "train")
    main()
