"""Labelled texts (aclImdb layout or CSV/TSV) → token ids, with a vocabulary built on training texts only."""

import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from torch import Tensor
from torch.utils.data import Dataset

from dltemplate.data.download import ensure_file
from dltemplate.data.predictions import class_table
from dltemplate.data.protocols import PredictsInputs
from dltemplate.data.targets import MissingTarget, balanced_class_weights, check_missing_target, rows_with_target
from dltemplate.data.tensors import (
    HeldOutRows,
    TensorDataModule,
    memory_fits,
    require_split,
    stratified_holdout,
    whole_batch,
)
from dltemplate.errors import ConfigError, DataError, MissingFileError
from dltemplate.files import cached_folder, files_key
from dltemplate.text.data.text_files import ACLIMDB_LAYOUT, aclimdb_files, read_aclimdb, read_text_table

log = logging.getLogger(__name__)
PAD, UNK = "[PAD]", "[UNK]"  # ids 0 and 1
SPLITS = ("train", "val", "test")
CHUNK = 4096  # texts tokenised at a time: memory holds one chunk's ids, never the corpus's
VAL_TEXTS_KEPT = 2048  # validation texts kept as text, for the worst-mistakes table (the first ones)


class TokenIds(Dataset):
    """Token ids of N texts, one flat array with offsets, served as batches trimmed to their longest text.

    `ids` (int32) and `offsets` (int64, N + 1: text i is ids[offsets[i]:offsets[i + 1]]) are numpy
    arrays, in memory or memory-mapped from the cache (`data.storage=stream`): memory does not grow
    with the corpus on the stream path. Padding is per batch, with `pad_id`, and nets that attend
    (net=transformer) mask it out.
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, labels: Tensor, pad_id: int = 0) -> None:
        self.ids, self.offsets, self.labels, self.pad_id = ids, offsets, labels, pad_id

    @property
    def lengths(self) -> Tensor:
        return torch.from_numpy(np.diff(np.asarray(self.offsets)))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        ids, labels = self.__getitems__([index])
        return ids[0], labels[0]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        rows = np.asarray(indices)
        starts, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        steps = np.arange(max(int(lengths.max()), 1))  # (L,): the batch's longest text
        inside = steps[None, :] < lengths[:, None]  # (B, L)
        positions = np.where(inside, starts[:, None] + steps[None, :], 0)  # one gather, no loop over texts
        batch = np.where(inside, self.ids[positions] if len(self.ids) else 0, self.pad_id).astype(np.int64)
        return torch.from_numpy(batch), self.labels[rows]


class TokenTensors:
    """Token ids as tensors on one device, served as `Rows`: a batch is (B, width) ids and (B,) labels.

    Every batch is padded to `width`, the longest text's length, rather than to its own longest:
    that would need the batch's lengths on the host, which waits for the device.
    """

    def __init__(self, flat: Tensor, starts: Tensor, lengths: Tensor, labels: Tensor, pad_id: int, width: int) -> None:
        self.flat, self.starts, self.lengths, self.labels = flat, starts, lengths, labels
        self.pad_id, self.width = pad_id, width
        self.steps = torch.arange(width, device=flat.device)  # (W,)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.flat, self.starts, self.lengths, self.labels))

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def to(self, device: torch.device) -> "TokenTensors":
        moved = (t.to(device) for t in (self.flat, self.starts, self.lengths, self.labels))
        return TokenTensors(*moved, self.pad_id, self.width)

    def gather(self, index: Tensor) -> tuple[Tensor, Tensor]:
        positions = self.starts[index, None] + self.steps  # (B, W); `flat` ends with one padding id to point at
        positions = positions.clamp_(max=len(self.flat) - 1)
        ids = self.flat[positions].long().masked_fill_(self.steps >= self.lengths[index, None], self.pad_id)
        return ids, self.labels[index]


class TokenRows(TokenIds):
    """`TokenIds` held in memory, which serve as `Rows` (see `TokenTensors`) and move to the training device."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, labels: Tensor, pad_id: int = 0) -> None:
        super().__init__(ids, offsets, labels, pad_id)
        lengths = np.diff(np.asarray(offsets))
        self.tensors = TokenTensors(
            torch.from_numpy(np.append(np.asarray(ids, dtype=np.int32), np.int32(pad_id))),
            torch.from_numpy(np.asarray(offsets[:-1], dtype=np.int64)),
            torch.from_numpy(lengths.astype(np.int64)),
            labels,
            pad_id,
            max(int(lengths.max()) if len(lengths) else 1, 1),
        )

    @property
    def nbytes(self) -> int:
        return self.tensors.nbytes

    @property
    def device(self) -> torch.device:
        return self.tensors.device

    def to(self, device: torch.device) -> TokenTensors:
        return self.tensors.to(device)

    def gather(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.tensors.gather(index)


def build_tokenizer(lowercase: bool) -> Tokenizer:
    """Word-level tokenizer: HTML line breaks removed, NFKC (and lowercase), words and punctuation split."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    steps = [normalizers.Replace("<br />", " "), normalizers.Replace("<br/>", " "), normalizers.NFKC()]
    tokenizer.normalizer = normalizers.Sequence(steps + ([normalizers.Lowercase()] if lowercase else []))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+ | [^\w\s]+
    return tokenizer


class TextDataModule(HeldOutRows, TensorDataModule, PredictsInputs):
    """Text classification data: tokenised once, cached, served as padded id tensors.

    Sources: "aclimdb" reads `aclImdb/{train,test}/<class>/*.txt` from the extracted folder
    (`folder`) or straight from the archive (`archive`, downloaded from `url` when missing);
    "csv" reads a CSV/TSV with a text and a label column (`train_file`, optional `test_file`).

    The vocabulary (HF `tokenizers` WordLevel, `min_frequency`, `max_vocab`) is trained on the
    training split only, after the validation split is set aside; it travels in checkpoints as the
    tokenizer's JSON, with the class names and `max_length`. With `tokenizer` (a pretrained model's
    name or directory; `net=transformer` sets it), that model's own fast tokenizer is used instead,
    with its special tokens, truncated to `max_length`; it travels in checkpoints as its JSON too
    (not a pickled object), so a restored run needs neither transformers' hub nor the directory.

    Args:
        source: "aclimdb" or "csv".
        folder: aclImdb folder (the one holding train/ and test/); read first when it exists.
        archive: aclImdb .tar.gz, read without extracting.
        url: Public source of the archive. md5: its checksum.
        classes: Class folders (aclimdb) or label values (csv) in order; None: all, sorted (for
            aclimdb, the folders both splits have: train/unsup is left out).
        train_file, test_file: CSV/TSV files (csv source); without test_file, test rows are split off.
        text_column, label_column: Columns of the CSV/TSV (names, or positions 0, 1, ... in a file
            without a header row).
        sep: CSV separator; None detects it.
        header: Whether the CSV's first row names the columns; None detects it (`csv_files.detect_header`).
        missing_target: CSV rows whose label is empty: "drop" them (counted in a warning per file) or
            stop with an "error".
        lowercase: Lowercase texts before tokenising.
        min_frequency: Words seen fewer times in training texts are unknown.
        max_vocab: Vocabulary size, [PAD] and [UNK] included; None: every word seen `min_frequency` times.
        max_length: Tokens kept per text (the rest is cut), at most the pretrained tokenizer's limit;
            None: the 95th percentile of the training texts' lengths, rounded up to a multiple of 16.
        tokenizer: A Hugging Face model name or local directory whose fast tokenizer replaces the
            vocabulary (`lowercase`, `min_frequency`, `max_vocab` then do not apply); needs `.[hf]`.
        val_fraction: Share of the training texts held out for validation.
        test_fraction: Share held out for testing when a CSV has no test_file.
        cache_dir: Where tokenised data is cached; None tokenises every run.
        storage: Where the token ids are served from: "memory" (read into RAM), "stream" (memory-mapped
            from the cache folder, so memory does not grow with the corpus) or "auto" (memory when the
            ids fit `memory_budget_gb`, else stream; the choice is shown with the inferred settings).
        memory_budget_gb: RAM the ids may take under "auto"; None: a quarter of this machine's RAM.
        batch_size, num_workers, split_seed, on_device: see `TensorDataModule`.
    """

    collate_fn = staticmethod(whole_batch)  # __getitems__ serves whole batches
    input_kind = "texts"  # what a serve request holds (`dltemplate.data.protocols.PredictsInputs`)

    def __init__(
        self,
        source: Literal["aclimdb", "csv"] = "aclimdb",
        folder: str | None = None,
        archive: str | None = None,
        url: str | None = None,
        md5: str | None = None,
        classes: Sequence[str] | None = None,
        train_file: str | None = None,
        test_file: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        sep: str | None = None,
        header: bool | None = None,
        missing_target: MissingTarget = "drop",
        lowercase: bool = True,
        min_frequency: int = 2,
        max_vocab: int | None = None,
        max_length: int | None = None,
        tokenizer: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        cache_dir: str | None = None,
        storage: Literal["auto", "memory", "stream"] = "auto",
        memory_budget_gb: float | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        on_device: bool | None = None,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed, on_device=on_device)
        if source not in ("aclimdb", "csv"):
            raise ConfigError(f"data.source must be 'aclimdb' or 'csv', got {source!r}")
        check_missing_target(missing_target)
        if source == "csv" and text_column == label_column:
            raise ConfigError(
                f"data.text_column and data.label_column are both {text_column!r}: the labels would be the texts "
                "themselves; set data.label_column to the column of classes"
            )
        if storage not in ("auto", "memory", "stream"):
            raise ConfigError(f"data.storage must be auto, memory or stream, got {storage!r}")
        text_column, label_column = str(text_column), str(label_column)  # data.label_column=0: a position
        self.save_hyperparameters(logger=False)
        self._header_found: tuple[bool, str] | None = None  # the training file's, from `read_csv`
        self._scratch: tempfile.TemporaryDirectory | None = None  # the ids' folder when nothing is cached
        self.tokenizer: Tokenizer | None = None
        self.pad_id = 0  # the padding token's id: [PAD] of the vocabulary, or the pretrained tokenizer's
        self.classes: list[str] | None = None
        self.val_texts: list[str] = []
        self.predict_input: str | Sequence[str] | None = None  # set by `use_predict_input`
        self.predict_texts: list[str] = []

    # ---- reading -------------------------------------------------------------------------------

    def fetch_data(self) -> None:
        hp = self.hparams
        if hp.source == "aclimdb" and not (hp.folder and Path(hp.folder).is_dir()):
            if hp.archive is None:
                raise ConfigError(f"set data.folder or data.archive; expected layout: {ACLIMDB_LAYOUT}")
            ensure_file(hp.archive, hp.url, hp.md5, ACLIMDB_LAYOUT)

    def _source_path(self) -> Path:
        hp = self.hparams
        if hp.source == "csv":
            return Path(hp.train_file)
        return Path(hp.folder) if hp.folder and Path(hp.folder).is_dir() else Path(hp.archive)

    def _read(self) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
        """(train texts, train labels, test texts, test labels, classes), labels as class names."""
        hp = self.hparams
        if hp.source == "aclimdb":
            splits, classes = read_aclimdb(self._source_path(), list(hp.classes) if hp.classes else None)
            (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
            return train_x, [classes[i] for i in train_y], test_x, [classes[i] for i in test_y], classes
        if hp.train_file is None:
            raise ConfigError("the csv source needs data.train_file")
        frame = self._read_labelled(hp.train_file)
        labels = frame[hp.label_column]
        if not hp.classes and len(frame) > 10 and labels.nunique() == len(frame):
            raise DataError(
                f"data.label_column={hp.label_column!r} of {hp.train_file} has a different value in each of its "
                f"{len(frame)} rows (e.g. {str(labels.iloc[0])[:40]!r}): it is not a column of classes (a text or "
                "an id?); set data.label_column to the column of classes"
            )
        if hp.test_file is None:
            keep, held = self._split(list(frame[hp.label_column]), hp.test_fraction)
            sizes = {"training": len(keep), "test": len(held)}
            require_split(sizes, hp.train_file, "texts", f"data.test_fraction={hp.test_fraction}")
            test = frame.iloc[held]
            frame = frame.iloc[keep]
        else:
            test = self._read_labelled(hp.test_file)
        classes = list(hp.classes) if hp.classes else sorted(frame[hp.label_column].unique())
        return (
            list(frame[hp.text_column]),
            list(frame[hp.label_column]),
            list(test[hp.text_column]),
            list(test[hp.label_column]),
            classes,
        )

    def _read_labelled(self, path: str) -> pd.DataFrame:
        """A CSV/TSV of texts and labels, without (or refusing) the rows whose label is empty."""
        hp = self.hparams
        header = hp.header if hp.header is not None or self._header_found is None else self._header_found[0]
        frame = read_text_table(Path(path), hp.text_column, hp.label_column, hp.sep, header)
        if self._header_found is None:
            self._header_found = frame.attrs["header"]
        return rows_with_target(frame, hp.label_column, path, hp.missing_target)

    def _split(self, labels: Sequence[str], fraction: float) -> tuple[list[int], list[int]]:
        """Stratified (kept, held out) row positions."""
        mask = stratified_holdout(labels, len(labels), self.hparams.split_seed, fraction=fraction)
        return (~mask).nonzero().squeeze(1).tolist(), mask.nonzero().squeeze(1).tolist()

    # ---- tokenising ----------------------------------------------------------------------------

    def encode_chunks(self, texts: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int32, lengths int64) of `CHUNK` texts at a time, each text cut at `max_length`; empty texts: 0."""
        length = self.hparams.max_length
        for start in range(0, len(texts), CHUNK):
            rows = [e.ids[:length] for e in self.tokenizer.encode_batch(list(texts[start : start + CHUNK]))]
            lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
            ids = np.fromiter((i for r in rows for i in r), dtype=np.int32, count=int(lengths.sum()))
            yield ids, lengths

    def encode(self, texts: Sequence[str]) -> TokenIds:
        """The texts' token ids in memory (labels 0), e.g. to predict."""
        chunks = list(self.encode_chunks(texts)) or [(np.zeros(0, np.int32), np.zeros(0, np.int64))]
        ids = np.concatenate([c[0] for c in chunks])
        offsets = np.concatenate([[0], np.cumsum(np.concatenate([c[1] for c in chunks]))]).astype(np.int64)
        return TokenIds(ids, offsets, torch.zeros(len(texts), dtype=torch.long), self.pad_id)

    def _write_ids(self, texts: Sequence[str], folder: Path, name: str) -> None:
        """Tokenise `texts` chunk by chunk into `<name>.ids` (raw int32) and `<name>.offsets.npy`."""
        offsets = [np.zeros(1, dtype=np.int64)]
        total = 0
        with (folder / f"{name}.ids").open("wb") as out:
            for ids, lengths in self.encode_chunks(texts):
                out.write(ids.tobytes())
                offsets.append(total + np.cumsum(lengths))
                total += int(lengths.sum())
        np.save(folder / f"{name}.offsets.npy", np.concatenate(offsets))

    def _labels(self, labels: Sequence[str], name: str) -> Tensor:
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({str(label) for label in labels if label not in index})
        if unknown:
            raise DataError(
                f"{name} has labels {unknown[:5]} outside the classes {self.classes}: fix them, or data.classes"
            )
        return torch.tensor([index[label] for label in labels])

    def _tokenise_all(self, folder: Path, tokenizer: Tokenizer | None = None) -> None:
        """Read, split, train the vocabulary on the training texts (unless given one), encode into `folder`.

        `folder` gets `meta.pt` (tokenizer JSON, classes, the first validation texts: plain data) and
        per split the ids (`<split>.ids`, `<split>.offsets.npy`) and labels (`<split>.labels.npy`).
        """
        hp = self.hparams
        train_x, train_y, test_x, test_y, classes = self._read()
        if len(set(train_y)) < 2:
            raise DataError(
                f"labels of {self._source_path()} have a single class {sorted(set(train_y))}: need at least two"
            )
        mask = self.validation_mask(train_y, len(train_y), hp.val_fraction)
        keep, held = (~mask).nonzero().squeeze(1).tolist(), mask.nonzero().squeeze(1).tolist()
        sizes = {"training": len(keep), "validation": len(held)}
        require_split(sizes, self._source_path(), "training texts", f"data.val_fraction={hp.val_fraction}")
        fit_texts = [train_x[i] for i in keep]
        if tokenizer is None and hp.tokenizer is not None:
            tokenizer, self.pad_id = pretrained_tokenizer(hp.tokenizer, hp.max_length)
        elif tokenizer is None:
            tokenizer = build_tokenizer(hp.lowercase)
            trainer = trainers.WordLevelTrainer(
                vocab_size=hp.max_vocab or 2**31 - 1, min_frequency=hp.min_frequency, special_tokens=[PAD, UNK]
            )
            tokenizer.train_from_iterator(fit_texts, trainer=trainer)
            self.infer(
                "max_vocab",
                tokenizer.get_vocab_size(),
                f"words seen at least data.min_frequency={hp.min_frequency} times in the training texts, + 2 special",
            )
        elif classes != self.classes:
            raise DataError(f"the classes {classes} of {self._source_path()} are not the checkpoint's {self.classes}")
        self.tokenizer, self.classes = tokenizer, classes
        if hp.max_length is None:
            self._infer_max_length(fit_texts)
        parts = {
            "train": (fit_texts, [train_y[i] for i in keep]),
            "val": ([train_x[i] for i in held], [train_y[i] for i in held]),
            "test": (test_x, test_y),
        }
        del train_x, fit_texts
        for name, (texts, labels) in parts.items():
            labels = self._labels(labels, f"{self._source_path()} ({name})")
            np.save(folder / f"{name}.labels.npy", labels.numpy())
            self._write_ids(texts, folder, name)
        meta = {
            "max_length": hp.max_length,
            "train_tokens": int(np.load(folder / "train.offsets.npy", mmap_mode="r")[-1]),
            "tokenizer": tokenizer.to_str(),
            "pad_id": self.pad_id,
            "classes": classes,
            "val_texts": parts["val"][0][:VAL_TEXTS_KEPT],
            "val_positions": held,
            "header": self._header_found,
        }
        torch.save(meta, folder / "meta.pt")  # written last: a folder with it is complete

    def _infer_max_length(self, texts: Sequence[str]) -> None:
        """`max_length` from the lengths of (up to 4096 of) the training texts: their 95th percentile."""
        step = max(1, len(texts) // 4096)
        lengths = [len(e.ids) for e in self.tokenizer.encode_batch(list(texts[::step]))]
        value = int(-(-max(np.percentile(lengths, 95), 1) // 16) * 16)
        limit = self.tokenizer.truncation["max_length"] if self.tokenizer.truncation else None
        value = min(value, limit) if limit else value
        self.infer("max_length", value, f"95% of {len(lengths)} training texts have at most this many tokens")
        if limit:  # a pretrained tokenizer cuts texts itself
            self.tokenizer.enable_truncation(value)

    def _tokenised(self) -> Path:
        """The folder of tokenised data: the cache's for these settings and files (built once, under a
        lock, whatever the number of processes), else a temporary one that lives as long as this module."""
        path = self._cache_path()
        if path is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="text-")
            self._tokenise_all(Path(self._scratch.name))
            return Path(self._scratch.name)

        def build(partial: Path) -> None:
            partial.mkdir()
            self._tokenise_all(partial)  # writes meta.pt last

        return cached_folder(path, build, "meta.pt", "tokenised texts")

    def _cache_path(self) -> Path | None:
        """The cache file of these settings and these files: every file of a folder, else the archive or CSVs."""
        hp = self.hparams
        if hp.cache_dir is None:
            return None
        source = self._source_path()
        if source.is_dir():
            files = aclimdb_files(source)
        else:
            files = [p for p in (source, Path(hp.test_file) if hp.test_file else None) if p is not None and p.is_file()]
        if hp.tokenizer is not None and Path(hp.tokenizer).is_dir():  # a local tokenizer's files are part of the key
            files = [*files, *sorted(p for p in Path(hp.tokenizer).iterdir() if p.is_file())]
        # how ids are served, not what they are
        serving = ("batch_size", "num_workers", "on_device", "storage", "memory_budget_gb")
        settings = sorted((k, v) for k, v in hp.items() if k not in serving)
        if self.given_split is not None:  # a cross-validation fold: its own validation texts and vocabulary
            settings.append(("split", dataclasses.astuple(self.given_split)))
        return Path(hp.cache_dir) / f"text-{files_key(files, settings)}"

    # ---- Lightning hooks -----------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if stage == "predict":
            self._setup_predict()
            return
        if self.train_set is not None:
            return
        if self.tokenizer is not None:  # restored from a checkpoint: encode with its vocabulary, cache nothing
            self._scratch = tempfile.TemporaryDirectory(prefix="text-")
            folder = Path(self._scratch.name)
            self._tokenise_all(folder, self.tokenizer)
        elif self.hparams.tokenizer is not None and not self.fetches_data:
            raise DataError("this checkpoint holds no tokenizer, and a restored run loads none from a name or folder")
        else:
            folder = self._tokenised()
        meta = torch.load(folder / "meta.pt", weights_only=True)
        self._record_cached_inferences(meta)
        self.tokenizer, self.classes = Tokenizer.from_str(meta["tokenizer"]), meta["classes"]
        self.pad_id = meta.get("pad_id", 0)
        self.val_texts = meta["val_texts"]
        self.val_positions = torch.tensor(meta.get("val_positions", []), dtype=torch.long)
        stream = self._choose_storage(sum((folder / f"{name}.ids").stat().st_size for name in SPLITS))
        self.train_set, self.val_set, self.test_set = (self._open(folder, name, stream) for name in SPLITS)

    def _record_cached_inferences(self, meta: dict[str, Any]) -> None:
        """Settings and net sizes from the data, also when the tokenised data came from the cache."""
        hp = self.hparams
        if hp.header is None and meta.get("header") is not None:
            self.infer("header", *meta["header"])
        if hp.max_length is None:
            self.infer("max_length", meta["max_length"], "95% of the training texts have at most this many tokens")
        if hp.max_vocab is None and hp.tokenizer is None:
            vocab = Tokenizer.from_str(meta["tokenizer"]).get_vocab_size()
            self.infer("max_vocab", vocab, f"words seen at least data.min_frequency={hp.min_frequency} times, + 2")
        tokens = meta.get("train_tokens", 0)
        # word-pair buckets: about one per 4 training tokens (few collisions), a power of two in [2^12, 2^21]
        buckets = 2 ** min(21, max(12, int(np.ceil(np.log2(max(tokens, 1) / 4)))))
        self.infer("dims.buckets", buckets, f"{tokens} training tokens / 4, as a power of two in [2^12, 2^21]")
        width = 16 if tokens < 5_000_000 else 32
        self.infer("dims.embedding_dim", width, f"{tokens} training tokens ({'<' if width == 16 else '>='} 5M)")

    def _choose_storage(self, size: int) -> bool:
        """Whether to stream the ids (`size` bytes) from disk: `storage`, or under "auto" the memory budget."""
        hp = self.hparams
        if hp.storage != "auto":
            return hp.storage == "stream"
        fits, reason = memory_fits(size, hp.memory_budget_gb, "token ids")
        stream = not fits
        hp.storage = None  # "auto": the choice is recorded like any setting worked out from the data
        return self.infer("storage", "stream" if stream else "memory", reason) == "stream"

    def _open(self, folder: Path, name: str, stream: bool) -> TokenIds:
        """A split's ids memory-mapped (`stream`) or read into memory."""
        path = folder / f"{name}.ids"
        if stream and path.stat().st_size:
            ids = np.memmap(path, dtype=np.int32, mode="r")
        else:  # (an empty file cannot be memory-mapped)
            ids = np.fromfile(path, dtype=np.int32)
        offsets = np.load(folder / f"{name}.offsets.npy", mmap_mode="r" if stream else None)
        labels = torch.from_numpy(np.load(folder / f"{name}.labels.npy"))
        return TokenIds(ids, offsets, labels, self.pad_id) if stream else TokenRows(ids, offsets, labels, self.pad_id)

    # ---- prediction ----------------------------------------------------------------------------

    def read_predict_input(self, source: str | Sequence[str]) -> list[str]:
        """Texts to predict: a .txt file (one per line), a .csv/.tsv (its text column), or the strings.

        A single string that looks like a path (a .txt/.csv/.tsv name, or a path without spaces) must be
        a file: a missing one is an error, not a text to classify.
        """
        if isinstance(source, str):
            path = Path(source)
            suffix = path.suffix.lower()  # reviews.TXT is a text file too
            if suffix in (".txt", ".csv", ".tsv") and path.is_file():
                if suffix == ".txt":
                    return path.read_text(encoding="utf-8", errors="replace").splitlines()
                return list(
                    read_text_table(path, self.hparams.text_column, None, self.hparams.sep, self.hparams.header)[
                        self.hparams.text_column
                    ]
                )
            if path.is_file():
                raise DataError(
                    f"input={source} is a file, but not a .txt (one text per line), .csv or .tsv file; give it one "
                    f"of those suffixes, or to classify the string itself pass it in a list: input=['{source}']"
                )
            if _looks_like_path(source):
                problem = "is a folder" if path.is_dir() else "does not exist"
                raise MissingFileError(
                    f"input={source} looks like a file, but {path} {problem}; "
                    f"to classify the string itself, pass it in a list: input=['{source}']"
                )
            return [source]
        return [str(text) for text in source]

    def use_predict_input(self, inputs: str | Sequence[str]) -> None:
        """The texts the next `setup("predict")` reads (`read_predict_input`: a .txt/.csv/.tsv file or strings)."""
        self.predict_input = inputs

    def _setup_predict(self) -> None:
        if self.tokenizer is None:
            raise RuntimeError("the data module has no vocabulary: restore it from a checkpoint first")
        if self.predict_input is None:
            raise RuntimeError("call use_predict_input (texts, a .txt or a .csv file) before predicting")
        self.predict_texts = self.read_predict_input(self.predict_input)
        self.predict_set = self.encode(self.predict_texts)
        lengths = self.predict_set.lengths
        empty = int((lengths == 0).sum())
        unk_id = self.tokenizer.token_to_id(UNK)
        unknown = 0
        if unk_id is not None:
            known = (self.predict_set.ids != unk_id) & (self.predict_set.ids != self.pad_id)
            seen = np.concatenate([[0], np.cumsum(known)])  # known tokens before each position
            offsets = self.predict_set.offsets
            unknown = int((seen[offsets[1:]] == seen[offsets[:-1]]).sum()) - empty
        if empty or unknown:
            log.warning(
                "%d empty text(s) and %d made only of unknown words: their predictions rest on no words", empty, unknown
            )

    def format_predictions(self, predictions: Tensor) -> pd.DataFrame:
        """text, predicted class and one probability column per class."""
        texts = pd.DataFrame({"text": self.predict_texts})
        return pd.concat([texts, class_table(predictions, self.classes)], axis=1)

    # ---- what nets and checkpoints need --------------------------------------------------------

    @property
    def class_names(self) -> list[str] | None:
        return self.classes

    @property
    def example_input_array(self) -> Tensor:
        return self.train_set.__getitems__([0, 1])[0]

    target_kind = "classification"  # what its targets ask of a module (checked when the run is built)

    @property
    def dims(self) -> dict[str, Any]:
        k = len(self.classes)
        return {
            "vocab_size": self.tokenizer.get_vocab_size(),
            "pad_token_id": self.pad_id,
            "num_classes": k,
            "out_features": 1 if k == 2 else k,
            "max_length": self.hparams.max_length,
            **{k.removeprefix("dims."): v.value for k, v in self.inferred.items() if k.startswith("dims.")},
            # module.class_weights='${dims.class_weights}': balanced on the training split
            **({} if self.train_set is None else {"class_weights": balanced_class_weights(self.train_set.labels, k)}),
        }

    def state_dict(self) -> dict[str, Any]:
        if self.tokenizer is None:
            return {}
        return {"tokenizer": self.tokenizer.to_str(), "classes": self.classes, "pad_id": self.pad_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.tokenizer, self.classes = Tokenizer.from_str(state["tokenizer"]), state["classes"]
            self.pad_id = state.get("pad_id", 0)


def pretrained_tokenizer(name: str, max_length: int | None) -> tuple[Tokenizer, int]:
    """The fast tokenizer of a pretrained model (hub name, through its cache, or a local folder) and its
    padding id, truncating to `max_length` (capped at the model's limit) and padding nothing (batches pad)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ImportError("data.tokenizer needs transformers: pip install -e '.[hf]'") from None
    from dltemplate.text.nets.transformer import from_hub_or_folder

    loaded = from_hub_or_folder(
        lambda: AutoTokenizer.from_pretrained(name, use_fast=True, trust_remote_code=False),
        name,
        "tokenizer",
        f"data.tokenizer={name} (net=transformer sets it)",
    )
    if not loaded.is_fast:
        raise ConfigError(f"data.tokenizer={name}: the model has no fast tokenizer (tokenizer.json) to store")
    tokenizer = Tokenizer.from_str(loaded.backend_tokenizer.to_str())
    limit = loaded.model_max_length if 0 < loaded.model_max_length < 1_000_000 else None
    cuts = [n for n in (max_length, limit) if n is not None]
    tokenizer.enable_truncation(min(cuts) if cuts else 1_000_000)  # max_length None: inferred, then cut again
    tokenizer.no_padding()
    pad = loaded.pad_token_id if loaded.pad_token_id is not None else loaded.eos_token_id
    return tokenizer, int(pad or 0)


def _looks_like_path(text: str) -> bool:
    """A .txt/.csv/.tsv name, or a string with a path separator and no spaces."""
    if text.lower().endswith((".txt", ".csv", ".tsv")):
        return True
    return any(sep in text for sep in {"/", os.sep}) and not any(c.isspace() for c in text)
