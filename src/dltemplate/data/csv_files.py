"""Read CSV/TSV files one way for every task: separator and header row detected, bad bytes replaced, one clear error.

A file's first row is its header unless it looks like data (`detect_header`): then the columns are
named by position, "0", "1", ..., so `data.label_column=0` names the first. `header=True|False`
forces either.
"""

import csv
import io
import logging
from pathlib import Path

import pandas as pd

from dltemplate.data import dates
from dltemplate.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

SEPARATORS = (",", "\t", ";", "|")  # the only ones detected; others must be given (data.sep)
SAMPLE_CHARS = 65_536  # what the separator is detected on


def read_csv(path: str | Path, sep: str | None = None, header: bool | None = True, **kwargs) -> pd.DataFrame:
    """The table in `path`, a CSV/TSV file with at least one row (after its header row, when it has one).

    Bytes that are not UTF-8 are replaced by U+FFFD and counted in one warning. `sep=None` detects the
    separator among `SEPARATORS`, falling back to "," (a file of one column has none). `header`: the
    first row holds the column names (True), is data (False: columns "0", "1", ...) or either, as
    `detect_header` decides (None). The decision and why is in `frame.attrs["header"]` as
    (bool, reason). `kwargs` go to `pandas.read_csv`.

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
    reason = "explicit"
    if header is None:
        header, reason = detect_header(text, sep)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, header=0 if header else None, **kwargs)
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
        raise DataError(f"{path} has a header but no rows; if its one row is data, set data.header=false")
    if not header:
        frame.columns = [str(i) for i in range(frame.shape[1])]
    frame.attrs["header"] = (bool(header), reason)
    return frame


LONG_TEXT_WORDS = 10  # a first-row cell of this many words is a sentence, not a column name
HEADER_ROWS = 1000  # rows below the first that `detect_header` compares it with


def detect_header(text: str, sep: str) -> tuple[bool, str]:
    """Whether the first row of `text` names the columns, and why: (True, reason) or (False, reason).

    Each cell of the first row is compared with its column below it. A cell of text over a column
    that is mostly numbers is a name: the file has a header. The first row is data when a cell is a
    sentence (`LONG_TEXT_WORDS` words or more) or a value that the rows below repeat in its column (a
    label such as "spam"), or when every cell is a value of its column's kind (a number over numbers,
    a date over dates). Anything else (short words that do not recur, e.g. "country" over names) is
    read as a header: the common case.
    """
    try:
        rows = [row for row in csv.reader(io.StringIO(text[:SAMPLE_CHARS]), delimiter=sep) if row]
    except csv.Error:
        return True, "the first row (the file does not split into columns to compare)"
    if len(text) > SAMPLE_CHARS:
        rows = rows[:-1]  # may be cut off
    if len(rows) < 2:
        return True, "the first row (there is no other row to compare it with)"
    first, below = rows[0], rows[1 : HEADER_ROWS + 1]
    strong, values, names = [], [], []
    for i, cell in enumerate(first):
        cell = cell.strip()
        column = [row[i].strip() for row in below if len(row) > i and row[i].strip()]
        if not cell or not column:
            continue
        mostly_numbers = sum(_is_number(value) for value in column) >= 0.9 * len(column)
        if _is_number(cell) and mostly_numbers:
            values.append(f"column {i} starts with the number {cell!r}")
        elif mostly_numbers:
            return True, f"the first row: {_short(cell)!r} is a name over a column of numbers"
        elif len(cell.split()) >= LONG_TEXT_WORDS:
            strong.append(f"column {i} starts with a sentence of {len(cell.split())} words")
        elif cell in column and len(set(column)) < len(column):
            strong.append(f"column {i} starts with {_short(cell)!r}, a value its rows repeat")
        elif _is_date_of(cell, column):
            values.append(f"column {i} starts with the date {cell!r}")
        else:
            names.append(cell)
    if strong or (values and not names):
        return False, f"no header row: {'; '.join((strong + values)[:2])}; columns are named 0, 1, ..."
    if names:
        return True, f"the first row: {', '.join(repr(_short(n)) for n in names[:3])} read as names, not values"
    return True, "the first row (nothing in it looks like data)"


def _is_date_of(cell: str, column: list[str]) -> bool:
    """Whether `cell` is a date in the format that most of `column` (text) has."""
    if not any(ch.isdigit() for ch in cell):
        return False
    best = dates.best_format(pd.Series(column[:200]), min_share=0.9)
    return best is not None and bool(dates.parse_dates(pd.Series([cell]), best[0]).notna().all())


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _short(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
