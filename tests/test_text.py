"""Text task: aclImdb archive and folder, CSV/TSV, vocabulary from training texts, cache, predict, bad input."""

import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from dltemplate.config import compose_config
from dltemplate.data import text as text_module
from dltemplate.data.text import TextDataModule
from dltemplate.predict import predict
from dltemplate.train import train
from tests.datasets import provide_task_data, write_aclimdb
from tests.helpers import CONFIG_DIR, tensorboard_tags


def imdb_module(tmp_path: Path, **kwargs) -> TextDataModule:
    root = tmp_path / "imdb"
    settings = {
        "archive": str(root / "aclImdb_v1.tar.gz"),
        "classes": ["neg", "pos"],
        "min_frequency": 1,
        "cache_dir": str(tmp_path / "cache"),
        "val_fraction": 0.2,
        **kwargs,
    }
    return TextDataModule(source="aclimdb", **settings)


def test_archive_and_folder_give_the_same_data(tmp_path, caplog):
    write_aclimdb(tmp_path / "imdb")
    from_archive = imdb_module(tmp_path, cache_dir=None)
    from_archive.setup("fit")
    from_folder = imdb_module(tmp_path, cache_dir=None, folder=str(tmp_path / "imdb" / "aclImdb"))
    from_folder.setup("fit")
    assert torch.equal(from_archive.train_set.ids, from_folder.train_set.ids)
    assert len(from_archive.train_set) + len(from_archive.val_set) == 61  # 30 + 31 labelled; unsup left out
    assert len(from_archive.test_set) == 60
    assert "were not valid UTF-8" in caplog.text  # the Latin-1 review is read, bytes replaced, and counted


def test_vocabulary_comes_from_training_texts_only_and_is_normalised(tmp_path):
    root = write_aclimdb(tmp_path / "imdb", archive=False)
    (root / "aclImdb" / "test" / "pos" / "0_7.txt").write_text("Zanzibar zanzibar ZANZIBAR", encoding="utf-8")
    dm = imdb_module(tmp_path, folder=str(root / "aclImdb"))
    dm.setup("fit")
    vocab = dm.tokenizer.get_vocab()
    assert "zanzibar" not in vocab and "great" in vocab and "Great" not in vocab  # lowercased
    assert not any("<" in word or word == "br" for word in vocab)  # HTML line breaks removed
    assert dm.tokenizer.encode("zanzibar").ids == [1]  # [UNK]


def test_tokenised_data_is_cached(tmp_path, monkeypatch):
    write_aclimdb(tmp_path / "imdb")
    first = imdb_module(tmp_path)
    first.setup("fit")
    monkeypatch.setattr(text_module.TextDataModule, "_tokenise_all", lambda self: pytest.fail("tokenised again"))
    second = imdb_module(tmp_path)
    second.setup("fit")
    assert (
        torch.equal(first.test_set.ids, second.test_set.ids) and second.tokenizer.to_str() == first.tokenizer.to_str()
    )


def test_batches_are_trimmed_to_their_longest_text(tmp_path):
    write_aclimdb(tmp_path / "imdb")
    dm = imdb_module(tmp_path, max_length=500)
    dm.setup("fit")
    ids, _ = next(iter(dm.train_dataloader()))
    assert ids.dtype == torch.long and ids.shape[1] < 500 and (ids[:, -1] != 0).any()


def test_imdb_trains_writes_text_summaries_and_predicts_raw_strings(make_cfg, tmp_path):
    provide_task_data("imdb", tmp_path / "data")
    overrides = ["trainer.max_epochs=6", "data.batch_size=8", "module.optimizer.lr=0.03", "net.buckets=4096"]
    result = train(make_cfg("task=imdb", "data.min_frequency=1", *overrides))
    assert result.metrics["test/acc"] > 0.9  # sentiment words give the labels away
    run = Path(result.output_dir)
    assert "val/worst_mistakes/text_summary" in tensorboard_tags(run)["text"]
    assert (run / "projector_config.pbtxt").is_file()

    texts = tmp_path / "texts.txt"
    texts.write_text("a wonderful superb film\nawful boring waste\n\nqwerty zxcvb\n", encoding="utf-8")
    cfg = compose_config(
        CONFIG_DIR,
        [f"ckpt_path={result.best_checkpoint}", f"input={texts}", f"output={tmp_path / 'p.csv'}"],
        output_dir=tmp_path,
        config_name="predict",
    )
    table = predict(cfg)
    assert table["prediction"].tolist()[:2] == ["pos", "neg"]
    assert len(table) == 4 and table[["prob_neg", "prob_pos"]].notna().all().all()  # empty and unknown-only too

    one = compose_config(
        CONFIG_DIR,
        [f"ckpt_path={result.best_checkpoint}", "input=['loved it, brilliant',dull]", f"output={tmp_path / 'one.csv'}"],
        output_dir=tmp_path,
        config_name="predict",
    )
    assert predict(one)["prediction"].tolist() == ["pos", "neg"]


def test_csv_source_with_a_detected_separator(make_cfg, tmp_path):
    overrides = provide_task_data("text", tmp_path / "data")
    result = train(make_cfg("task=text", "trainer.max_epochs=3", "data.min_frequency=1", *overrides))
    assert result.trainer.datamodule.class_names == ["neg", "pos"]
    assert "test/acc" in result.metrics


def test_archive_without_the_expected_folders_is_refused(tmp_path):
    (tmp_path / "imdb" / "other" / "train").mkdir(parents=True)
    (tmp_path / "imdb" / "other" / "train" / "a.txt").write_text("x")
    with tarfile.open(tmp_path / "imdb" / "aclImdb_v1.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "imdb" / "other", arcname="other")
    with pytest.raises(ValueError, match=r"has no train texts for some classes .* expected layout: aclImdb/"):
        imdb_module(tmp_path).setup("fit")


def test_missing_archive_without_network_names_the_path(tmp_path):
    dm = imdb_module(tmp_path, url="http://127.0.0.1:9/aclImdb_v1.tar.gz")
    with pytest.raises(FileNotFoundError, match=r"aclImdb_v1\.tar\.gz does not exist and downloading"):
        dm.prepare_data()


@pytest.mark.parametrize(
    ("frame", "kwargs", "error", "message"),
    [
        (pd.DataFrame({"label": ["pos"] * 10, "text": ["good"] * 10}), {}, ValueError, "single class"),
        (
            pd.DataFrame({"label": ["pos", "neg"] * 5, "body": ["x"] * 10}),
            {},
            KeyError,
            r"lacks the column\(s\) \['text'\]",
        ),
    ],
    ids=["one-class", "missing-text-column"],
)
def test_bad_tables_get_one_clear_error(tmp_path, frame, kwargs, error, message):
    frame.to_csv(tmp_path / "t.csv", index=False)
    dm = TextDataModule(source="csv", train_file=str(tmp_path / "t.csv"), min_frequency=1, **kwargs)
    with pytest.raises(error, match=message):
        dm.setup("fit")


def test_unsup_and_unknown_class_folders_are_ignored(tmp_path):
    root = write_aclimdb(tmp_path / "imdb", archive=False)
    shutil.copytree(root / "aclImdb" / "train" / "pos", root / "aclImdb" / "train" / "maybe")
    dm = imdb_module(tmp_path, folder=str(root / "aclImdb"))
    dm.setup("fit")
    assert dm.class_names == ["neg", "pos"] and len(dm.train_set) + len(dm.val_set) == 61
