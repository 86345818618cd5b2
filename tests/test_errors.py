"""Mistakes that once ended in a traceback or a misleading message: each is now one `error:` line.

The line names the setting (or the file), the value and how to fix it; the command exits with
status 2 and leaves no run record behind for a run that never started.
"""

import pytest

from dltemplate.cli import run_entry_point
from dltemplate.errors import ConfigError
from dltemplate.train import main as train_main
from dltemplate.train import train


def one_error_line(capsys, call) -> str:
    """Run `call` as an entry point would; return its single `error:` line (exit status 2 checked)."""
    with pytest.raises(SystemExit) as stopped:
        run_entry_point(lambda _: call(), None)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=rings", "net.hidden=[0]"], "net.hidden=[0] must be whole numbers of at least 1"),
        (["data.batch_size=0"], "data.batch_size=0 must be a whole number of at least 1"),
        (["module.optimizer.lr=-1"], "module.optimizer.lr=-1 must be a finite number above 0"),
        (["module.optimizer.lr=nan"], "module.optimizer.lr=nan must be a finite number above 0"),
        (["module.optimizer.lr=abc"], "module.optimizer.lr='abc' must be a finite number above 0"),
        (["task=rings", "net.dropout=2"], "net.dropout=2 must be a probability"),
        (["task=rings", "net.dropout=1.0"], "net.dropout=1.0 must be a probability"),
        (["module.optimizer.weight_decay=nan"], "module.optimizer.weight_decay=nan must be a finite number"),
        (["module.optimizer.weight_decay=-0.1"], "module.optimizer.weight_decay=-0.1 must be a finite number"),
        (["seed=-1"], "seed=-1 must be a whole number from 0 to 4294967295"),
        (["seed=4294967296"], "seed=4294967296 must be a whole number from 0"),
        (["seed=1.5"], "seed=1.5 must be a whole number"),
    ],
)
def test_a_common_setting_that_cannot_work_is_one_line_before_anything_is_written(
    make_cfg, tmp_path, capsys, overrides, message
):
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        train(cfg)
    assert not (tmp_path / "run").exists()  # refused before the run directory was claimed
    line = one_error_line(capsys, lambda: train_main(make_cfg(*overrides, run="again")))
    assert message in line and "on the command line" in line


@pytest.mark.parametrize(
    "overrides",
    [["seed=null"], ["seed=0"], ["task=rings", "net.hidden=[]", "net.dropout=0.5"], ["module.optimizer.lr=10"]],
)
def test_settings_at_the_edges_of_their_range_pass_the_check(make_cfg, overrides):
    from dltemplate.settings import check_settings

    check_settings(make_cfg(*overrides))


def test_the_shipped_configs_of_every_task_pass_the_check(make_cfg):
    from dltemplate.settings import check_settings
    from tests.helpers import TASKS

    for task in TASKS:
        check_settings(make_cfg(f"task={task}"))


def test_a_diverged_run_is_one_line_naming_the_learning_rate(make_cfg, capsys):
    cfg = make_cfg("module.optimizer.lr=1e30", "trainer.max_epochs=2", "logger=csv")
    line = one_error_line(capsys, lambda: train_main(cfg))
    assert "the run diverged; lower module.optimizer.lr (now 1e+30)" in line
