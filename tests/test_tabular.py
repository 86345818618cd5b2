"""Tabular task: CSV reading, encoding fitted on training rows, Titanic end to end, predict, bad input."""

import functools
import hashlib
import http.server
import logging
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch import Trainer

from dltemplate.checkpoint import restore
from dltemplate.config import compose_config
from dltemplate.data.csv_files import read_csv
from dltemplate.data.download import ensure_file
from dltemplate.data.table_columns import date_format
from dltemplate.data.table_encoder import MISSING, UNKNOWN
from dltemplate.errors import ConfigError, DataError, MissingFileError
from dltemplate.evaluate import evaluate
from dltemplate.predict import predict
from dltemplate.tabular.data.tabular import TabularDataModule
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


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_titanic_learns_and_draws_its_figures(titanic_run):
    result, _ = titanic_run
    assert result.metrics["test/acc"] > 0.8  # the generated survival rule is learnable; chance is ≈0.6
    tags = tensorboard_tags(Path(result.output_dir))
    assert {"val/confusion_matrix", "val/roc"} <= tags["images"]


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
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


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_predicting_rows_that_have_the_target_keeps_every_column_on_request_and_logs_the_score(
    titanic_run, tmp_path, caplog
):
    result, tmp = titanic_run
    test = pd.read_csv(tmp / "data" / "titanic" / "test.csv")  # with its Survived column
    caplog.set_level(logging.INFO, logger="dltemplate.predict")
    keep_all = ["keep=all", f"output={tmp_path / 'out.csv'}"]
    cfg = compose_config(
        CONFIG_DIR,
        [f"ckpt_path={result.best_checkpoint}", f"input={tmp / 'data' / 'titanic' / 'test.csv'}", *keep_all],
        output_dir=tmp_path,
        config_name="predict",
    )
    table = predict(cfg)
    assert list(table.columns) == [*test.columns, "prediction", "prob_0", "prob_1"]
    assert table.attrs["metrics"]["acc"] == pytest.approx(result.metrics["test/acc"], abs=1e-6)
    assert table.attrs["metrics"]["rows"] == len(test)
    assert "the input has the target column 'Survived': acc " in caplog.text


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_predictions_keep_the_columns_that_identify_rows_or_their_position(make_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dltemplate.predict")
    frame = mixed_frame(200)  # `id` (row0, row1, ...): left out as free text or an id, and a key
    frame.to_csv(tmp_path / "t.csv", index=False)
    overrides = [f"data.train_file={tmp_path / 't.csv'}", "data.target=price", "data.drop=[grade]"]
    result = train(make_cfg("task=tabular_regression", "trainer.max_epochs=1", "test=false", *overrides))

    def predict_file(frame: pd.DataFrame, name: str, *extra: str) -> pd.DataFrame:
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        extra = (*extra, f"output={tmp_path / name}.out")
        cfg = compose_config(
            CONFIG_DIR,
            [f"ckpt_path={result.best_checkpoint}", f"input={tmp_path / name}.csv", *extra],
            output_dir=tmp_path / name,
            config_name="predict",
        )
        return predict(cfg)

    table = predict_file(frame.iloc[:50], "with_target")  # the target is there: scored
    assert list(table.columns) == ["id", "prediction"] and table["id"].tolist() == frame["id"][:50].tolist()
    assert set(table.attrs["metrics"]) == {"mae", "rmse", "r2", "rows"} and table.attrs["metrics"]["rows"] == 50
    assert "the input has the target column 'price': mae " in caplog.text
    table = predict_file(frame.iloc[50:60].drop(columns=["id", "price"]), "no_key")  # nothing identifies a row
    assert list(table.columns) == ["row", "prediction"] and table["row"].tolist() == list(range(10))
    assert "metrics" not in table.attrs
    table = predict_file(frame.iloc[:5], "none", "keep=none")
    assert list(table.columns) == ["prediction"]


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


@pytest.mark.slow  # several seconds: CI runs it, `pytest` alone skips it
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
        (lambda f: f.assign(x2=f["x2"].where(f.index != 7, -np.inf)), {}, DataError, r"'x2' of .* -inf in row 7"),
        (
            lambda f: f,
            {"derived": {"y": {"_target_": "dltemplate.data.features.add_columns", "columns": ["x1", "x9"]}}},
            KeyError,
            r"derived column 'y' cannot be computed from .*table\.csv, which lacks a column it needs \(.*x9",
        ),
        (
            lambda f: f.assign(price=f["price"].where(f.index != 9, np.inf)),
            {"target": "price", "task": "regression", "drop": ["grade"]},
            DataError,
            r"'price' of .* inf in row 9",
        ),
    ],
    ids=[
        "missing-target",
        "unknown-column",
        "no-rows",
        "single-class",
        "non-numeric",
        "infinite",
        "derived",
        "infinite-target",
    ],
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
    dm.use_predict_input(mixed_frame(5).drop(columns=["grade", "x2"]))
    with pytest.raises(KeyError, match=r"lacks the feature column\(s\) \['x2'\]"):
        dm.setup("predict")


@pytest.mark.parametrize("sep", [",", "\t", ";", "|"])
def test_the_separator_is_detected_among_the_common_ones(tmp_path, sep):
    frame = mixed_frame(30).assign(note="a, b; c")  # other separators inside a quoted field
    frame.to_csv(tmp_path / "t.csv", sep=sep, index=False)
    read = read_csv(tmp_path / "t.csv")
    assert list(read.columns) == list(frame.columns) and len(read) == 30


def test_a_one_column_file_keeps_its_column(tmp_path):
    (tmp_path / "t.csv").write_text("text\nthe plot\nlovely acting\n")
    assert read_csv(tmp_path / "t.csv")["text"].tolist() == ["the plot", "lovely acting"]


def test_bytes_that_are_not_utf8_are_replaced_and_counted_once(tmp_path, caplog):
    frame = mixed_frame(200)
    frame.to_csv(tmp_path / "table.csv", index=False)
    data = (tmp_path / "table.csv").read_bytes().replace(b"red", b"r\xe9d")  # Latin-1 é
    (tmp_path / "table.csv").write_bytes(data)
    dm = TabularDataModule(train_file=str(tmp_path / "table.csv"), target="grade", drop=["price"], id_column="id")
    dm.setup("fit")
    warnings = [r.message for r in caplog.records if "not valid UTF-8" in r.message]
    count = data.count(b"\xe9")
    assert len(warnings) == 1 and f"{count} byte sequence(s) were replaced" in warnings[0]
    assert "r\ufffdd" in dm.encoder.vocab["color"]


@pytest.mark.parametrize(
    ("text", "header", "why"),
    [
        ("ham\tGo until jurong point\nham\tOk lar\nspam\tFree entry\nham\tU dun say\n", False, "'ham', a value"),
        ("1.5,2,3\n2.5,3,4\n3.1,4,5\n", False, "the number '1.5'"),
        ("2020-01-01,5\n2020-01-02,6\n2020-01-03,7\n", False, "the date '2020-01-01'"),
        ("pos,A film I would watch again and again with all of my friends\nneg,dull\nneg,awful\n", False, "sentence"),
        ("label\ttext\nham\tGo until jurong point\nham\tOk lar\nspam\tFree entry\n", True, "read as names"),
        ("PassengerId,Survived\n1,0\n2,1\n3,1\n", True, "'PassengerId' is a name over a column of numbers"),
        ("country,2019,2020\nFrance,1,2\nSpain,3,4\n", True, "'country' read as names"),
    ],
    ids=["label-tsv", "numbers", "dates", "sentences", "named-tsv", "named-numbers", "year-names"],
)
def test_a_first_row_that_looks_like_data_is_not_taken_for_a_header(tmp_path, text, header, why):
    (tmp_path / "t.csv").write_text(text)
    rows = text.count("\n")
    read = read_csv(tmp_path / "t.csv", header=None)
    assert read.attrs["header"][0] is header and why in read.attrs["header"][1]
    assert len(read) == (rows - 1 if header else rows)
    if not header:  # named by position, as text: data.label_column=0 names the first
        assert list(read.columns) == [str(i) for i in range(read.shape[1])]
    forced = read_csv(tmp_path / "t.csv", header=not header)  # an explicit setting wins
    assert len(forced) == (rows if header else rows - 1) and forced.attrs["header"] == (not header, "explicit")


def test_a_headerless_table_trains_with_its_target_named_by_position(tmp_path):
    frame = mixed_frame(120)[["x2", "x1", "price"]]
    frame.to_csv(tmp_path / "t.csv", index=False, header=False)
    dm = TabularDataModule(train_file=str(tmp_path / "t.csv"), target=2, task="regression")  # data.target=2
    dm.setup("fit")
    assert dm.hparams.header is False and "no header row" in dm.inferred["header"].reason
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 120  # the first row is data, not lost
    assert dm.hparams.target == "2" and dm.hparams.numeric == ["0", "1"]


def test_a_missing_or_empty_csv_is_one_clear_error(tmp_path):
    with pytest.raises(MissingFileError, match=r"nothing\.csv does not exist"):
        read_csv(tmp_path / "nothing.csv")
    (tmp_path / "blank.csv").write_text("\n\n")
    with pytest.raises(DataError, match=r"blank\.csv is empty"):
        read_csv(tmp_path / "blank.csv")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match=r"ragged\.csv does not read as a table separated by ','.*line 3"):
        read_csv(tmp_path / "ragged.csv")


def with_empty_target(frame: pd.DataFrame, rows: list[int], column: str = "grade") -> pd.DataFrame:
    return frame.assign(**{column: frame[column].where(~frame.index.isin(rows))})


@pytest.mark.parametrize("target", ["grade", "price"])
def test_rows_without_a_target_are_dropped_and_counted_per_file(tmp_path, caplog, target):
    with_empty_target(mixed_frame(200), list(range(0, 120, 10)), target).to_csv(tmp_path / "train.csv", index=False)
    with_empty_target(mixed_frame(60, seed=1), [3, 4, 5], target).to_csv(tmp_path / "test.csv", index=False)
    other = "price" if target == "grade" else "grade"
    dm = TabularDataModule(
        train_file=str(tmp_path / "train.csv"),
        test_file=str(tmp_path / "test.csv"),
        target=target,
        drop=[other],
        id_column="id",
        task="classification" if target == "grade" else "regression",
    )
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 188 and len(dm.test_set) == 57
    dropped = [r.message for r in caplog.records if r.message.startswith("dropped")]
    assert dropped == [
        f"dropped 12 rows of {tmp_path / 'train.csv'} whose target '{target}' is empty",
        f"dropped 3 rows of {tmp_path / 'test.csv'} whose target '{target}' is empty",
    ]


def test_rows_without_a_target_can_be_refused_with_the_whole_files_count(tmp_path):
    dm = datamodule(tmp_path, with_empty_target(mixed_frame(200), list(range(0, 120, 10))), missing_target="error")
    with pytest.raises(
        DataError, match=r"^12 rows of .*table\.csv have an empty target 'grade' \(the first is row 0\)"
    ):
        dm.setup("fit")
    with pytest.raises(ConfigError, match="missing_target must be 'drop' or 'error'"):
        datamodule(tmp_path, mixed_frame(20), missing_target="keep")


def test_infinite_prediction_values_are_imputed_like_missing_ones_with_one_warning(tmp_path, caplog):
    dm = datamodule(tmp_path, mixed_frame(200))
    dm.setup("fit")
    rows = mixed_frame(8, seed=3).drop(columns=["grade"])
    infinite = rows.assign(x1=rows["x1"].where(~rows.index.isin([1, 2]), np.inf))
    infinite.loc[3, "x2"] = -np.inf
    infinite.to_csv(tmp_path / "new.csv", index=False)
    dm.use_predict_input(str(tmp_path / "new.csv"))
    dm.setup("predict")
    encoded = dm.predict_set.tensors[0]
    missing = infinite.replace([np.inf, -np.inf], np.nan)
    assert torch.isfinite(encoded).all()
    assert torch.equal(encoded, dm.encoder.transform(missing, "rows"))  # imputed, indicator set
    warnings = [r.message for r in caplog.records if "infinite" in r.message]
    assert len(warnings) == 1
    assert "column 'x1', 2 row(s): 1, 2; column 'x2', 1 row(s): 3" in warnings[0] and "new.csv" in warnings[0]


def test_a_split_left_empty_by_tiny_data_is_named_with_its_fraction(tmp_path):
    tiny = mixed_frame(200).iloc[:3].assign(grade=["low", "mid", "low"])
    with pytest.raises(DataError, match=r"table\.csv: 3 rows with data\.test_fraction=0\.2 leave the test split empty"):
        datamodule(tmp_path, tiny).setup("fit")
    mixed_frame(20).to_csv(tmp_path / "test.csv", index=False)
    dm = datamodule(tmp_path, tiny, test_file=str(tmp_path / "test.csv"))
    with pytest.raises(
        DataError, match=r"3 rows with data\.val_fraction=0\.2 leave the validation split empty; add rows"
    ):
        dm.setup("fit")


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_evaluate_scores_a_checkpoint_on_another_labelled_file(make_cfg, tmp_path):
    from tests.datasets import titanic_frame

    write_titanic(tmp_path / "data" / "titanic", n_train=120, n_test=40)
    result = train(make_cfg("task=titanic", "debug=limit_batches"))
    other = tmp_path / "other.csv"
    titanic_frame(30, seed=7).to_csv(other, index=False)
    cfg = compose_config(
        CONFIG_DIR,
        [f"ckpt_path={result.output_dir}", f"paths.data_dir={tmp_path / 'data'}", f"+data.test_file={other}"],
        output_dir=tmp_path / "eval",
        config_name="evaluate",
    )
    trainer_metrics = evaluate(cfg)
    module, datamodule, _ = restore(result.best_checkpoint, paths={"data_dir": str(tmp_path / "data")})
    datamodule.hparams.test_file = str(other)
    datamodule.setup("test")
    assert len(datamodule.test_set) == 30
    expected = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).test(module, datamodule)[0]
    assert trainer_metrics["test/acc"] == pytest.approx(expected["test/acc"])


# ---- column roles inferred from the training rows ------------------------------------------------


def roles_frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """One column per inference rule, and a target `y` that depends on the numeric, category and date columns."""
    rng = np.random.default_rng(seed)
    day = pd.Timestamp("2015-02-01") + pd.to_timedelta(rng.integers(0, 400, n), unit="D")
    size = rng.normal(0, 1, n)
    kind = rng.choice(["a", "b", "c"], n)
    return pd.DataFrame(
        {
            "instant": np.arange(1, n + 1),  # a row number: id
            "key": rng.permutation(np.arange(1000, 1000 + n)),  # a shuffled dense key: id
            "size": size,
            "rooms": rng.integers(1, 6, n),  # integers that repeat: numeric
            "ratio": [f"{v:.2f}" for v in rng.uniform(0, 1, n)],  # numbers written as text: numeric, not dates
            "kind": kind,
            "name": [f"model {i}" for i in rng.permutation(n)],  # free text
            "sold": day.strftime("%Y-%m-%d"),
            "seen": (day + pd.to_timedelta(rng.integers(0, 24, n), unit="h")).strftime("%d-%m-%Y %H.%M"),
            "empty": np.nan,
            "y": 3 * size
            + pd.Series(kind).map({"a": 0, "b": 2, "c": 4}).to_numpy()
            + day.month
            + rng.normal(0, 0.1, n),
        }
    )


def roles_module(tmp_path: Path, frame: pd.DataFrame | None = None, **kwargs) -> TabularDataModule:
    path = tmp_path / "roles.csv"
    (roles_frame() if frame is None else frame).to_csv(path, index=False)
    return TabularDataModule(train_file=str(path), **{"target": "y", "task": "regression", **kwargs})


def test_each_column_role_is_inferred_from_the_training_rows(tmp_path, caplog):
    dm = roles_module(tmp_path)
    dm.setup("fit")
    assert dm.hparams.numeric == ["size", "rooms", "ratio"]
    assert dm.hparams.categorical == ["kind"]
    assert dm.hparams.dates == ["sold", "seen"]
    assert dm.hparams.drop == ["instant", "key", "name", "empty"]
    assert dm.encoder.dates == {"sold": "%Y-%m-%d", "seen": "%d-%m-%Y %H.%M"}
    assert dm.encoder.date_parts == {
        "sold": ["year", "month", "day", "weekday"],
        "seen": ["year", "month", "day", "weekday", "hour"],  # minutes are always 0: left out
    }
    assert dm.encoder.num_numeric == 3 + 4 + 5  # no missing values: no indicators
    why = {key: item.reason for key, item in dm.inferred.items()}
    assert "instant, key: an id" in why["drop"] and "name: free text or an id: " in why["drop"]
    assert "empty: empty in every training row" in why["drop"]
    assert "sold: dates in format %Y-%m-%d → year, month, day, weekday" in why["dates"]
    warnings = [r.message for r in caplog.records if "left out column(s)" in r.message]
    assert len(warnings) == 1 and "['instant', 'key', 'name', 'empty']" in warnings[0]


def test_an_explicit_role_wins_for_the_columns_it_names_and_the_rest_is_still_inferred(tmp_path):
    dm = roles_module(tmp_path, numeric=["instant"], categorical=["name"], drop=["rooms"], dates=[])
    dm.setup("fit")
    assert dm.hparams.numeric == ["instant", "size", "ratio"]
    assert dm.hparams.categorical == ["kind", "name"]
    assert dm.hparams.drop == ["key", "rooms", "empty"]
    assert dm.hparams.dates == ["sold", "seen"]
    assert dm.inferred["drop"].reason.startswith("key: an id") and "rooms: explicit" in dm.inferred["drop"].reason


def test_the_distinct_values_threshold_is_a_setting(tmp_path):
    dm = roles_module(tmp_path, max_distinct_fraction=1.0)
    dm.setup("fit")
    assert "name" in dm.hparams.categorical
    with pytest.raises(ConfigError, match=r"max_distinct_fraction must be in \(0, 1\], got 0"):
        roles_module(tmp_path, max_distinct_fraction=0)


def test_a_few_bad_values_in_a_date_column_are_named_not_turned_into_categories(tmp_path):
    frame = roles_frame()
    frame.loc[[5, 6], "sold"] = ["someday", "2015-13-45"]  # 2 of 120: still a date column
    bad = r"holds '(someday' in row 5|2015-13-45' in row 6), which is not a date in the training rows' format %Y-%m-%d"
    with pytest.raises(DataError, match=rf"date column 'sold' of .*roles\.csv {bad}"):
        roles_module(tmp_path, frame).setup("fit")
    frame.loc[5:15, "sold"] = "someday"  # 11 of 120: not a date column; free text
    dm = roles_module(tmp_path, frame)
    dm.setup("fit")
    assert "sold" in dm.hparams.drop and "sold" not in dm.hparams.dates


def test_ambiguous_table_dates_take_the_format_series_would_most_regular_dates():
    # 01/02/2020 .. 12/02/2020 read either way: day-first they are 12 consecutive days, month-first
    # the 2nd of each month (no calendar); dates.best_format, shared with series, picks day-first
    assert date_format(pd.Series([f"{day:02d}/02/2020" for day in range(1, 13)])) == "%d/%m/%Y"
    assert date_format(pd.Series([f"02/{day:02d}/2020" for day in range(1, 13)])) == "%m/%d/%Y"


def test_plain_numbers_are_never_dates_and_short_columns_are_never_ids(tmp_path):
    frame = roles_frame(15).assign(code=lambda f: [f"{v}.{v % 12 + 1}" for v in range(15)])  # "3.4"-like text
    dm = roles_module(tmp_path, frame)
    dm.setup("fit")
    assert "code" in dm.hparams.numeric and "instant" in dm.hparams.numeric  # 15 rows: too few to call an id


def test_date_columns_travel_in_the_checkpoint_state_and_bad_dates_are_one_error(tmp_path):
    dm = roles_module(tmp_path)
    dm.setup("fit")
    restored = TabularDataModule(**{k: v for k, v in dm.hparams.items()})
    restored.load_state_dict(dm.state_dict())
    rows = roles_frame(6, seed=5).drop(columns=["y", "instant", "name"])  # dropped columns are not needed
    rows.loc[2, "sold"] = None  # missing: imputed
    restored.use_predict_input(rows)
    restored.setup("predict")
    assert restored.inferred == {}  # a restored module infers nothing
    encoded = restored.predict_set.tensors[0]
    assert torch.isfinite(encoded).all() and encoded.shape == (6, dm.encoder.num_numeric + 1)
    restored.use_predict_input(rows.assign(sold=rows["sold"].where(rows.index != 4, "soon")))
    with pytest.raises(DataError, match=r"date column 'sold' of .* holds 'soon' in row 4, .* format %Y-%m-%d"):
        restored.setup("predict")


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "message"),
    [
        (
            lambda f: f,
            {"target": "price"},
            KeyError,
            r"target column 'price' is not in .*roles\.csv; it has \['instant'",
        ),
        (lambda f: f, {"dates": ["when"]}, KeyError, r"\['when'\] that .*roles\.csv does not have; it has \["),
        (lambda f: f, {"dates": ["kind"]}, DataError, r"'kind' of .* is listed under data\.dates, but its values"),
        (lambda f: f, {"numeric": ["rooms"], "drop": ["rooms"]}, ConfigError, r"\['rooms'\] are listed under both"),
        (lambda f: f.assign(y=2.5), {}, DataError, r"target column 'y' of .* has a single value 2\.5"),
    ],
    ids=["missing-target", "unknown-date-column", "forced-date", "two-roles", "constant-target"],
)
def test_bad_role_settings_get_one_clear_error(tmp_path, change, kwargs, error, message):
    dm = roles_module(tmp_path, change(roles_frame()), **kwargs)
    with pytest.raises(error, match=message):
        dm.setup("fit")


def test_rows_without_a_target_are_counted_once_before_the_test_split(tmp_path, caplog):
    frame = roles_frame(100)
    frame.loc[[0, 10, 20, 30, 40, 50, 60], "y"] = np.nan
    dm = roles_module(tmp_path, frame)
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 93
    dropped = [r.message for r in caplog.records if r.message.startswith("dropped")]
    assert dropped == [f"dropped 7 rows of {tmp_path / 'roles.csv'} whose target 'y' is empty"]


def test_roles_and_derived_columns_from_the_command_line_reach_the_run_config(make_cfg, tmp_path):
    from dltemplate.build import build_datamodule

    roles_frame().to_csv(tmp_path / "roles.csv", index=False)
    cfg = make_cfg(
        "task=tabular_regression",
        f"data.train_file={tmp_path / 'roles.csv'}",
        "data.target=y",
        "+data.derived.LogRooms={_target_:dltemplate.data.features.log1p,column:rooms}",
    )
    dm = build_datamodule(cfg)
    assert "LogRooms" in dm.encoder.numeric
    assert list(cfg.data.numeric) == ["size", "rooms", "ratio", "LogRooms"]  # written back: the checkpoint holds it
    assert list(cfg.data.dates) == ["sold", "seen"] and list(cfg.data.drop) == ["instant", "key", "name", "empty"]
    saved = yaml.safe_load((tmp_path / "run" / "inferred.yaml").read_text())
    assert saved["data.dates"]["value"] == ["sold", "seen"]
    assert "seen: dates in format %d-%m-%Y %H.%M → year, month, day, weekday, hour" in saved["data.dates"]["from"]


TITANIC_NAMES = [
    "Braund, Mr. Owen Harris",
    "Cumings, Mrs. John Bradley (Florence Briggs Thayer)",
    "Rothes, the Countess. of (Lucy Noel Martha Dyer-Edwards)",
    'Duff Gordon, Sir. Cosmo Edmund ("Mr Morgan")',
    "van Melkebeke, Mr. Philemon",
    "Nobody without a title",
]


def test_the_title_pattern_takes_linear_time_and_any_pattern_is_bounded():
    import time

    from dltemplate.data.features import regex_extract

    pattern = yaml.safe_load((CONFIG_DIR / "task" / "titanic.yaml").read_text())["data"]["derived"]["Title"]["pattern"]
    names = pd.DataFrame({"Name": TITANIC_NAMES})
    titles = regex_extract(names, "Name", pattern).tolist()
    assert titles[:5] == ["Mr", "Mrs", "the Countess", "Sir", "Mr"] and pd.isna(titles[5])
    hostile = pd.DataFrame({"Name": ["," * 100_000, ", " + " " * 100_000, ", a" * 50_000]})
    for used in (pattern, r",\s*([^.]+)\.", r"(\w+\s?)*,"):  # the stock pattern; the old one; cubic
        start = time.perf_counter()
        regex_extract(hostile, "Name", used)
        assert time.perf_counter() - start < 5, used  # unbounded, the old pattern took minutes
    start = time.perf_counter()  # exponential: bounded by time, one line naming the pattern
    with pytest.raises(DataError, match=r"took over 1 s on one value of column 'Name': it backtracks"):
        regex_extract(pd.DataFrame({"Name": ["Smith", "a" * 60 + "!"]}), "Name", r"((a|aa)+)$")
    assert time.perf_counter() - start < 15  # the timeout is checked now and then, not to the millisecond
    with pytest.raises(ConfigError, match="no capture group"):
        regex_extract(names, "Name", r"Mr\.")


def test_integer_classes_with_empty_target_cells_stay_integers(tmp_path):
    frame = mixed_frame(200)
    frame["label"] = (frame["x1"] > frame["x1"].median()).astype(int)  # classes 0 and 1
    with_gaps = frame.astype({"label": object})
    with_gaps.loc[[5, 17, 40], "label"] = None  # pandas reads the column back as 0.0, 1.0, NaN
    with_gaps.to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[:30].to_csv(tmp_path / "test.csv", index=False)  # no gaps: read as integers
    assert pd.read_csv(tmp_path / "train.csv")["label"].dtype == float
    dm = TabularDataModule(
        train_file=str(tmp_path / "train.csv"),
        test_file=str(tmp_path / "test.csv"),
        target="label",
        drop=["grade", "price"],
        id_column="id",
        task="classification",
    )
    dm.setup("fit")
    dm.setup("test")
    assert dm.class_names == ["0", "1"]
    assert dm.test_set.tensors[1].tolist() == frame["label"].iloc[:30].tolist()  # the same classes both ways


def test_a_whole_number_category_written_as_a_float_is_the_same_category():
    from dltemplate.data.table_encoder import TableEncoder

    train = pd.DataFrame({"age": [22.0, 38.0, 26.0, 35.0, None, 54.0], "pclass": [3, 1, 3, 1, 3, 2]})
    encoder = TableEncoder(["age"], ["pclass"]).fit(train, "train.csv")
    assert encoder.vocab["pclass"] == ["3", "1", "2"]
    as_ints = pd.DataFrame({"age": [30.0, 30.0, 30.0], "pclass": [3, 1, 2]})
    as_floats = pd.DataFrame({"age": [30.0, 30.0, 30.0], "pclass": [3.0, 1.0, None]})  # a gap makes pandas floats
    ints, floats = encoder.transform(as_ints, "a.csv"), encoder.transform(as_floats, "b.csv")
    assert torch.equal(ints[:2], floats[:2])  # 3.0 is class 3, not an unseen category
    with_gaps = TableEncoder([], ["pclass"]).fit(pd.DataFrame({"pclass": [3.0, None, 1.0]}), "gaps.csv")
    assert with_gaps.vocab["pclass"] == ["3", "1"]
    old = TableEncoder([], ["pclass"])  # a checkpoint of an earlier version kept "3.0"
    old.vocab = {"pclass": ["3.0", "1.0"]}
    assert old.transform(pd.DataFrame({"pclass": [1.0, 3.0]}), "c.csv").flatten().tolist() == [3.0, 2.0]


def test_an_empty_prediction_row_is_named_as_such(tmp_path):
    dm = datamodule(tmp_path, mixed_frame(200))
    dm.setup("fit")
    with pytest.raises(DataError, match=r"has 1 row\(s\) but no columns \(an empty row such as \{\}\)"):
        dm.read(pd.DataFrame([{}]))


@pytest.mark.parametrize(("written", "read"), [(";", ","), (",", "\t"), ("\t", ","), ("|", ";")])
def test_a_file_with_another_separator_names_the_separator_as_the_cause(tmp_path, written, read):
    path = tmp_path / "rows.csv"
    mixed_frame(20).to_csv(path, sep=written, index=False)
    message = f"reads as one column with the separator {read!r}, but {written!r} splits"
    with pytest.raises(DataError, match=re.escape(message)):
        read_csv(path, sep=read)
    assert len(read_csv(path).columns) > 1  # detected, it reads


def test_a_column_of_numbers_and_much_text_is_text_not_numbers_with_errors(tmp_path):
    frame = mixed_frame(200)
    rng = np.random.default_rng(0)  # like Titanic's Ticket: 347082, but also PC 17572 and A/5 21171
    tickets = [f"PC {17000 + i}" if i % 4 == 0 else str(300000 + int(rng.integers(0, 90000))) for i in range(200)]
    classes = [f"C{i % 7}" if i % 10 == 0 else str(i % 5) for i in range(200)]  # few values: categorical
    dm = datamodule(tmp_path, frame.assign(ticket=tickets, level=classes))
    dm.setup("fit")  # no error about 'PC 17000'
    roles = dm.column_roles(frame.assign(ticket=tickets, level=classes), "table.csv")
    assert "ticket" in roles.drop and "level" in roles.categorical  # what setup inferred, now explicit
    assert "free text or an id" in dm.inferred["drop"].reason


def test_a_numeric_column_with_a_few_odd_values_still_names_their_row(tmp_path):
    frame = mixed_frame(200)
    odd = frame["x2"].astype(object).where(~frame.index.isin([7, 50, 90]), "?")  # 1.5%: a marker, not text
    dm = datamodule(tmp_path, frame.assign(x2=odd))
    with pytest.raises(DataError, match=r"'x2' .* row 7 holds '\?'"):
        dm.setup("fit")
