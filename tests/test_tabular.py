"""Tabular task: CSV reading, encoding fitted on training rows, Titanic end to end, predict, bad input."""

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pandas as pd
import pytest

from dltemplate.config import compose_config
from dltemplate.data.download import ensure_file
from dltemplate.data.table_encoder import MISSING, UNKNOWN
from dltemplate.data.tabular import TabularDataModule
from dltemplate.predict import predict
from dltemplate.train import train
from tests.datasets import mixed_frame, provide_task_data, write_titanic
from tests.helpers import CONFIG_DIR, tensorboard_tags


@pytest.fixture(scope="module")
def titanic_run(tmp_path_factory):
    """The titanic task, default settings, trained on Titanic-shaped generated CSVs."""
    tmp = tmp_path_factory.mktemp("titanic")
    write_titanic(tmp / "data" / "titanic")
    cfg = compose_config(
        CONFIG_DIR, ["task=titanic", f"paths.data_dir={tmp / 'data'}", f"paths.log_dir={tmp}"], output_dir=tmp / "run"
    )
    return train(cfg), tmp


def test_titanic_learns_and_draws_its_figures(titanic_run):
    result, _ = titanic_run
    assert result.metrics["test/acc"] > 0.8  # the generated survival rule is learnable; chance is ≈0.6
    tags = tensorboard_tags(Path(result.output_dir))
    assert {"val/confusion_matrix", "val/roc"} <= tags["images"]


def test_predict_from_checkpoint_and_raw_csv_reproduces_the_test_accuracy(titanic_run, tmp_path):
    result, tmp = titanic_run
    test = pd.read_csv(tmp / "data" / "titanic" / "test.csv")
    test.drop(columns="Survived").to_csv(tmp_path / "raw.csv", index=False)
    cfg = compose_config(
        CONFIG_DIR,
        [f"ckpt_path={result.best_checkpoint}", f"input={tmp_path / 'raw.csv'}", f"output={tmp_path / 'out.csv'}"],
        output_dir=tmp_path,
        config_name="predict",
    )
    predict(cfg)
    table = pd.read_csv(tmp_path / "out.csv")
    assert list(table.columns) == ["PassengerId", "prediction", "prob_0", "prob_1"]
    assert table["PassengerId"].tolist() == test["PassengerId"].tolist()
    assert ((table["prob_0"] + table["prob_1"]) - 1).abs().max() < 1e-6
    accuracy = (table["prediction"] == test["Survived"]).mean()
    assert accuracy == pytest.approx(result.metrics["test/acc"], abs=1e-6)

    with pytest.raises(FileExistsError, match="already exists"):
        predict(cfg)  # never overwrites an earlier prediction file


def datamodule(tmp_path: Path, frame: pd.DataFrame, **kwargs) -> TabularDataModule:
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    return TabularDataModule(
        train_file=str(path), **{"target": "grade", "drop": ["price"], "id_column": "id", **kwargs}
    )


def test_encoding_statistics_come_from_the_training_split_only(tmp_path):
    frame = mixed_frame(400)
    dm = datamodule(tmp_path, frame)
    dm.setup("fit")
    train_rows, _ = dm.split_frame(dm.split_frame(frame, 0.2)[0], 0.2)  # test split, then validation split
    assert len(dm.train_set) == len(train_rows)
    assert dm.encoder.stats["x1"]["mean"] == pytest.approx(train_rows["x1"].mean())
    assert dm.encoder.stats["x1"]["mean"] != pytest.approx(frame["x1"].mean())
    assert dm.encoder.indicators == ["x1"]  # x1 has missing values in training, x2 does not


def test_stratified_splits_keep_the_class_balance(tmp_path):
    dm = datamodule(tmp_path, mixed_frame(500))
    dm.setup("fit")
    for split in (dm.val_set, dm.test_set):
        train_share = dm.train_set.tensors[1].bincount() / len(dm.train_set)
        share = split.tensors[1].bincount(minlength=3) / len(split)
        assert (share - train_share).abs().max() < 0.03


def test_unseen_rare_and_missing_categories_get_their_own_codes(tmp_path):
    frame = mixed_frame(300)
    frame.loc[:9, "color"] = "purple"  # 10 rows: rarer than min_category_count
    dm = datamodule(tmp_path, frame, min_category_count=20)
    dm.setup("fit")
    rows = pd.DataFrame({"x1": [0.0] * 4, "x2": [0.0] * 4, "color": ["red", "purple", "teal", None]})  # no id needed
    codes = dm.encoder.transform(rows, "rows")[:, -1].tolist()  # the category code is the last column
    assert codes[0] >= 2  # a known category
    assert codes[1:] == [UNKNOWN, UNKNOWN, MISSING]  # rare, unseen, missing


@pytest.mark.parametrize("task", ["tabular", "tabular_regression"])
def test_any_csv_trains_by_configuration_alone(make_cfg, tmp_path, task):
    overrides = provide_task_data(task, tmp_path / "data")
    result = train(make_cfg(f"task={task}", *overrides))  # the task's defaults
    if task == "tabular":  # three classes; chance ≈ 0.4
        assert result.metrics["test/acc"] > 0.7
        assert result.trainer.datamodule.class_names == ["high", "low", "mid"]
    else:  # price ≈ 1000 ± 400: metrics are on the price scale, not the standardised one
        assert result.metrics["test/r2"] > 0.9
        assert result.metrics["test/mae"] < 100


def serve_folder(folder: Path):
    """A loopback HTTP server for `folder`; returns (base URL, shutdown function)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server.shutdown


@pytest.mark.parametrize("scheme", ["file", "http"])
def test_missing_files_are_downloaded_and_checked(tmp_path, scheme):
    source = write_titanic(tmp_path / "public")
    md5 = hashlib.md5((source / "train.csv").read_bytes()).hexdigest()
    if scheme == "file":
        url, stop = (source / "train.csv").as_uri(), lambda: None
    else:
        base, stop = serve_folder(source)
        url = f"{base}/train.csv"
    try:
        path = ensure_file(tmp_path / "data" / "titanic" / "train.csv", url, md5, "titanic/train.csv")
    finally:
        stop()
    assert path.read_bytes() == (source / "train.csv").read_bytes()
    assert not path.with_name("train.csv.part").exists()


def test_failed_download_says_where_and_leaves_nothing(tmp_path):
    source = write_titanic(tmp_path / "public")
    target = tmp_path / "data" / "train.csv"
    with pytest.raises(FileNotFoundError, match=r"train\.csv does not exist and downloading .* failed"):
        ensure_file(target, (source / "train.csv").as_uri(), "0" * 32, "titanic/train.csv")  # wrong checksum
    assert not target.exists() and not target.with_name("train.csv.part").exists()
    with pytest.raises(FileNotFoundError, match=r"expected layout: titanic/train\.csv"):
        ensure_file(target, "http://127.0.0.1:9/train.csv", None, "titanic/train.csv")  # nothing listens there
    with pytest.raises(FileNotFoundError, match=r"train\.csv does not exist; expected layout"):
        ensure_file(target, None, None, "titanic/train.csv")


def test_titanic_without_data_or_network_fails_with_one_clear_message(make_cfg):
    cfg = make_cfg(
        "task=titanic", "data.download.train_file.url=http://127.0.0.1:9/train.csv", "data.download.test_file=null"
    )
    with pytest.raises(FileNotFoundError, match=r"titanic/train\.csv does not exist and downloading"):
        train(cfg)


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "message"),
    [
        (lambda f: f.drop(columns="grade"), {}, KeyError, r"target column 'grade' is not in .*table\.csv"),
        (lambda f: f, {"categorical": ["colour"]}, KeyError, r"column\(s\) \['colour'\] that .*table\.csv does not"),
        (lambda f: f.head(0), {}, ValueError, "has a header but no rows"),
        (lambda f: f.assign(grade="mid"), {}, ValueError, "single class"),
        (
            lambda f: f.assign(x2=f["x2"].astype(object).where(f.index != 7, "abc")),
            {},
            ValueError,
            r"'x2' .* row 7 holds 'abc'",
        ),
    ],
    ids=["missing-target", "unknown-column", "no-rows", "single-class", "non-numeric"],
)
def test_bad_training_tables_get_one_clear_error(tmp_path, change, kwargs, error, message):
    dm = datamodule(tmp_path, change(mixed_frame(200)), **kwargs)
    with pytest.raises(error, match=message):
        dm.setup("fit")


def test_an_empty_file_is_named(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    dm = TabularDataModule(train_file=str(tmp_path / "empty.csv"), target="grade")
    with pytest.raises(ValueError, match=r"empty\.csv is empty"):
        dm.setup("fit")


def test_prediction_rows_missing_a_feature_column_are_refused(tmp_path):
    dm = datamodule(tmp_path, mixed_frame(200))
    dm.setup("fit")
    dm.predict_input = mixed_frame(5).drop(columns=["grade", "x2"])
    with pytest.raises(KeyError, match=r"lacks the feature column\(s\) \['x2'\]"):
        dm.setup("predict")
