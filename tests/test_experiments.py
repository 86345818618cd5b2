"""Experiments at scale: sweeps and their summary, parallel launcher, Optuna, resume, DDP metrics."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch import Trainer

from dltemplate.checkpoint import load_checkpoint, restore
from dltemplate.config import compose_config
from dltemplate.train import train
from tests.datasets import provide_task_data
from tests.helpers import CONFIG_DIR, ROOT, TASKS, run_script, tensorboard_tags


@pytest.mark.slow
def test_parallel_sweep_records_a_failing_job_and_summarises_all(tmp_path):
    result = run_script(
        [
            "train.py",
            "-m",
            "hydra/launcher=parallel",
            "task=rings",
            "debug=limit_batches",
            f"paths.log_dir={tmp_path}",
            "data.val_fraction=0.2,1.5",  # the second job fails in setup
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "rings" / "multiruns").iterdir()
    summary = pd.read_csv(sweep / "summary.csv")
    assert summary["status"].tolist() == ["ok", "failed"]
    assert "val_fraction must be between 0 and 1" in summary["error"][1]
    assert summary["best"].tolist() == [True, False] and summary["test/acc"].notna()[0]
    jobs = {int(d.name.split("_")[0]): d for d in sweep.iterdir() if d.is_dir() and d.name[0].isdigit()}
    assert [jobs[n].name for n in (0, 1)] == ["0_val_fraction=0.2", "1_val_fraction=1.5"]  # say what differs
    for job in jobs.values():
        assert json.loads((job / "result.json").read_text())["overrides"][-1].startswith("data.val_fraction=")
    assert "test/acc" in tensorboard_tags(jobs[0])["scalars"]


@pytest.mark.slow  # starts two multiruns
def test_a_multirun_into_another_sweeps_directory_is_refused_before_a_job_writes(tmp_path):
    sweep = tmp_path / "sweep"
    command = [
        "train.py",
        "-m",
        "task=linear_regression",
        "debug=limit_batches",
        "test=false",
        f"paths.log_dir={tmp_path}",
        f"hydra.sweep.dir={sweep}",
        "seed=1,2",
    ]
    first = run_script(command)
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = sorted(d.name for d in sweep.iterdir() if d.is_dir())
    assert len(jobs) == 2 and jobs[0].startswith("0_") and (sweep / ".claimed").is_file()
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sweep.rglob("*") if p.is_file()}
    assert sweep / jobs[0] / ".hydra" / "overrides.yaml" in before

    again = run_script(command)  # the same jobs: Hydra would write into the same job directories
    assert again.returncode == 2, again.stderr[-3000:]
    errors = [line for line in again.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"{sweep} already holds" in errors[0] and "hydra.sweep.dir" in errors[0], errors
    assert "Traceback" not in again.stderr
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sweep.rglob("*") if p.is_file()}
    assert after == before  # no job's .hydra/, log, result or the summary was touched


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
@pytest.mark.skipif("titanic" not in TASKS, reason="the tabular family is not in this project")
def test_optuna_search_records_failed_trials_and_continues_from_its_storage(tmp_path):
    tune = pytest.importorskip("dltemplate.extras.tune", reason="the search is an extra, not in this project").tune
    provide_task_data("titanic", tmp_path / "data")
    base = [
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "task=titanic",
        "hparams_search=titanic_optuna",
        "trainer.max_epochs=2",
        "+optuna.params.data.val_fraction={type: categorical, choices: [0.2, 1.5]}",
    ]
    storage = f"sqlite:///{tmp_path / 'logs' / 'titanic' / 'optuna.db'}"
    (tmp_path / "logs" / "titanic").mkdir(parents=True)
    seeded = optuna.create_study(study_name="titanic_search", storage=storage, direction="minimize")
    seeded.enqueue_trial({"data.val_fraction": 1.5})  # fails in setup
    seeded.enqueue_trial({"data.val_fraction": 0.2})
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):  # tune() composes each trial's config
        first = compose("train", overrides=[*base, "optuna.n_trials=4"])
        first.paths.output_dir = str(tmp_path / "search1")
        study = tune(first, base_overrides=base)
        states = [t.state.name for t in study.trials]
        assert len(states) == 4 and "COMPLETE" in states and "FAIL" in states  # val_fraction=1.5 fails
        again = compose("train", overrides=[*base, "optuna.n_trials=5"])
        again.paths.output_dir = str(tmp_path / "search2")
        assert len(tune(again, base_overrides=base).trials) == 5  # one more, not five more
    trials = pd.read_csv(tmp_path / "search2" / "trials.csv")
    assert len(trials) == 5 and (tmp_path / "logs" / "titanic" / "optuna.db").is_file()


def test_ckpt_path_last_resumes_the_latest_run_into_its_own_directory(make_cfg, tmp_path):
    first = train(make_cfg("trainer.max_epochs=2", "test=false", run="logs/linear_regression/runs/first"))
    resumed = train(make_cfg("trainer.max_epochs=4", "ckpt_path=last", "test=false", run="second"))
    assert resumed.output_dir == first.output_dir  # TensorBoard and checkpoints continue there
    assert load_checkpoint(Path(first.output_dir) / "checkpoints" / "last.ckpt")["global_step"] == 4 * 10
    assert not (tmp_path / "second" / "checkpoints").exists()
    steps = {e.step for e in _scalar_events(Path(first.output_dir), "val/loss")}
    assert len(steps) == 4  # one validation point per epoch, in one TensorBoard run


def _scalar_events(run: Path, tag: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run))
    accumulator.Reload()
    return accumulator.Scalars(tag)


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_end(tmp_path):
    command = [
        "train.py",
        "task=rings",
        "trainer.max_epochs=6",
        "data.batch_size=16",
        "test=false",
        f"paths.log_dir={tmp_path}",
    ]
    process = subprocess.Popen(
        [sys.executable, *command], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    last = None
    while time.time() < deadline and process.poll() is None:
        found = list((tmp_path / "rings" / "runs").glob("*/checkpoints/last.ckpt"))
        if found and load_checkpoint(found[0])["epoch"] >= 1:
            last = found[0]
            break
        time.sleep(0.2)
    assert last is not None and process.poll() is None, "the run ended before it could be killed"
    time.sleep(0.5)  # into the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(last)["epoch"]
    assert killed_at < 5

    resumed = run_script([*command, "ckpt_path=last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    checkpoint = load_checkpoint(last)  # the same run directory, continued
    assert checkpoint["global_step"] == 6 * 200  # 3200 training points / 16 = 200 steps × 6 epochs

    uninterrupted = train(
        compose_config(CONFIG_DIR, [*command[1:-1], f"paths.log_dir={tmp_path / 'u'}"], output_dir=tmp_path / "u")
    )
    reference = load_checkpoint(Path(uninterrupted.output_dir) / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == reference["global_step"]
    # six validation epochs in the one TensorBoard run (Lightning's own `epoch` field is written
    # before or after its increment depending on how the run was restored, so it is not compared)
    validation_steps = {e.step for e in _scalar_events(last.parent.parent, "val/acc")}
    assert len(validation_steps) == 6
    resumed_acc = float(
        checkpoint["callbacks"][next(k for k in checkpoint["callbacks"] if "'monitor': 'val/acc'" in k)][
            "best_model_score"
        ]
    )
    assert resumed_acc == pytest.approx(uninterrupted.metrics["val/acc_best"], abs=0.02)


def test_an_interrupted_checkpoint_write_leaves_the_previous_one_intact(make_cfg, tmp_path, monkeypatch):
    result = train(make_cfg("trainer.max_epochs=1", "test=false"))
    last = Path(result.output_dir) / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    def dies_halfway(obj, path):
        Path(path).write_bytes(before[: len(before) // 2])  # half written, then the process is killed
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dies_halfway)  # the checkpoint writer's (AtomicCheckpointIO) serialisation
    with pytest.raises(KeyboardInterrupt):
        result.trainer.save_checkpoint(last)
    monkeypatch.undo()
    assert last.read_bytes() == before
    torch.load(last, weights_only=True)
    assert sorted(p.name for p in last.parent.iterdir() if p.name.startswith(".")) == []  # no partial file left


@pytest.mark.slow
def test_ddp_on_cpu_shares_one_run_directory_and_logs_whole_set_metrics(tmp_path):
    result = run_script(
        ["train.py", "task=rings", "trainer=ddp_cpu", "trainer.max_epochs=2", "test=false", f"paths.log_dir={tmp_path}"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "distributed_backend=gloo" in output and "Starting with 2 processes" in output
    (run,) = (tmp_path / "rings" / "runs").iterdir()  # the worker wrote into rank 0's run directory
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 * 25  # each process saw half of 3200 points: 25 batches of 64
    assert "val/acc" in tensorboard_tags(run)["scalars"]
    state = checkpoint["callbacks"][next(k for k in checkpoint["callbacks"] if "'monitor': 'val/acc'" in k)]
    module, datamodule, _ = restore(state["best_model_path"])
    single = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False).validate(
        module, datamodule
    )[0]
    assert single["val/acc"] == pytest.approx(float(state["best_model_score"]), abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_an_epoch_stops_the_run_with_a_checkpoint_to_resume(tmp_path, signum):
    command = ["train.py", "task=rings", "data.batch_size=16", "test=false", f"paths.log_dir={tmp_path}"]
    process = subprocess.Popen(
        [sys.executable, *command, "trainer.max_epochs=50"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    found = []
    while time.time() < deadline and process.poll() is None and not found:
        found = list((tmp_path / "rings" / "runs").glob("*/checkpoints/last.ckpt"))  # epoch 0 is done
        time.sleep(0.1)
    assert found and process.poll() is None, "the run ended before the signal"
    epoch_end_step = load_checkpoint(found[0])["global_step"]
    time.sleep(0.5)  # into the next epoch
    sent = time.time()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert time.time() - sent < 10  # not at the end of the epoch, nor of the run
    assert process.returncode == 128 + signum and "Traceback" not in stderr.decode()
    run = found[0].parent.parent
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "interrupted" and record["last_checkpoint"] == str(found[0])
    assert f"stopped by {signum.name}" in record["error"] and f"""resume with 'ckpt_path="{run}"'""" in record["error"]
    assert f"interrupted: stopped by {signum.name}" in stderr.decode()
    saved = load_checkpoint(found[0])["global_step"]
    assert epoch_end_step < saved and saved % 200  # in the middle of an epoch: 200 steps each
    if signum == signal.SIGTERM:  # the checkpoint resumes
        resumed = run_script([*command, "trainer.max_epochs=3", f'ckpt_path="{run}"'])  # as the message says
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert json.loads((run / "result.json").read_text())["status"] == "ok"
        assert load_checkpoint(found[0])["global_step"] >= 3 * 200


@pytest.mark.skipif("titanic" not in TASKS, reason="the tabular family is not in this project")
def test_a_continued_search_draws_new_parameters_not_trial_0s_again(tmp_path, monkeypatch):
    tune_module = pytest.importorskip("dltemplate.extras.tune", reason="the search is an extra, not in this project")
    tune = tune_module.tune

    monkeypatch.setattr(tune_module, "_trial_metrics", lambda trial, cfg: {"val/loss_best": float(trial.number)})
    base = [f"paths.log_dir={tmp_path / 'logs'}", "task=titanic", "hparams_search=titanic_optuna", "optuna.pruner=null"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for run, trials in enumerate((2, 4)):
            cfg = compose("train", overrides=[*base, f"optuna.n_trials={trials}"])
            cfg.paths.output_dir = str(tmp_path / f"search{run}")
            study = tune(cfg, base_overrides=base)
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(params) == 4 and len(set(params)) == 4  # the continuation repeated none of the first two
