"""Honest model selection: k-fold cross-validation, rolling-origin backtests."""

import pandas as pd
import pytest
import torch

from dltemplate.data.tabular import TabularDataModule
from dltemplate.data.tensors import stratified_holdout
from dltemplate.train import run_metrics
from tests.datasets import mixed_frame, provide_task_data


def test_folds_are_stratified_disjoint_and_cover_every_training_row_once():
    labels = ["a"] * 50 + ["b"] * 31 + ["c"] * 19
    masks = torch.stack([stratified_holdout(labels, len(labels), seed=3, fold=k, folds=5) for k in range(5)])
    assert (masks.sum(dim=0) == 1).all()  # each row validates exactly once: disjoint folds that cover every row
    assert masks.sum(dim=1).tolist() == [20] * 5
    for label, count in (("a", 50), ("b", 31), ("c", 19)):
        per_fold = masks[:, [i for i, v in enumerate(labels) if v == label]].sum(dim=1)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == count  # each class in proportion
    other = torch.stack([stratified_holdout(labels, len(labels), seed=4, fold=k, folds=5) for k in range(5)])
    assert not torch.equal(masks, other)  # a new seed (a repeat) deals new folds


def test_each_fold_fits_its_preprocessing_on_its_training_part_only(tmp_path):
    frame = mixed_frame(300)
    path = tmp_path / "mixed.csv"
    frame.to_csv(path, index=False)
    settings = {"train_file": str(path), "target": "grade", "drop": ["price"], "id_column": "id", "folds": 4}
    seen = []
    for fold in range(4):
        dm = TabularDataModule(**settings, fold=fold)
        dm.setup("fit")
        rest, test = dm.split_frame(frame, 0.2)  # the test split, the same for every fold
        val = rest.iloc[dm.val_positions.numpy()]
        train = rest.drop(index=val.index)
        assert len(dm.train_set) == len(train) and len(dm.val_set) == len(val) and len(dm.test_set) == len(test)
        assert dm.encoder.stats["x1"]["mean"] == pytest.approx(train["x1"].mean())  # never the validation rows'
        seen += val.index.tolist()
    assert sorted(seen) == sorted(rest.index.tolist())


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
        assert (run / f"fold_{fold}" / "result.json").is_file() and (run / f"fold_{fold}" / "tensorboard").is_dir()
    oof = pd.read_csv(run / "oof_predictions.csv")
    assert sorted(oof["row"]) == list(range(len(oof)))  # every training row predicted once, by one fold
    assert {"fold", "target", "prediction", "prob_0", "prob_1"} <= set(oof.columns)
    assert oof["prob_0"].add(oof["prob_1"]).round(5).eq(1).all()
