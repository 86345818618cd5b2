"""Honest model selection: k-fold cross-validation, rolling-origin backtests."""

import json
import logging
import re

import optuna
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from dltemplate.build import build_datamodule
from dltemplate.checkpoint import restore
from dltemplate.errors import ConfigError, DataError
from dltemplate.extras.backtest import origin_config
from dltemplate.extras.cv import fold_config
from dltemplate.extras.tune import tune
from dltemplate.rundir import read_result
from dltemplate.selection import Split, run_split, stratified_folds
from dltemplate.series.data.series import SeriesDataModule
from dltemplate.tabular.data.tabular import TabularDataModule
from dltemplate.train import main, run_metrics, train
from tests.datasets import mixed_frame, provide_task_data
from tests.helpers import CONFIG_DIR


def test_folds_are_stratified_disjoint_and_cover_every_training_row_once():
    labels = ["a"] * 50 + ["b"] * 31 + ["c"] * 19
    masks = torch.stack([Split(folds=5, fold=k, seed=3).validation_mask(labels, len(labels)) for k in range(5)])
    assert (masks.sum(dim=0) == 1).all()  # each row validates exactly once: disjoint folds that cover every row
    assert masks.sum(dim=1).tolist() == [20] * 5
    for label, count in (("a", 50), ("b", 31), ("c", 19)):
        per_fold = masks[:, [i for i, v in enumerate(labels) if v == label]].sum(dim=1)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == count  # each class in proportion
    other = torch.stack([Split(folds=5, fold=k, seed=4).validation_mask(labels, len(labels)) for k in range(5)])
    assert not torch.equal(masks, other)  # a new seed (a repeat) deals new folds


def test_the_fold_assignment_is_the_one_earlier_versions_dealt():
    labels = list("aabbbcaabbcabcab")  # dealt by data.folds=3, data.fold_seed=7 before folds left the data modules
    assert stratified_folds(labels, len(labels), folds=3, seed=7).tolist() == [
        1, 2, 0, 2, 1, 2, 1, 0, 0, 0, 1, 2, 2, 0, 0, 1
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("folds", "fold", "message"),
    [(1, 0, "cv.folds >= 2"), (3, 3, "0 <= cv.fold < cv.folds"), (3, -1, "cv.fold=-1"), (2.5, 0, "whole numbers")],
)
def test_a_split_outside_its_folds_is_one_config_error(folds, fold, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Split(folds=folds, fold=fold)


def test_each_fold_fits_its_preprocessing_on_its_training_part_only(tmp_path):
    frame = mixed_frame(300)
    path = tmp_path / "mixed.csv"
    frame.to_csv(path, index=False)
    settings = {"train_file": str(path), "target": "grade", "drop": ["price"], "id_column": "id"}
    seen = []
    for fold in range(4):
        dm = TabularDataModule(**settings)
        dm.use_split(Split(folds=4, fold=fold))
        dm.setup("fit")
        rest, test = dm.split_frame(frame, 0.2)  # the test split, the same for every fold
        val = rest.iloc[dm.val_positions.numpy()]
        train = rest.drop(index=val.index)
        assert len(dm.train_set) == len(train) and len(dm.val_set) == len(val) and len(dm.test_set) == len(test)
        assert dm.encoder.stats["x1"]["mean"] == pytest.approx(train["x1"].mean())  # never the validation rows'
        seen += val.index.tolist()
    assert sorted(seen) == sorted(rest.index.tolist())


def test_one_fold_s_run_validates_on_that_fold_and_the_old_data_keys_still_say_so(make_cfg, tmp_path, caplog):
    provide_task_data("titanic", tmp_path / "data")
    explicit = build_datamodule(make_cfg("task=titanic", "cv.folds=3", "cv.fold=1", "cv.seed=5"))
    assert explicit.given_split == Split(folds=3, fold=1, seed=5)
    rows = len(explicit.train_set) + len(explicit.val_set)
    assert len(explicit.val_set) in (rows // 3, rows // 3 + 1)  # a third of the rows, not data.val_fraction's

    repeated = fold_config(make_cfg("task=titanic", "cv.folds=3", "cv.repeats=2", "cv.seed=4"), fold=1, repeat=1)
    assert (repeated.cv.folds, repeated.cv.fold, repeated.cv.seed) == (3, 1, 5)  # the fold's run says which rows
    assert torch.equal(build_datamodule(repeated).val_positions, explicit.val_positions)

    old = make_cfg("task=titanic", "+data.folds=3", "+data.fold=1", "+data.fold_seed=5")  # an earlier version's keys
    with caplog.at_level(logging.WARNING):
        dm = build_datamodule(old)
    assert "data.folds, data.fold, data.fold_seed are no longer data settings: use cv.folds=3 cv.fold=1 cv.seed=5" in (
        caplog.text
    )
    assert "folds" not in old.data and (old.cv.folds, old.cv.fold, old.cv.seed) == (3, 1, 5)
    assert torch.equal(dm.val_positions, explicit.val_positions)
    ignored = make_cfg("task=titanic", "cv.folds=4", "+data.folds=3")  # a cross-validation: cv.folds decides
    run_split(ignored)
    assert "folds" not in ignored.data and (ignored.cv.folds, ignored.cv.fold) == (4, None)


def test_a_checkpoint_of_an_earlier_version_s_fold_run_restores(make_cfg, tmp_path):
    provide_task_data("titanic", tmp_path / "data")
    result = train(make_cfg("task=titanic", "cv.folds=3", "cv.fold=2", "debug=limit_batches"))
    assert result.datamodule.given_split == Split(folds=3, fold=2)
    checkpoint = torch.load(result.best_checkpoint, weights_only=True)
    checkpoint["config"]["data"].update(folds=3, fold=2, fold_seed=0)  # as fold runs wrote them before
    torch.save(checkpoint, tmp_path / "old.ckpt")
    _, datamodule, _ = restore(tmp_path / "old.ckpt", paths={"data_dir": str(tmp_path / "data")})
    assert datamodule.classes == result.datamodule.classes and "folds" not in datamodule.hparams


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
def test_cross_validation_runs_every_fold_and_summarises_them(make_cfg, tmp_path):
    provide_task_data("titanic", tmp_path / "data")
    cfg = make_cfg("task=titanic", "cv.folds=3", "trainer.max_epochs=1", "callbacks.histograms=null")
    metrics = run_metrics(cfg)
    run = tmp_path / "run"
    summary = pd.read_csv(run / "cv_summary.csv")
    assert summary["fold"].astype(str).tolist() == ["0", "1", "2", "mean", "sd"]
    accuracy = summary["test/acc"]
    assert accuracy[3] == pytest.approx(accuracy[:3].mean()) and accuracy[4] == pytest.approx(accuracy[:3].std())
    assert metrics["val/loss_best"] == pytest.approx(summary["val/loss_best"][3])
    for fold in range(3):
        assert (run / f"fold_{fold}" / "result.json").is_file() and any(
            (run / f"fold_{fold}").glob("events.out.tfevents.*")
        )
    oof = pd.read_csv(run / "oof_predictions.csv")
    assert sorted(oof["row"]) == list(range(len(oof)))  # every training row predicted once, by one fold
    assert {"fold", "target", "prediction", "prob_0", "prob_1"} <= set(oof.columns)
    assert oof["prob_0"].add(oof["prob_1"]).round(5).eq(1).all()


def test_backtest_origins_never_see_their_targets(make_cfg, tmp_path):
    n = 60
    path = tmp_path / "counter.csv"
    pd.DataFrame({"v": range(1, n + 1)}).to_csv(path, index=False)  # the value at step t is t + 1
    cfg = make_cfg("task=series", f"data.file={path}", "backtest.origins=3", "backtest.step=5", "data.window=6")
    for origin in range(3):
        data = origin_config(cfg, origin).data
        dm = SeriesDataModule(**{k: v for k, v in data.items() if k != "_target_"})
        dm.setup("fit")
        end = n - (2 - origin) * 5  # this origin's last test target is step end - 1
        test_start = end - data.test_steps

        def steps(*tensors: torch.Tensor, scale: float = dm.scale[0]) -> torch.Tensor:  # the steps they hold
            return (torch.cat([t.flatten() for t in tensors]) * scale).round().long() - 1

        assert steps(*dm.test_set.tensors).max() == end - 1 and steps(dm.test_set.tensors[1]).min() == test_start
        assert steps(*dm.train_set.tensors).max() < test_start - data.val_steps  # training never reaches them
        assert steps(*dm.val_set.tensors).max() < test_start
        assert len(dm.series) == end  # nothing after the origin's targets is read at all


def test_a_backtest_longer_than_the_series_says_which_origin_ran_out(make_cfg, tmp_path):
    provide_task_data("covid", tmp_path / "data")
    with pytest.raises(DataError, match=r"backtest origin 0 \(the last 28 steps cut off\).*lower backtest.origins"):
        run_metrics(make_cfg("task=covid", "backtest.origins=5"))  # 46 days: 4 x 7 cut off leave too few


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
def test_backtest_writes_each_origin_beside_the_naive_forecasts(make_cfg, tmp_path):
    provide_task_data("covid", tmp_path / "data")
    cfg = make_cfg("task=covid", "backtest.origins=2", "trainer.max_epochs=1")
    objective = main(cfg)  # what a sweep gets: the mean of the monitored metric's best over the origins
    metrics = read_result(tmp_path / "run")["metrics"]
    summary = pd.read_csv(tmp_path / "run" / "backtest_summary.csv")
    assert objective == pytest.approx(summary["val/mae_best"][:2].mean())
    assert summary["origin"].astype(str).tolist() == ["0", "1", "mean", "sd"]
    assert {"test/mae", "test/rel_mae", "test/naive_mae", "test/snaive_mae", "first_target"} <= set(summary.columns)
    assert summary["first_target"][0] < summary["first_target"][1]  # the earlier origin forecasts earlier days
    assert metrics["test/rel_mae"] == pytest.approx(summary["test/rel_mae"][:2].mean())


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_hopeless_trial_is_pruned_and_recorded_as_pruned(tmp_path, n_jobs):
    provide_task_data("titanic", tmp_path / "data")
    base = [
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "task=titanic",
        "hparams_search=titanic_optuna",
        "trainer.max_epochs=4",
        "callbacks.histograms=null",
        "optuna.pruner.n_startup_trials=1",
        "optuna.pruner.n_warmup_steps=0",
        f"optuna.n_jobs={n_jobs}",
    ]
    storage = f"sqlite:///{tmp_path / 'logs' / 'titanic' / 'optuna.db'}"
    (tmp_path / "logs" / "titanic").mkdir(parents=True)
    seeded = optuna.create_study(study_name="titanic_search", storage=storage, direction="minimize")
    good = {"module.optimizer.weight_decay": 1e-4, "net.dropout": 0.0, "net.hidden": "[64,32]"}
    if n_jobs == 1:  # (enqueued trials race between threads: optuna hands one to two threads)
        seeded.enqueue_trial({**good, "module.optimizer.lr": 3e-2})
        seeded.enqueue_trial({**good, "module.optimizer.lr": 1e-7})  # learns nothing: pruned after its first epoch
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*base, f"optuna.n_trials={2 if n_jobs == 1 else 3}"])
        cfg.paths.output_dir = str(tmp_path / "search")
        study = tune(cfg, base_overrides=base)
    trials = pd.read_csv(tmp_path / "search" / "trials.csv")
    if n_jobs == 1:
        assert trials["state"].tolist() == ["COMPLETE", "PRUNED"]
        (record,) = (tmp_path / "search").glob("trial_001*/result.json")  # the name ends with the trial's values
        pruned = json.loads(record.read_text())
        assert pruned["status"] == "pruned" and "test/acc" in pruned["metrics"]  # stopped, yet tested and recorded
        assert len(study.trials[1].intermediate_values) < 4
    else:
        assert len(trials) == 3 and "FAIL" not in trials["state"].tolist()  # two trials at a time, in threads


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("task=covid", "cv.folds=3"), "cv.folds needs a data module that takes a validation split"),
        (("task=covid", "cv.folds=3", "cv.fold=1"), "cv.fold=1 needs a data module that takes a validation split"),
        (("task=titanic", "cv.fold=1"), "cv.fold=1 picks one fold of cv.folds: set cv.folds too"),
        (("task=titanic", "backtest.origins=3"), "backtest.origins needs a data module with data.cutoff"),
    ],
)
def test_model_selection_refuses_a_family_it_does_not_fit(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_metrics(make_cfg(*overrides))


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
@pytest.mark.parametrize("task", ["images", "text"])
def test_images_and_texts_cross_validate_too(make_cfg, tmp_path, task):
    overrides = provide_task_data(task, tmp_path / "data")
    run_metrics(make_cfg(f"task={task}", *overrides, "cv.folds=2", "trainer.max_epochs=1", "callbacks.histograms=null"))
    summary = pd.read_csv(tmp_path / "run" / "cv_summary.csv")
    oof = pd.read_csv(tmp_path / "run" / "oof_predictions.csv")
    assert summary["fold"].astype(str).tolist() == ["0", "1", "mean", "sd"] and "test/acc" in summary
    assert sorted(oof["row"]) == list(range(len(oof))) and set(oof["fold"]) == {0, 1}
