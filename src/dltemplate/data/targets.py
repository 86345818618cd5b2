"""Rows whose target is empty: left out with one warning per file, or refused (`data.missing_target`)."""

import logging
from typing import Literal

import pandas as pd
import torch

from dltemplate.errors import ConfigError, DataError, MissingColumnError

log = logging.getLogger(__name__)

MissingTarget = Literal["drop", "error"]


def check_missing_target(policy: str) -> None:
    """Refuse a `data.missing_target` other than "drop" or "error"."""
    if policy not in ("drop", "error"):
        raise ConfigError(f"data.missing_target must be 'drop' or 'error', got {policy!r}")


def rows_with_target(frame: pd.DataFrame, column: str, source: str, policy: MissingTarget) -> pd.DataFrame:
    """The rows of `frame` (read from `source`) whose `column` is not empty (missing, or blank text).

    With `policy="drop"` the others are left out and counted in one warning; with "error" they are a
    `DataError` naming the file, their number and the first of them.
    """
    if column not in frame.columns:
        raise MissingColumnError(
            f"target column {column!r} is not in {source}; it has {list(frame.columns)}: fix the target setting"
        )
    target = frame[column]
    empty = target.isna() | target.astype(str).str.strip().eq("")
    count = int(empty.sum())
    if count == 0:
        return frame
    if policy == "error":
        raise DataError(
            f"{count} rows of {source} have an empty target {column!r} (the first is row {empty.idxmax()}); "
            "fill them in, or set data.missing_target=drop to leave them out"
        )
    if count == len(frame):
        raise DataError(f"every row of {source} has an empty target {column!r}: fill them in")
    log.warning("dropped %d rows of %s whose target %r is empty", count, source, column)
    return frame[~empty]


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> list[float]:
    """Loss weights that balance the classes of the training labels: N / (K × count), a missing class as 1 row.

    What `module.class_weights='${dims.class_weights}'` takes, for every classification family.
    """
    counts = torch.bincount(torch.as_tensor(labels).long(), minlength=num_classes).float()
    return (counts.sum() / (num_classes * counts.clamp(min=1))).tolist()


def as_labels(values: pd.Series) -> pd.Series:
    """Class labels as text: whole numbers that pandas read as floats are written as integers.

    A column of integer classes with an empty cell is read as floats (0.0, 1.0, NaN); its classes
    are still '0' and '1', as in a file without empty cells, not '0.0' and '1.0'. Empty cells stay
    empty (NaN); other values are their text.
    """
    if pd.api.types.is_float_dtype(values):
        present = values.dropna()
        if len(present) and (present == present.round()).all() and present.abs().max() < 2**53:
            return values.map(lambda v: v if pd.isna(v) else str(int(v)))
    return values.astype(str).where(values.notna(), values)
