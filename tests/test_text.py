"""Text task: aclImdb archive and folder, CSV/TSV, vocabulary from training texts, cache, predict, bad input."""

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dltemplate.config import compose_config
from dltemplate.data import download
from dltemplate.errors import ConfigError, DataError, MissingFileError
from dltemplate.predict import predict
from dltemplate.text.data import text as text_module
from dltemplate.text.data.text import TextDataModule
from dltemplate.train import train
from tests.datasets import provide_task_data, review, write_aclimdb
from tests.helpers import CONFIG_DIR, assert_balanced_class_weights, tensorboard_tags


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
    assert np.array_equal(from_archive.train_set.ids, from_folder.train_set.ids)
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
    monkeypatch.setattr(text_module.TextDataModule, "_tokenise_all", lambda *a: pytest.fail("tokenised again"))
    second = imdb_module(tmp_path)
    second.setup("fit")
    assert np.array_equal(first.test_set.ids, second.test_set.ids)
    assert second.tokenizer.to_str() == first.tokenizer.to_str()


def test_batches_are_trimmed_to_their_longest_text(tmp_path):
    write_aclimdb(tmp_path / "imdb")
    dm = imdb_module(tmp_path, max_length=500)
    dm.setup("fit")
    ids, _ = next(iter(dm.train_dataloader()))
    assert ids.dtype == torch.long and ids.shape[1] < 500 and (ids[:, -1] != 0).any()


@pytest.mark.slow  # seconds each (whole runs, or every net or family): CI runs the slow tests too
def test_imdb_trains_writes_text_summaries_and_predicts_raw_strings(make_cfg, tmp_path):
    provide_task_data("imdb", tmp_path / "data")
    overrides = ["trainer.max_epochs=6", "data.batch_size=8", "net.buckets=4096", "net.ngrams=2"]
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


def write_headerless_tsv(path: Path, n: int = 60) -> Path:
    """`label<TAB>text` lines without a header row, as many published exports are."""
    rng = np.random.default_rng(0)
    labels = ["ham", "ham", "spam"] * (n // 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{label}\t{review(int(label == 'spam'), rng, words=12)}\n" for label in labels))
    return path


def test_a_headerless_tsv_trains_with_its_columns_named_by_position(make_cfg, tmp_path):
    path = write_headerless_tsv(tmp_path / "data" / "sms.tsv")
    overrides = [f"data.train_file={path}", "data.label_column=0", "data.text_column=1", "data.min_frequency=1"]
    result = train(make_cfg("task=text", "trainer.max_epochs=1", *overrides))
    header = yaml.safe_load((Path(result.output_dir) / "inferred.yaml").read_text())["data.header"]
    assert header["value"] is False and "'ham', a value its rows repeat" in header["from"]
    dm = result.trainer.datamodule
    assert dm.class_names == ["ham", "spam"]
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 60  # the first line is a text, not names


def test_a_headerless_tsv_with_the_default_columns_says_how_to_name_them(tmp_path):
    path = write_headerless_tsv(tmp_path / "sms.tsv")
    with pytest.raises(KeyError, match=r"no header row .* columns are \['0', '1'\] .* set data.text_column"):
        TextDataModule(source="csv", train_file=str(path)).setup("fit")
    forced = TextDataModule(source="csv", train_file=str(path), header=True)
    with pytest.raises(KeyError, match=r"it has \['ham', "):  # data.header=true: the first line names them
        forced.setup("fit")


def test_balanced_class_weights_reach_the_text_loss(make_cfg, tmp_path):
    path = write_headerless_tsv(tmp_path / "data" / "sms.tsv")  # ham twice as common as spam
    overrides = [f"data.train_file={path}", "data.label_column=0", "data.text_column=1", "data.min_frequency=1"]
    result = train(
        make_cfg("task=text", "trainer.max_epochs=1", "module.class_weights=${dims.class_weights}", *overrides)
    )
    assert_balanced_class_weights(result)
    assert json.loads((Path(result.output_dir) / "result.json").read_text())["status"] == "ok"


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


def csv_module(tmp_path: Path, frame: pd.DataFrame | None = None, **kwargs) -> TextDataModule:
    """A TextDataModule on a small CSV of labelled reviews (written as `tmp_path/t.csv`)."""
    if frame is None:
        rng = np.random.default_rng(0)
        labels = ["neg", "pos"] * 20
        frame = pd.DataFrame({"label": labels, "text": [review(int(label == "pos"), rng) for label in labels]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    return TextDataModule(source="csv", train_file=str(tmp_path / "t.csv"), **{"min_frequency": 1, **kwargs})


def test_a_one_column_prediction_csv_that_is_not_utf8_is_read(tmp_path, caplog):
    dm = csv_module(tmp_path)
    dm.setup("fit")
    (tmp_path / "new.csv").write_bytes(b"text\nsuperb film\ndull caf\xe9 scene\n")
    assert dm.read_predict_input(str(tmp_path / "new.csv")) == ["superb film", "dull caf\ufffd scene"]
    assert "new.csv is not valid UTF-8: 1 byte sequence(s) were replaced" in caplog.text


def test_reviews_added_to_a_class_folder_are_tokenised_again(tmp_path):
    root = write_aclimdb(tmp_path / "imdb", archive=False)
    first = imdb_module(tmp_path, folder=str(root / "aclImdb"))
    first.setup("fit")
    top = (root / "aclImdb").stat()
    for i in range(5):
        (root / "aclImdb" / "train" / "pos" / f"{100 + i}_9.txt").write_text("superb and moving", encoding="utf-8")
    assert (root / "aclImdb").stat().st_mtime_ns == top.st_mtime_ns  # the top folder looks unchanged
    second = imdb_module(tmp_path, folder=str(root / "aclImdb"))
    second.setup("fit")
    assert len(second.train_set) + len(second.val_set) == len(first.train_set) + len(first.val_set) + 5


def test_a_damaged_archive_is_named_and_each_version_hashed_once(tmp_path, monkeypatch, caplog):
    archive = write_aclimdb(tmp_path / "imdb") / "aclImdb_v1.tar.gz"
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    imdb_module(tmp_path, md5=md5).prepare_data()  # checked, and remembered
    with monkeypatch.context() as patch:
        patch.setattr(download, "calculate_md5", lambda path: pytest.fail("hashed again"))
        imdb_module(tmp_path, md5=md5).prepare_data()
    assert "MD5" not in caplog.text

    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # an interrupted copy
    damaged = imdb_module(tmp_path, md5=md5)
    damaged.prepare_data()
    assert f"{archive} is not the published file: its MD5 is" in caplog.text
    assert "delete it to download it again" in caplog.text
    with pytest.raises(DataError, match=r"aclImdb_v1\.tar\.gz is damaged or truncated \(EOFError.* delete it"):
        damaged.setup("fit")


def test_rows_with_an_empty_label_are_dropped_or_refused(tmp_path, caplog):
    rng = np.random.default_rng(0)
    labels = ["neg", "pos", ""] * 20
    frame = pd.DataFrame({"label": labels, "text": [review(int(label == "pos"), rng) for label in labels]})
    dm = csv_module(tmp_path, frame)
    dm.setup("fit")
    assert dm.class_names == ["neg", "pos"]
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 40
    assert f"dropped 20 rows of {tmp_path / 't.csv'} whose target 'label' is empty" in caplog.text
    with pytest.raises(DataError, match=r"20 rows of .*t\.csv have an empty target 'label'"):
        csv_module(tmp_path, frame, missing_target="error").setup("fit")


def test_a_split_left_empty_by_few_texts_is_named_with_its_fraction(tmp_path):
    frame = pd.DataFrame({"label": ["neg", "pos"] * 2, "text": ["dull", "superb"] * 2})
    with pytest.raises(DataError, match=r"t\.csv: 4 texts with data\.test_fraction=0\.2 leave the test split empty"):
        csv_module(tmp_path, frame).setup("fit")
    with pytest.raises(DataError, match=r"4 training texts with data\.val_fraction=0\.1 leave the validation split"):
        csv_module(tmp_path, frame, test_file=str(tmp_path / "t.csv")).setup("fit")


@pytest.mark.parametrize("source", ["new_reviews.txt", "data/new.csv", "reviews.TSV", "data/inbox"])
def test_a_prediction_input_that_names_a_missing_file_is_refused(tmp_path, source):
    dm = csv_module(tmp_path)
    dm.setup("fit")
    with pytest.raises(MissingFileError, match=f"input={source} looks like a file, but .* does not exist"):
        dm.read_predict_input(source)


def test_a_prediction_input_that_names_an_existing_file_is_never_said_not_to_exist(tmp_path):
    dm = csv_module(tmp_path)
    dm.setup("fit")
    (tmp_path / "reviews.TXT").write_text("a superb film\ndull\n")
    assert dm.read_predict_input(str(tmp_path / "reviews.TXT")) == ["a superb film", "dull"]
    for name in ("reviews.jsonl", "inbox"):
        (tmp_path / name).write_text("a superb film\n")
        with pytest.raises(DataError, match=rf"input=.*{name} is a file, but not a \.txt .*\.csv or \.tsv file"):
            dm.read_predict_input(str(tmp_path / name))


def test_a_prediction_input_that_is_a_text_stays_a_text(tmp_path):
    dm = csv_module(tmp_path)
    dm.setup("fit")
    for text in ("a superb film", "superb!", "dull, and/or boring", "see ./the sequel instead"):
        assert dm.read_predict_input(text) == [text]


def test_classes_null_reads_every_class_folder_of_both_splits(tmp_path, caplog):
    root = write_aclimdb(tmp_path / "imdb", archive=False)
    for split in ("train", "test"):
        shutil.copytree(root / "aclImdb" / split / "neg", root / "aclImdb" / split / "mixed")
    dm = imdb_module(tmp_path, folder=str(root / "aclImdb"), classes=None)
    dm.setup("fit")
    assert dm.class_names == ["mixed", "neg", "pos"]  # sorted; train/unsup (train only) left out
    assert len(dm.train_set) + len(dm.val_set) == 91 and len(dm.test_set) == 90
    assert "class folder(s) ['unsup'] are not in both train and test" in caplog.text


def bag_net() -> torch.nn.Module:
    from dltemplate.text.nets.ngram_bag import NGramBag

    torch.manual_seed(0)
    return NGramBag(20, 1, embedding_dim=4, ngrams=2, buckets=16)


def one_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """Train one step on a batch that holds tokens 2..4 only; return the embedding rows before it."""
    before = net.embedding.weight.detach().clone()
    optimizer.zero_grad()
    net(torch.tensor([[2, 3, 4, 0]])).sum().backward()
    optimizer.step()
    return before


@pytest.mark.parametrize("name", ["AdamW", "Adagrad", "SGD"])
def test_sparse_embedding_rows_get_a_sparse_optimizer_that_updates_only_the_batch_rows(name):
    from dltemplate.modules.optimizers import WithSparseRows, build_optimizer, parameter_groups

    net = bag_net()
    groups = parameter_groups(net, weight_decay=0.1)
    assert [g["name"] for g in groups] == ["decayed", "not_decayed", "sparse"]
    assert groups[-1]["params"] == [net.embedding.weight] and groups[-1]["weight_decay"] == 0.0
    optimizer = build_optimizer({"_target_": f"torch.optim.{name}", "lr": 0.1}, net)
    # Adam-like optimizers are joined with SparseAdam; Adagrad and plain SGD update sparse rows themselves
    assert isinstance(optimizer, WithSparseRows) == (name == "AdamW")
    head = net.head.weight.detach().clone()
    before = one_step(net, optimizer)
    changed = (net.embedding.weight.detach() != before).any(dim=1).nonzero().squeeze(1).tolist()
    assert {2, 3, 4} <= set(changed) and len(changed) == 5  # the three words and two of their pairs' buckets
    assert not torch.equal(net.head.weight.detach(), head)


def test_the_joined_optimizer_is_scheduled_and_checkpointed_as_one():
    from dltemplate.modules.optimizers import build_optimizer
    from dltemplate.modules.schedulers import build_scheduler

    net = bag_net()
    optimizer = build_optimizer({"_target_": "torch.optim.AdamW", "lr": 0.1}, net)
    step_lr = {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1, "gamma": 0.5}
    scheduler = build_scheduler(step_lr, optimizer)
    one_step(net, optimizer)
    scheduler.step()
    assert optimizer.dense.param_groups[0]["lr"] == optimizer.sparse.param_groups[0]["lr"] == 0.05
    state = optimizer.state_dict()
    again = build_optimizer({"_target_": "torch.optim.AdamW", "lr": 0.1}, net)
    again.load_state_dict(state)
    assert again.sparse.param_groups[0]["lr"] == 0.05 and len(again.state) == len(optimizer.state) == 3


def test_embeddings_get_dense_gradients_under_a_distributed_strategy():
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    from dltemplate.modules.classification import ClassificationModule
    from dltemplate.modules.optimizers import sparse_parameters

    for strategy, sparse in ((SingleDeviceStrategy("cpu"), True), (DDPStrategy(), False)):
        module = ClassificationModule(bag_net())
        module._trainer = type("Trainer", (), {"strategy": strategy})()
        module.setup("fit")  # Lightning calls it before DDP wraps the net
        assert module.net.embedding.sparse is sparse
        assert bool(sparse_parameters(module)) is sparse


@pytest.mark.slow
def test_ngram_bag_trains_under_cpu_ddp(tmp_path):
    from tests.helpers import run_script

    overrides = [*provide_task_data("text", tmp_path / "data"), "net.buckets=64", "callbacks.figures=null"]
    run = ["train.py", "task=text", "trainer=ddp_cpu", "trainer.max_epochs=2", "data.min_frequency=1"]
    result = run_script([*run, *overrides, f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dense gradients under DDPStrategy" in result.stdout + result.stderr


def test_stream_and_memory_serve_the_same_batches_and_auto_says_which(tmp_path):
    write_aclimdb(tmp_path / "imdb")
    memory = imdb_module(tmp_path, storage="memory")
    memory.setup("fit")
    stream = imdb_module(tmp_path, storage="stream")
    stream.setup("fit")
    assert isinstance(stream.train_set.ids, np.memmap) and not isinstance(memory.train_set.ids, np.memmap)
    rows = [5, 0, 17, 3]
    for a, b in zip(memory.train_set.__getitems__(rows), stream.train_set.__getitems__(rows), strict=True):
        assert torch.equal(a, b)
    auto = imdb_module(tmp_path, memory_budget_gb=1e-9)  # nothing fits
    auto.setup("fit")
    assert isinstance(auto.train_set.ids, np.memmap) and auto.hparams.storage == "stream"
    assert "token ids" in auto.inferred["storage"].reason and "memory_budget_gb" not in auto.inferred
    roomy = imdb_module(tmp_path)
    roomy.setup("fit")
    assert roomy.hparams.storage == "memory" and "a quarter of this machine's" in roomy.inferred["storage"].reason
    assert "memory_budget_gb" not in roomy.inferred  # the machine's RAM is not a setting of the data


def test_an_edited_nested_file_invalidates_the_cache(tmp_path):
    root = write_aclimdb(tmp_path / "imdb", archive=False)
    first = imdb_module(tmp_path, folder=str(root / "aclImdb"))
    first.setup("fit")
    assert "zanzibar" not in first.tokenizer.get_vocab()
    edited = next((root / "aclImdb" / "train" / "pos").glob("*.txt"))
    edited.write_text("zanzibar zanzibar superb", encoding="utf-8")
    second = imdb_module(tmp_path, folder=str(root / "aclImdb"), val_fraction=0.2)
    second.setup("fit")
    assert "zanzibar" in second.tokenizer.get_vocab()


def test_vocabulary_length_and_net_sizes_come_from_the_data_unless_set(tmp_path):
    dm = csv_module(tmp_path, min_frequency=2)
    dm.setup("fit")
    words = dm.tokenizer.get_vocab_size()
    assert dm.hparams.max_vocab == words and "min_frequency=2" in dm.inferred["max_vocab"].reason
    lengths = dm.train_set.lengths.float()
    assert dm.hparams.max_length % 16 == 0 and dm.hparams.max_length >= lengths.quantile(0.95)
    assert dm.dims["buckets"] == 2**12 and dm.dims["embedding_dim"] == 16  # a few hundred tokens: the smallest
    assert {"dims.buckets", "dims.embedding_dim", "max_length", "max_vocab"} <= set(dm.inferred)

    set_here = csv_module(tmp_path, min_frequency=2, max_vocab=5, max_length=3)
    set_here.setup("fit")
    assert set_here.tokenizer.get_vocab_size() == 5 and int(set_here.train_set.lengths.max()) == 3
    assert "max_vocab" not in set_here.inferred and "max_length" not in set_here.inferred


def test_the_length_cut_is_a_high_percentile_of_training_texts(tmp_path):
    texts = ["good " * 5] * 96 + ["bad " * 200] * 4  # 4% are long: the cut follows the 96% short ones
    frame = pd.DataFrame({"label": ["pos", "neg"] * 50, "text": texts})
    dm = csv_module(tmp_path, frame, test_fraction=0.1)
    dm.setup("fit")
    assert dm.hparams.max_length == 16 and "95%" in dm.inferred["max_length"].reason


def test_inferred_text_settings_reach_the_run_config_and_the_net(make_cfg, tmp_path):
    overrides = provide_task_data("text", tmp_path / "data")
    result = train(make_cfg("task=text", "trainer.max_epochs=1", "data.min_frequency=1", *overrides))
    cfg = yaml.safe_load((Path(result.output_dir) / "inferred.yaml").read_text())
    assert {"data.max_vocab", "data.max_length", "dims.buckets", "dims.embedding_dim"} <= set(cfg)
    net = result.trainer.lightning_module.net
    assert net.buckets == cfg["dims.buckets"]["value"] and net.embedding.embedding_dim == 16


def test_the_text_column_given_as_the_label_column_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.text_column and data\.label_column are both 'text'"):
        csv_module(tmp_path, label_column="text")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"label": ["neg", "pos"] * 20, "review": [review(i % 2, rng) for i in range(40)]})
    frame["text"] = frame["review"]  # another text column: every "class" is a different text
    dm = csv_module(tmp_path, frame, text_column="review", label_column="text")
    with pytest.raises(DataError, match=r"label_column='text' .* has a different value in each of its \d+ rows"):
        dm.setup("fit")
