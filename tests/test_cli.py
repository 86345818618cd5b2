"""The root scripts as a user runs them: help, config printing, parallel runs, DDP on CPU."""

import subprocess
import sys

import pytest

from dltemplate.cli import check_command_line
from tests.helpers import CONFIG_DIR, ROOT, TASKS, run_script, tensorboard_tags


@pytest.mark.slow
def test_help_lists_every_task():
    result = run_script(["train.py", "--help"])
    assert result.returncode == 0, result.stderr
    assert all(task in result.stdout for task in TASKS)


@pytest.mark.slow
def test_cfg_job_prints_the_composed_config():
    result = run_script(["train.py", "task=rings", "--cfg", "job"])
    assert result.returncode == 0, result.stderr
    assert "task_name: rings" in result.stdout and "_target_: dltemplate.nets.mlp.MLP" in result.stdout


@pytest.mark.slow
def test_two_runs_started_together_keep_separate_outputs(tmp_path):
    command = [sys.executable, "train.py", "debug=limit_batches", f"paths.log_dir={tmp_path}"]
    runs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    for run in runs:
        output, _ = run.communicate(timeout=240)
        assert run.returncode == 0, output.decode()[-3000:]
    run_dirs = sorted((tmp_path / "linear_regression" / "runs").iterdir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert "test/mse" in tensorboard_tags(run_dir)["scalars"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["train.py", "trainer.max_epochs=abc"], "trainer.max_epochs='abc' must be int"),
        (["train.py", "task=series"], "data.file is not set"),
        (["train.py", "net=rnn_forecaster"], "net=rnn_forecaster needs the size dims.num_series"),
        (["train.py", "task=rings", "ckpt_path=no/such/run"], "no/such/run does not exist"),
        (["predict.py", "ckpt_path=missing.ckpt", "input=x.csv"], "missing.ckpt does not exist"),
        (["evaluate.py", "ckpt_path={garbage}"], "cannot be read as a checkpoint"),
        (["forecast.py", "ckpt_path={garbage}"], "cannot be read as a checkpoint"),
        (["export.py", "ckpt_path={garbage}"], "cannot be read as a checkpoint"),
        (["tune.py"], "no search configured"),
        (["train.py", "task=titanic", "data.targt=Survived"], "did you mean data.target"),
        (["predict.py", "ckpt_path=x.ckpt", "input=x.csv", "outptu=y.csv"], "did you mean output"),
    ],
)
def test_a_users_mistake_is_one_message_without_a_traceback(tmp_path, command, message):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    script, *overrides = (a.format(garbage=garbage) for a in command)
    args = [str(ROOT / script), *overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_script(args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["trainer.max_epoch=3"], "trainer.max_epoch is not a setting of trainer; did you mean trainer.max_epochs"),
        ([f"task={TASKS[0][:-1]}"], f"is not a choice of task; did you mean task={TASKS[0]}"),  # this project's
        (["net=mlpp"], "net=mlpp is not a choice of net; did you mean net=mlp?"),
        (["trainer.max_epoch=3", "hydra.run.dir=x"], "did you mean trainer.max_epochs"),  # Hydra's settings pass
        (["trainer.max_epochs.x=3"], "trainer.max_epochs holds a value, not settings"),
    ],
)
def test_a_misspelled_setting_or_choice_is_one_line_with_the_closest_names(capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        check_command_line(CONFIG_DIR, "train", argv)
    assert stopped.value.code == 2
    printed = capsys.readouterr().err.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("error: ") and message in printed[0], printed


@pytest.mark.parametrize(
    "argv",
    [
        ["trainer.max_epochs=3"],
        ["-m", "task=imdb,text", "data.max_length=128"],  # a key of the swept tasks, not of the default one
        ["+data.extra=1", "data.extra=2"],
        ["--config-dir", "elsewhere", "task=mine"],
        ["hydra.searchpath=[file://elsewhere]", "task=mine"],
        ["--help"],
    ],
)
def test_settings_that_exist_sweeps_and_additions_pass_the_check(argv):
    check_command_line(CONFIG_DIR, "train", argv)  # returns: nothing to refuse
