"""Fixtures: compose configs from conf/ into temporary run directories."""

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from dltemplate.config import compose_config
from tests.helpers import CONFIG_DIR, TASKS


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a train config whose outputs (and data) live under this test's tmp_path."""

    def make(*overrides: str, run: str = "run") -> DictConfig:
        missing = [o[5:] for o in overrides if o.startswith("task=") and o[5:] not in TASKS]
        if missing:  # a project generated without that task's family
            pytest.skip(f"task {missing[0]} is not in this project")
        return compose_config(
            CONFIG_DIR,
            [f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}", *overrides],
            output_dir=tmp_path / run,
        )

    return make
