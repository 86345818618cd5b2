"""Read labelled texts: the aclImdb layout (archive or folder) and CSV/TSV files."""

import gzip
import logging
import lzma
import tarfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from dltemplate.data.csv_files import read_csv
from dltemplate.errors import DataError, MissingColumnError, MissingFileError

log = logging.getLogger(__name__)

ACLIMDB_LAYOUT = "aclImdb/{train,test}/<class>/*.txt (e.g. aclImdb/train/pos/0_9.txt), as a folder or a .tar.gz"


def _decode(data: bytes, name: str, bad: list[str]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        bad.append(name)
        return data.decode("utf-8", errors="replace")


def aclimdb_files(folder: Path) -> list[Path]:
    """The text files of an aclImdb-style folder, `<split>/<class>/*.txt`, in name order."""
    return sorted(folder.glob("*/*/*.txt"))


def read_aclimdb(
    path: Path, classes: Sequence[str] | None = None
) -> tuple[dict[str, tuple[list[str], list[int]]], list[str]]:
    """({"train": (texts, labels), "test": (...)}, class names) from an aclImdb folder or .tar.gz.

    Files are in name order. `classes` None means every class folder that both splits have, sorted
    (aclImdb's train/unsup, unlabelled, is in one split only). Bytes that are not UTF-8 are
    replaced (U+FFFD), and the files that had them are counted in a warning.
    """
    found: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}  # (file name, class, content)

    def add(parts: Sequence[str], read) -> None:
        # parts: [..., split, class, file]
        split, label, name = parts[-3], parts[-2], parts[-1]
        if split in found and (classes is None or label in classes) and name.endswith(".txt"):
            found[split].append((name, label, read()))

    if path.is_dir():
        for file in aclimdb_files(path):
            add(file.parts, file.read_bytes)
    elif path.is_file():
        _read_archive(path, add)
    else:
        raise MissingFileError(f"{path} does not exist; expected layout: {ACLIMDB_LAYOUT}")
    classes = list(classes) if classes is not None else _classes_of_both_splits(found, path)
    wanted = {name: i for i, name in enumerate(classes)}
    for split, items in found.items():
        items[:] = [item for item in items if item[1] in wanted]
        counts = {c: sum(1 for _, label, _ in items if label == c) for c in classes}
        if not items or min(counts.values()) == 0:
            raise DataError(
                f"{path} has no {split} texts for some classes ({counts}); expected layout: {ACLIMDB_LAYOUT}"
            )
    bad: list[str] = []
    splits = {}
    for split, items in found.items():
        ordered = sorted((name, wanted[label], data) for name, label, data in items)
        texts = [_decode(data, f"{split}/{classes[label]}/{name}", bad) for name, label, data in ordered]
        splits[split] = (texts, [label for _, label, _ in ordered])
    if bad:
        log.warning("%d file(s) were not valid UTF-8 (bad bytes replaced by U+FFFD), e.g. %s", len(bad), bad[0])
    return splits, classes


def _classes_of_both_splits(found: dict[str, list[tuple[str, str, bytes]]], path: Path) -> list[str]:
    """The class folders that the train and the test split both have, sorted; the others named in a warning."""
    present = {split: {label for _, label, _ in items} for split, items in found.items()}
    classes = sorted(present["train"] & present["test"])
    ignored = sorted((present["train"] | present["test"]) - set(classes))
    if ignored:
        log.warning(
            "%s: class folder(s) %s are not in both train and test and are left out; set data.classes to choose",
            path,
            ignored,
        )
    return classes


def _read_archive(path: Path, add: Callable[[Sequence[str], Callable[[], bytes]], None]) -> None:
    """Call `add(name parts, read)` for each file of the tar archive `path`; a damaged archive is a DataError."""
    try:
        if not tarfile.is_tarfile(path):
            raise DataError(f"{path} is neither a folder nor a tar archive; expected layout: {ACLIMDB_LAYOUT}")
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                parts = member.name.split("/")
                if member.isfile() and len(parts) >= 4:
                    add(parts, archive.extractfile(member).read)
    except (EOFError, tarfile.TarError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as error:
        raise DataError(
            f"{path} is damaged or truncated ({type(error).__name__}: {error}); "
            "delete it to download it again, or replace it with a complete copy"
        ) from None


def read_text_table(
    path: Path, text_column: str, label_column: str | None, sep: str | None, header: bool | None = True
) -> pd.DataFrame:
    """A CSV/TSV of texts (and labels), every cell a string; the separator is detected when `sep` is None.

    `header`: see `csv_files.read_csv` (None detects whether the first row names the columns; without
    names, the columns are "0", "1", ...).
    """
    frame = read_csv(path, sep=sep, header=header, dtype=str, keep_default_na=False)
    needed = [str(c) for c in (text_column, label_column) if c is not None]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        has_header, why = frame.attrs["header"]
        if not has_header:
            first = frame.iloc[0].tolist()
            hint = (
                f"it has no header row ({why}): its columns are {list(frame.columns)} (first row {first}); "
                "set data.text_column and data.label_column to their positions, or data.header=true"
            )
        else:
            hint = f"it has {list(frame.columns)}: set data.text_column and data.label_column"
        raise MissingColumnError(f"{path} lacks the column(s) {missing}; {hint}")
    return frame
