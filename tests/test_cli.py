"""The root scripts as a user runs them: help, config printing, parallel runs, DDP on CPU."""

import subprocess
import sys

from tests.helpers import ROOT, TASKS, run_script, tensorboard_tags


def test_help_lists_every_task():
    result = run_script(["train.py", "--help"])
    assert result.returncode == 0, result.stderr
    assert all(task in result.stdout for task in TASKS)


def test_cfg_job_prints_the_composed_config():
    result = run_script(["train.py", "task=rings", "--cfg", "job"])
    assert result.returncode == 0, result.stderr
    assert "task_name: rings" in result.stdout and "_target_: dltemplate.nets.mlp.MLP" in result.stdout


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
