"""The root scripts as a user runs them: help, config printing, parallel runs, DDP on CPU."""

import subprocess
import sys
from pathlib import Path

from dltemplate.checkpoint import load_checkpoint
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
        assert "test/mse" in tensorboard_tags(run_dir / "tensorboard")["scalars"]


def test_ddp_on_cpu_trains_in_two_processes_into_one_run_directory(tmp_path):
    result = run_script(
        ["train.py", "task=rings", "trainer=ddp_cpu", "trainer.max_epochs=2", f"paths.log_dir={tmp_path}"]
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "distributed_backend=gloo" in result.stdout + result.stderr
    assert "All distributed processes registered. Starting with 2 processes" in result.stdout + result.stderr
    run_dirs = list((tmp_path / "rings" / "runs").iterdir())
    assert len(run_dirs) == 1  # the worker process wrote into rank 0's run directory, not a new one
    run_dir = run_dirs[0]
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["epoch"] == 1
    # each process saw half of each epoch's 3200 training points: 25 batches of 64
    assert checkpoint["global_step"] == 2 * 25
    assert "test/acc" in tensorboard_tags(Path(run_dir) / "tensorboard")["scalars"]
