"""Tuner presets (lr_find, batch_size), weight averaging callbacks (EMA, SWA) and debug presets run on a tiny task."""

import json

import pytest
from lightning.pytorch.callbacks import EMAWeightAveraging, StochasticWeightAveraging

from dltemplate.checkpoint import load_checkpoint
from dltemplate.train import train
from tests.datasets import provide_task_data
from tests.helpers import tensorboard_tags

TINY = ("task=titanic", "trainer.max_epochs=2", "callbacks.histograms=null")


@pytest.fixture
def titanic(make_cfg, tmp_path):
    provide_task_data("titanic", tmp_path / "data")
    return lambda *overrides: make_cfg(*TINY, *overrides)


@pytest.mark.slow  # trains full runs: in CI's slow pass, off the quick default run
def test_lr_find_uses_and_records_its_suggestion(titanic, tmp_path):
    result = train(titanic("tuner=lr_find", "tuner.num_training=30"))
    run = tmp_path / "run"
    suggested = json.loads((run / "result.json").read_text())["tuned"]["lr"]
    assert result.tuned["lr"] == suggested and suggested != 3e-3  # not the configured rate
    assert (run / "lr_find.png").stat().st_size > 0 and "tuner/lr_find" in tensorboard_tags(run)["images"]
    assert result.module.optimizer_spec["lr"] == suggested and result.trainer.current_epoch == 2  # then the full fit
    assert result.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(suggested)
    assert load_checkpoint(result.best_checkpoint)["config"]["module"]["optimizer"]["lr"] == suggested


@pytest.mark.slow  # trains full runs: in CI's slow pass, off the quick default run
def test_lr_find_suggestion_reaches_a_schedule_that_interpolates_the_rate(titanic):
    schedule = "+module.scheduler={_target_: torch.optim.lr_scheduler.OneCycleLR, max_lr: ${module.optimizer.lr}}"
    result = train(titanic("tuner=lr_find", "tuner.num_training=30", schedule, "module.scheduler_interval=step"))
    assert result.module.scheduler_spec["max_lr"] == result.tuned["lr"] == result.module.hparams.scheduler["max_lr"]


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
def test_batch_size_finder_sets_and_records_the_batch_size(titanic, tmp_path):
    result = train(titanic("tuner=batch_size", "tuner.max_trials=3", "tuner.steps_per_trial=1"))
    chosen = json.loads((tmp_path / "run" / "result.json").read_text())["tuned"]["batch_size"]
    assert chosen == result.datamodule.batch_size == 8  # 2, 4, 8: three trials, all of which fit


@pytest.mark.slow  # trains full runs: in CI's slow pass, off the quick default run
@pytest.mark.parametrize(("choice", "kind"), [("ema", EMAWeightAveraging), ("swa", StochasticWeightAveraging)])
def test_weight_averaging_is_a_callback_choice(titanic, choice, kind):
    result = train(titanic(f"callbacks=[default,{choice}]", "callbacks.histograms=null", "trainer.max_epochs=3"))
    assert any(isinstance(c, kind) for c in result.trainer.callbacks) and "test/acc" in result.metrics


@pytest.mark.slow  # trains full runs: in CI's slow pass, off the quick default run
@pytest.mark.parametrize("preset", ["overfit", "profile", "anomaly"])
def test_debug_presets_run(titanic, tmp_path, preset):
    result = train(titanic(f"debug={preset}", "trainer.max_epochs=2"))
    assert "train/loss" in result.metrics
    if preset == "overfit":
        assert result.trainer.overfit_batches == 2
    if preset == "profile":
        assert list((tmp_path / "run" / "profiler" / "traces").glob("*.pt.trace.json"))
    if preset == "anomaly":
        assert result.trainer._detect_anomaly
