"""Compose run configs without `@hydra.main`: for tests, benchmarks and notebooks."""

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig


def compose_config(
    config_dir: str | Path,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    config_name: str = "train",
) -> DictConfig:
    """Compose `config_name` from `config_dir` with command-line style `overrides`.

    Args:
        config_dir: The `conf/` folder of the project.
        overrides: Overrides as on the command line, e.g. ["task=rings", "trainer.max_epochs=3"].
        output_dir: This run's directory; required to train, since no Hydra job creates one here.
        config_name: Primary config: "train" or "evaluate".
    """
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    if output_dir is not None:
        cfg.paths.output_dir = str(output_dir)
    return cfg
