"""Training end to end, in-process: every task runs, default tasks learn, runs resume and evaluate."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from dltemplate.callbacks.summary import COLUMNS
from dltemplate.checkpoint import load_checkpoint, restore
from dltemplate.config import compose_config
from dltemplate.errors import ConfigError
from dltemplate.evaluate import evaluate
from dltemplate.train import train
from tests.datasets import provide_task_data
from tests.helpers import CONFIG_DIR, TASKS, tensorboard_tags


@pytest.mark.slow  # trains full runs: in CI's slow pass, off the quick default run
@pytest.mark.parametrize("task", TASKS)
def test_fast_dev_run_every_task(make_cfg, tmp_path, task):
    overrides = provide_task_data(task, tmp_path / "data")
    result = train(make_cfg(f"task={task}", "debug=fast_dev_run", *overrides))
    tested = {k for k in result.metrics if k.startswith("test/") and "naive" not in k}
    assert tested and tested <= set(COLUMNS)  # every test metric has its HPARAMS column


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
def test_linear_regression_defaults_reach_the_noise_floor(make_cfg):
    result = train(make_cfg())  # the default task, default settings
    weight = load_checkpoint(result.best_checkpoint)["state_dict"]
    w, b = weight["net.weight"].squeeze(), weight["net.bias"].item()
    assert torch.allclose(w, torch.tensor([2.0, -3.0]), atol=0.1), w
    assert abs(b - 10.0) < 0.3, b
    assert result.metrics["test/mse"] <= 4.4  # noise variance 4.0


@pytest.fixture(scope="module")
def rings_run(tmp_path_factory):
    """A short run of the rings task (otherwise its default settings), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("rings")
    cfg = compose_config(
        CONFIG_DIR, ["task=rings", "trainer.max_epochs=3", f"paths.log_dir={tmp}"], output_dir=tmp / "run"
    )
    return train(cfg)


@pytest.mark.slow  # the full default run: half a minute on a CPU
def test_rings_defaults_approach_the_bayes_accuracy(tmp_path):
    cfg = compose_config(CONFIG_DIR, ["task=rings", f"paths.log_dir={tmp_path}"], output_dir=tmp_path / "run")
    result = train(cfg)
    assert result.metrics["test/acc"] >= 0.92  # Bayes limit ≈ 0.933
    assert result.metrics["test/auroc"] >= 0.97


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_tensorboard_shows_every_kind_of_record(rings_run):
    tags = tensorboard_tags(Path(rings_run.output_dir))  # events straight in the run directory
    assert {"train/loss", "train/loss_step", "train/lr", "train/epoch_s", "val/loss", "val/acc", "test/acc"} <= tags[
        "scalars"
    ]
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= tags["hparams"]
    assert {"val/acc_best", "val/loss_best"} <= tags["scalars"]  # the tested epoch's metrics beside the hparams
    assert not any(t.startswith("hp/") or t.startswith("lr-") or t.endswith("_epoch") for t in tags["scalars"])
    assert any(t.startswith("weights/net.") and not t.endswith("/grad") for t in tags["histograms"])
    assert any(t.startswith("weights/net.") and t.endswith("/grad") for t in tags["histograms"])
    assert any(t.endswith("/grad_norm") for t in tags["scalars"])
    assert "graph_def" in tags["graphs"]
    assert {"val/confusion_matrix", "val/roc", "val/precision_recall", "test/confusion_matrix"} <= tags["images"]
    assert "custom_scalars__config__" in tags["custom_scalars"]


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_epochs_count_from_0_in_checkpoint_names_figure_titles_and_curves(rings_run):
    import re

    from dltemplate import api
    from dltemplate.callbacks.schedule import EvaluationRecords

    best = int(re.fullmatch(r"epoch(\d{3})\.ckpt", Path(rings_run.best_checkpoint).name).group(1))
    figures = next(c for c in rings_run.trainer.callbacks if isinstance(c, EvaluationRecords))
    assert figures.best_epoch == best  # the test figures' title: "best checkpoint (epoch <best>)"
    table = api.history(rings_run.output_dir)
    assert list(table.index) == [0, 1, 2]  # trainer.max_epochs=3
    assert table.loc[best, "val/acc"] == pytest.approx(rings_run.metrics["val/acc_best"])
    figure = api.plot_metric(table, "acc")
    assert all(list(line.get_xdata()) == [0, 1, 2] for line in figure.axes[0].lines)
    assert "from 0" in figure.axes[0].get_xlabel()


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_best_and_last_checkpoints_load_as_plain_data(rings_run):
    checkpoints = Path(rings_run.output_dir) / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    best = load_checkpoint(rings_run.best_checkpoint)  # weights_only=True inside
    assert best["config"]["task_name"] == "rings"
    assert best["config"]["dims"] == {"in_features": 2, "num_classes": 2, "out_features": 1}


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_evaluate_scores_a_checkpoint_like_the_training_run_did(rings_run, tmp_path):
    cfg = compose_config(
        CONFIG_DIR, [f"ckpt_path={rings_run.best_checkpoint}"], output_dir=tmp_path, config_name="evaluate"
    )
    metrics = evaluate(cfg)
    assert metrics["test/acc"] == pytest.approx(rings_run.metrics["test/acc"], abs=1e-6)


def test_resume_continues_from_the_last_checkpoint(make_cfg):
    first = train(make_cfg("trainer.max_epochs=2", "test=false", run="first"))
    last = Path(first.output_dir) / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 2 * 10

    resumed = train(make_cfg("trainer.max_epochs=4", f"ckpt_path={last}", "test=false", run="first"))
    assert resumed.trainer.current_epoch == 4
    assert resumed.trainer.global_step == 4 * 10  # 320 training points / batch 32 = 10 steps an epoch


def test_a_finished_run_directory_is_never_overwritten(make_cfg):
    train(make_cfg("debug=limit_batches", run="same"))
    with pytest.raises(FileExistsError, match="already holds results of another run"):
        train(make_cfg("debug=limit_batches", run="same"))


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_same_seed_gives_the_same_metrics(make_cfg):
    a = train(make_cfg("debug=limit_batches", "trainer.deterministic=true", run="a"))
    b = train(make_cfg("debug=limit_batches", "trainer.deterministic=true", run="b"))
    assert a.metrics["test/mse"] == b.metrics["test/mse"]


def test_early_stopping_is_one_config_choice_away(make_cfg):
    cfg = make_cfg(
        "callbacks=[default,early_stopping]",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=1000",  # no epoch can improve by that much
        "trainer.max_epochs=20",
        "test=false",
    )
    result = train(cfg)
    assert result.trainer.current_epoch == 2  # stopped after one epoch without improvement


@pytest.mark.slow  # trains full runs: in CI's slow pass, off the quick default run
def test_last_checkpoint_is_rewritten_every_epoch_even_without_improvement(make_cfg):
    # lr=0: validation never improves after the first epoch, so only epoch 0 is "best"
    result = train(make_cfg("task=rings", "trainer.max_epochs=3", "module.optimizer.lr=0", "test=false"))
    checkpoints = Path(result.output_dir) / "checkpoints"
    assert load_checkpoint(checkpoints / "last.ckpt")["global_step"] == 3 * 50  # 3200 points / 64
    assert Path(result.best_checkpoint).name == "epoch000.ckpt"


def test_a_run_without_checkpoints(make_cfg):
    result = train(make_cfg("debug=limit_batches", "trainer.enable_checkpointing=false"))
    assert result.best_checkpoint is None and "test/mse" in result.metrics


@pytest.mark.slow  # compiling with inductor takes tens of seconds on a CPU
def test_a_compiled_run_leaves_plain_checkpoints_that_load_and_export(make_cfg, tmp_path):
    export = pytest.importorskip("dltemplate.extras.export", reason="export is an extra, not in this project").export

    result = train(make_cfg("task=rings", "compile=true", "debug=limit_batches"))
    checkpoint = load_checkpoint(result.best_checkpoint)
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])
    module, _, _ = restore(result.best_checkpoint, paths={"data_dir": str(tmp_path)})
    path, difference = export(module.eval(), checkpoint["example_input"], tmp_path / "rings.onnx", "onnx")
    assert path.is_file() and difference < 1e-4


class ThreadsSeen(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.threads = torch.get_num_threads()


def test_threads_hold_while_training_and_are_restored_after(make_cfg):
    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2
    seen = ThreadsSeen()
    train(make_cfg(f"threads={wanted}", "debug=fast_dev_run"), callbacks=[seen])
    assert seen.threads == wanted and torch.get_num_threads() == before
    with pytest.raises(ConfigError, match=r"threads must be null \(torch.s default\) or a positive number"):
        train(make_cfg("threads=0", "debug=fast_dev_run"))
