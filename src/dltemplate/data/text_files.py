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


def read_aclimdb(path: Path, classes: Sequence[str]) -> dict[str, tuple[list[str], list[int]]]:
    """{"train": (texts, labels), "test": (...)} from an aclImdb folder or .tar.gz, files in name order.

    Bytes that are not UTF-8 are replaced (U+FFFD), and the files that had them are counted in a warning.
    """
    found: dict[str, list[tuple[str, int, str]]] = {"train": [], "test": []}
    bad: list[str] = []
    wanted = {name: i for i, name in enumerate(classes)}

    def add(parts: Sequence[str], read) -> None:
        # parts: [..., split, class, file]
        split, label, name = parts[-3], parts[-2], parts[-1]
        if split in found and label in wanted and name.endswith(".txt"):
            found[split].append((name, wanted[label], _decode(read(), "/".join(parts[-4:]), bad)))

    if path.is_dir():
        for file in aclimdb_files(path):
            add(file.parts, file.read_bytes)
    elif path.is_file():
        _read_archive(path, add)
    else:
        raise MissingFileError(f"{path} does not exist; expected layout: {ACLIMDB_LAYOUT}")
    for split, items in found.items():
        counts = {c: sum(1 for _, label, _ in items if label == i) for c, i in wanted.items()}
        if not items or min(counts.values()) == 0:
            raise DataError(
                f"{path} has no {split} texts for some classes ({counts}); expected layout: {ACLIMDB_LAYOUT}"
            )
    if bad:
        log.warning("%d file(s) were not valid UTF-8 (bad bytes replaced by U+FFFD), e.g. %s", len(bad), bad[0])
    return {
        split: ([t for *_, t in sorted(items)], [label for _, label, _ in sorted(items)])
        for split, items in found.items()
    }


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


def read_text_table(path: Path, text_column: str, label_column: str | None, sep: str | None) -> pd.DataFrame:
    """A CSV/TSV of texts (and labels), every cell a string; the separator is detected when `sep` is None."""
    frame = read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    needed = [c for c in (text_column, label_column) if c is not None]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise MissingColumnError(
            f"{path} lacks the column(s) {missing}; it has {list(frame.columns)}: "
            "set data.text_column and data.label_column"
        )
    return frame
