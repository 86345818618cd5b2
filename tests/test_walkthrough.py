"""The "Add your own task" walkthrough (docs/add-a-task.md), followed literally on its own code blocks."""

import re
import shutil
from pathlib import Path

import pytest

import dltemplate.data
import dltemplate.nets
from dltemplate.config import compose_config
from dltemplate.train import train
from tests.helpers import CONFIG_DIR, ROOT

BLOCK = re.compile(r"```(?:python|yaml) (\S+)\n(.*?)```", re.DOTALL)


def walkthrough_files() -> dict[str, str]:
    return dict(BLOCK.findall((ROOT / "docs" / "add-a-task.md").read_text()))


def test_the_walkthrough_names_every_file_it_needs():
    assert sorted(walkthrough_files()) == [
        "conf/data/sine.yaml",
        "conf/net/sine_net.yaml",
        "conf/task/sine.yaml",
        "src/dltemplate/data/sine.py",
        "src/dltemplate/nets/sine_net.py",
    ]


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
def test_following_the_walkthrough_gives_a_task_that_learns(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    for name, text in walkthrough_files().items():
        if name.startswith("conf/"):
            (tmp_path / name).write_text(text)
        else:  # the package's modules, put on the package's search path instead of into src/
            package = {"data": dltemplate.data, "nets": dltemplate.nets}[Path(name).parent.name]
            folder = tmp_path / "pkg" / Path(name).parent.name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / Path(name).name).write_text(text)
            monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    cfg = compose_config(conf, ["task=sine", f"paths.log_dir={tmp_path / 'logs'}"], output_dir=tmp_path / "run")
    result = train(cfg)
    assert result.metrics["test/mse"] < 0.1  # sin(x) has variance 0.5; the noise floor is 0.01
    assert result.metrics["test/r2"] > 0.8


@pytest.fixture(autouse=True)
def _forget_walkthrough_modules():
    yield
    import sys

    for name in ("dltemplate.data.sine", "dltemplate.nets.sine_net"):
        sys.modules.pop(name, None)
