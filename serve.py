"""Serve a trained checkpoint over HTTP:  python serve.py ckpt_path=<ckpt> [port=8000] [batching=false]"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dltemplate.cli import check_command_line, run_entry_point
from dltemplate.extras.serve import main as serve_main


@hydra.main(version_base="1.3", config_path="conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    run_entry_point(serve_main, cfg)


if __name__ == "__main__":
    check_command_line(Path(__file__).parent / "conf", "serve")
    main()
