"""Export a trained net:  python export.py ckpt_path=<ckpt> format=onnx|pt2|torchscript [output=<file>]"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dltemplate.cli import check_command_line, run_entry_point
from dltemplate.extras.export import main as export_main


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_entry_point(export_main, cfg)


if __name__ == "__main__":
    check_command_line(Path(__file__).parent / "conf", "export")
    main()
