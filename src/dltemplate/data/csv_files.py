"""Read CSV/TSV files one way for every task: separator detected, bad bytes replaced, one clear error."""

import csv
import io
import logging
from pathlib import Path

import pandas as pd

from dltemplate.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

SEPARATORS = (",", "\t", ";", "|")  # the only ones detected; others must be given (data.sep)
SAMPLE_CHARS = 65_536  # what the separator is detected on


def read_csv(path: str | Path, sep: str | None = None, **kwargs) -> pd.DataFrame:
    """The table in `path`, a CSV/TSV file with a header row and at least one row.

    Bytes that are not UTF-8 are replaced by U+FFFD and counted in one warning. `sep=None` detects the
    separator among `SEPARATORS`, falling back to "," (a file of one column has none). `kwargs` go to
    `pandas.read_csv`.

    Raises:
        MissingFileError: `path` is not a file.
        DataError: The file is empty, has no rows, or does not parse with the separator.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist{' (it is a folder)' if path.is_dir() else ''}")
    text = _decode(path.read_bytes(), path)
    if not text.strip():
        raise DataError(f"{path} is empty: expected a CSV file with a header row")
    sep = sep or detect_separator(text)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, **kwargs)
    except pd.errors.ParserError as error:
        reason = str(error).strip().splitlines()[-1]
        raise DataError(
            f"{path} does not read as a table separated by {sep!r} ({reason}); fix that line, or set data.sep"
        ) from None
    if len(frame.columns) == 1:  # a file separated by something else reads as one column
        found = detect_separator(text)
        if found != sep:
            width = len(next(csv.reader(io.StringIO(text), delimiter=found)))
            if width > 1:
                raise DataError(
                    f"{path} reads as one column with the separator {sep!r}, but {found!r} splits its header into "
                    f"{width} columns, so the separator is likely the cause: save it separated by {sep!r}, or "
                    f"(when training) set data.sep={found!r}"
                )
    if frame.empty:
        raise DataError(f"{path} has a header but no rows")
    return frame


def detect_separator(text: str) -> str:
    """The separator that splits the header into most columns and the first rows into as many; "," if none does."""
    sample = text[:SAMPLE_CHARS]
    best, best_score = ",", (0.0, 1)
    for sep in SEPARATORS:
        try:
            rows = [row for row in csv.reader(io.StringIO(sample), delimiter=sep) if row]
        except csv.Error:
            continue
        if len(text) > len(sample):
            rows = rows[:-1]  # may be cut off
        width = len(rows[0]) if rows else 0
        if width < 2:
            continue
        score = (sum(len(row) == width for row in rows) / len(rows), width)
        if score > best_score:
            best, best_score = sep, score
    return best


def _decode(data: bytes, path: Path) -> str:
    """`data` as UTF-8 text (a byte-order mark dropped); bad bytes replaced and counted in a warning."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("utf-8-sig", errors="replace")
    replaced = len(text) - len(data.decode("utf-8-sig", errors="ignore"))
    line = text.count("\n", 0, text.index("\ufffd")) + 1
    log.warning(
        "%s is not valid UTF-8: %d byte sequence(s) were replaced by U+FFFD, the first on line %d; "
        "save the file as UTF-8 to keep those characters",
        path,
        replaced,
        line,
    )
    return text
