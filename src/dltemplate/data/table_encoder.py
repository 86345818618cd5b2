"""Encode a table's feature columns into one float tensor, with statistics fitted on training rows.

Layout of an encoded row (B, num_numeric + len(categorical)):
    [standardised numeric columns | date parts | missing-value indicators | category codes]
A date column becomes numbers (`<column>.year`, `.month`, ...: the parts that vary in training),
standardised and imputed like the numeric columns.
Category codes are integers stored as floats; the tabular net embeds or one-hot encodes them.
Code 0 means "unknown" (unseen in training, or rarer than `min_category_count`), 1 "missing".

The fitted state is plain lists and dicts, so it is saved in checkpoints that load with
`weights_only=True`; that is why this is not a pickled scikit-learn pipeline.
"""

import logging
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from dltemplate.data.table_columns import DATE_PARTS, date_parts, parse_date_column
from dltemplate.data.targets import as_labels
from dltemplate.errors import DataError, MissingColumnError

log = logging.getLogger(__name__)
UNKNOWN, MISSING = 0, 1


def to_numeric(
    series: pd.Series, source: str, hint: str = "or list the column under categorical", allow_infinite: bool = False
) -> pd.Series:
    """`series` as floats; a value that is present but not a number is an error naming it and its row.

    So is an infinite value (inf, -inf), unless `allow_infinite`.
    """
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        parsed = series.astype("float64")
    else:
        parsed = pd.to_numeric(series, errors="coerce").astype("float64")
        bad = series.notna() & parsed.isna()
        if bad.any():
            row = bad.idxmax()
            raise DataError(
                f"column {series.name!r} of {source} must be numeric, but row {row} holds {series[row]!r} "
                f"({int(bad.sum())} non-numeric values in all); fix the data, {hint}"
            )
    infinite = np.isinf(parsed)
    if infinite.any() and not allow_infinite:
        row = infinite.idxmax()
        raise DataError(
            f"column {series.name!r} of {source} holds {parsed[row]} in row {row} ({int(infinite.sum())} infinite "
            "values in all); replace them with finite numbers, or leave the cells empty (missing values)"
        )
    return parsed


def _infinite_as_missing(values: dict[str, pd.Series], source: str) -> dict[str, pd.Series]:
    """`values` with inf and -inf made missing, and one warning naming their columns and (first) rows."""
    found = {column: series.index[np.isinf(series)] for column, series in values.items()}
    found = {column: rows for column, rows in found.items() if len(rows)}
    if found:
        where = "; ".join(
            f"column {column!r}, {len(rows)} row(s): {', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''}"
            for column, rows in found.items()
        )
        log.warning("%s holds infinite values, treated as missing (imputed): %s", source, where)
    return {column: series.mask(np.isinf(series)) for column, series in values.items()}


class TableEncoder:
    """Standardises numeric columns and codes categorical ones, fitted on training rows only.

    Args:
        numeric: Numeric feature columns: median-imputed, standardised, plus a missing-value
            indicator for each column that had missing values in training.
        categorical: Categorical feature columns: coded by training frequency.
        min_category_count: Categories seen fewer times in training are coded as unknown.
        dates: Date columns → their format (`strptime` codes); their varying parts become numeric.
    """

    def __init__(
        self,
        numeric: list[str],
        categorical: list[str],
        min_category_count: int = 1,
        dates: dict[str, str] | None = None,
    ) -> None:
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.min_category_count = min_category_count
        self.dates = dict(dates or {})
        self.date_parts: dict[str, list[str]] = {}  # date column → the parts that vary in training
        self.stats: dict[str, dict[str, float]] = {}
        self.vocab: dict[str, list[str]] = {}
        self.indicators: list[str] = []

    @property
    def fitted(self) -> bool:
        return bool(self.stats or self.vocab)

    @property
    def num_numeric(self) -> int:
        """Width of the float part of a row: numeric columns, date parts and missing indicators."""
        return len(self.numeric) + sum(map(len, self.date_parts.values())) + len(self.indicators)

    @property
    def cardinalities(self) -> list[int]:
        """Number of codes of each categorical column, unknown and missing included."""
        return [len(self.vocab[c]) + 2 for c in self.categorical]

    def fit(self, frame: pd.DataFrame, source: str) -> "TableEncoder":
        for column, fmt in self.dates.items():
            parts = date_parts(parse_date_column(frame[column], fmt, source))
            varies = {part for part in DATE_PARTS if parts[part].nunique() > 1}
            if "day" not in varies:  # dates on one day of the month (1975-01-01, ...): weekday follows from the rest
                varies.discard("weekday")
            self.date_parts[column] = [part for part in DATE_PARTS if part in varies]
        for column, values in self._numbers(frame, source, allow_infinite=False).items():
            if values.isna().all():
                raise DataError(
                    f"numeric column {column!r} of {source} has no values in the training rows; "
                    "fill it, or list it under data.drop"
                )
            std = float(values.std(ddof=0))
            self.stats[column] = {"median": float(values.median()), "mean": float(values.mean()), "std": std or 1.0}
            if values.isna().any():
                self.indicators.append(column)
        for column in self.categorical:
            counts = as_labels(frame[column].dropna()).value_counts()  # 3, not 3.0, for a column with gaps
            self.vocab[column] = [str(v) for v, n in counts.items() if n >= self.min_category_count]
        return self

    def transform(
        self, frame: pd.DataFrame, source: str, infinite: Literal["error", "missing"] = "error"
    ) -> torch.Tensor:
        """Encode `frame` into a (rows, num_numeric + len(categorical)) float tensor.

        An infinite numeric value is an error (training data), or with `infinite="missing"` (inputs to
        predict) treated as missing and named in one warning.
        """
        missing = [c for c in [*self.numeric, *self.dates, *self.categorical] if c not in frame.columns]
        if missing:
            raise MissingColumnError(
                f"{source} lacks the feature column(s) {missing}; it has {list(frame.columns)}: add them"
            )
        allow = infinite == "missing"
        numeric = self._numbers(frame, source, allow_infinite=allow)
        if allow:
            numeric = _infinite_as_missing(numeric, source)
        parts = []
        for column, values in numeric.items():
            s = self.stats[column]
            parts.append(((values.fillna(s["median"]) - s["mean"]) / s["std"]).to_numpy())
        parts += [numeric[c].isna().to_numpy(dtype="float64") for c in self.indicators]
        for column in self.categorical:
            index = {v: i + 2 for i, v in enumerate(self.vocab[column])}
            values = frame[column]
            # 3.0 in a file whose column has a gap or was written by a float writer is category 3;
            # a checkpoint of an earlier version may have kept "3.0" itself
            codes = as_labels(values).map(index).fillna(values.astype(str).map(index))
            codes = codes.fillna(UNKNOWN).where(values.notna(), MISSING)
            parts.append(codes.to_numpy(dtype="float64"))
        if not parts:
            raise DataError(
                f"no feature columns are left in {source}: data.drop, data.id_column and the target take them all"
            )
        return torch.tensor(np.column_stack(parts), dtype=torch.float32)

    def _numbers(self, frame: pd.DataFrame, source: str, allow_infinite: bool) -> dict[str, pd.Series]:
        """The numeric columns as floats, then the date columns' parts (`<column>.<part>`)."""
        numbers = {c: to_numeric(frame[c], source, allow_infinite=allow_infinite) for c in self.numeric}
        for column, parts in self.date_parts.items():
            values = date_parts(parse_date_column(frame[column], self.dates[column], source), parts)
            numbers.update({f"{column}.{part}": series for part, series in values.items()})
        return numbers

    def state_dict(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "dates": self.dates,
            "date_parts": self.date_parts,
            "categorical": self.categorical,
            "min_category_count": self.min_category_count,
            "stats": self.stats,
            "vocab": self.vocab,
            "indicators": self.indicators,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TableEncoder":
        encoder = cls(state["numeric"], state["categorical"], state["min_category_count"], state.get("dates"))
        encoder.date_parts = state.get("date_parts", {})  # checkpoints from before date columns have none
        encoder.stats, encoder.vocab, encoder.indicators = state["stats"], state["vocab"], state["indicators"]
        return encoder
