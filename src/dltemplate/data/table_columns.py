"""What each column of a table is for, worked out from the training rows: numeric, categorical, date or dropped.

Rules, in order, for a column the config does not name (an explicit `numeric`, `categorical`,
`dates` or `drop` always wins for the columns it names):

1. **empty**: no value in any training row → dropped.
2. **numeric**: a number type (or bool), or text of which at least 95% parses as numbers (the few
   odd values out, typos or markers such as `?`, are then an error naming their row, see
   `table_encoder.to_numeric`). A column with more text than that (Titanic's `Ticket`: `347082`
   but also `PC 17572`, `A/5 21171`) is text, and the rules below decide it. Exception, an
   **id**: integers, all distinct, that either increase row by row (a row number such as `instant`)
   or fill at least half of the range between their smallest and largest value (a key such as
   `PassengerId` in a shuffled file). Real integer quantities (weights, prices, counts) repeat or are
   spread thinly over their range; keys are not. Such a column is dropped: its value orders rows,
   it does not describe them.
3. **date**: text of which at least 95% parses with one date format (`1975-01-01`, `24/02/2015`,
   `24-02-2015 11.35`, ...: the formats and the choice between them are those of
   `dltemplate.data.dates.best_format`, which series use too); the values that do not are an error
   naming their row, in training and in a file given to predict alike (as text in a numeric column
   is); empty cells are imputed.
   Plain numbers are never dates (rule 2 takes them first). Dates become numeric features
   (`<column>.year`, `.month`, `.day`, `.weekday`, `.hour`, `.minute`: those that vary in the
   training rows; the weekday only where the day of the month varies too), never category codes.
4. **free text or id**: other text with more distinct values than `max_distinct_fraction` × the
   training rows (default 0.5: on average fewer than two rows per value, so an embedding has
   nothing to learn from most values: a car's name, a ticket number, a comment) → dropped.
5. **categorical**: any other text.

Dropped columns are named in one warning with their reason; everything is recorded in the run's
inferred table (`build.record_inferred`).
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dltemplate.data import dates
from dltemplate.errors import DataError

ROLES = ("numeric", "categorical", "dates", "drop")
DATE_PARTS = ("year", "month", "day", "weekday", "hour", "minute")
DATE_SHARE = 0.95  # of a column's values that must parse with one format for it to be a date column
NUMERIC_SHARE = 0.95  # of a text column's values that must be numbers for it to be numeric
_ACCESSORS = {"weekday": "day_of_week"}  # Monday 0 ... Sunday 6


@dataclass
class Roles:
    """The feature columns of a table by role, with why each inferred role was given."""

    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    dates: dict[str, str] = field(default_factory=dict)  # column → its date format
    drop: list[str] = field(default_factory=list)
    why: dict[str, dict[str, str]] = field(default_factory=lambda: {role: {} for role in ROLES})

    def add(self, role: str, column: str, reason: str, date_format: str | None = None) -> None:
        if role == "dates":
            self.dates[column] = date_format
        else:
            getattr(self, role).append(column)
        self.why[role][column] = reason


def infer_roles(
    frame: pd.DataFrame,
    columns: list[str],
    explicit: dict[str, list[str]],
    max_distinct_fraction: float,
    source: str,
) -> Roles:
    """The role of each of `columns` of the training rows `frame` (read from `source`): see the module doc."""
    roles = Roles()
    for column in columns:
        named = [role for role in ROLES if column in explicit.get(role, ())]
        if named:
            role = named[0]
            fmt = forced_date_format(frame[column], source) if role == "dates" else None
            roles.add(role, column, "explicit", fmt)
            continue
        role, reason, fmt = _infer_role(frame[column], max_distinct_fraction)
        roles.add(role, column, reason, fmt)
    return roles


def _infer_role(series: pd.Series, max_distinct_fraction: float) -> tuple[str, str, str | None]:
    values = series.dropna()
    if values.empty:
        return "drop", "empty in every training row", None
    if looks_numeric(series):
        return (
            ("drop", "an id: distinct integers in order or densely filling their range", None)
            if _is_id(values)
            else ("numeric", "numbers", None)
        )
    fmt = date_format(values)
    if fmt is not None:
        return "dates", f"dates in format {fmt}", fmt
    distinct = values.astype(str).nunique()
    if distinct > max_distinct_fraction * len(series):
        reason = (
            f"free text or an id: {distinct} distinct values in {len(series)} training rows "
            f"(> data.max_distinct_fraction={max_distinct_fraction})"
        )
        return "drop", reason, None
    return "categorical", "text", None


def looks_numeric(series: pd.Series) -> bool:
    """Numeric dtype, or text of which at least `NUMERIC_SHARE` are numbers (then `to_numeric` reports
    the odd values out)."""
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return True
    values = series.dropna()
    return len(values) > 0 and pd.to_numeric(values, errors="coerce").notna().mean() >= NUMERIC_SHARE


def _is_id(values: pd.Series) -> bool:
    """Integers, all distinct, increasing row by row or filling at least half of their range."""
    if pd.api.types.is_bool_dtype(values) or len(values) < 20:
        return False
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any() or not np.all(numbers == np.round(numbers)) or not numbers.is_unique:
        return False
    span = float(numbers.max() - numbers.min()) + 1
    return bool(numbers.is_monotonic_increasing or len(numbers) >= 0.5 * span)


def date_format(values: pd.Series) -> str | None:
    """The format that reads at least `DATE_SHARE` of `values` (text, none missing), or None.

    A table's rule of when a column holds dates: text that mostly has a digit and a separator (never
    plain numbers, never month names alone); which format is `dates.best_format`'s choice. The values
    that do not read are then an error naming their row (`parse_date_column`), not category codes.
    """
    text = values.astype(str).str.strip()
    looks_like = text.str.contains(r"\d") & text.str.contains(r"[-/.:T ]")
    if looks_like.mean() < DATE_SHARE:
        return None
    best = dates.best_format(text, min_share=DATE_SHARE)
    return best[0] if best else None


def forced_date_format(series: pd.Series, source: str) -> str:
    """The date format of a column listed under `data.dates`; an error naming a value when there is none."""
    values = series.dropna()
    fmt = date_format(values) if len(values) else None
    if fmt is None:
        sample = ", ".join(repr(v) for v in values.astype(str).unique()[:3])
        raise DataError(
            f"column {series.name!r} of {source} is listed under data.dates, but its values ({sample}, ...) "
            "do not parse with one date format (e.g. 2011-01-31, 31/01/2011, 31-01-2011 13.45); "
            "fix the values, or remove it from data.dates"
        )
    return fmt


def parse_date_column(series: pd.Series, fmt: str, source: str) -> pd.Series:
    """`series` as datetimes in format `fmt`; a present value that does not parse is an error naming its row."""
    parsed = dates.parse_dates(series, fmt)
    bad = series.notna() & parsed.isna()
    if bad.any():
        row = bad.idxmax()
        raise DataError(
            f"date column {series.name!r} of {source} holds {series[row]!r} in row {row}, which is not a date in "
            f"the training rows' format {fmt} ({int(bad.sum())} such values in all); fix the data, or leave "
            "the cells empty (missing values are imputed), or name the column under data.categorical or data.drop"
        )
    return parsed


def date_parts(parsed: pd.Series, parts: tuple[str, ...] | list[str] = DATE_PARTS) -> dict[str, pd.Series]:
    """Numeric features of datetimes `parsed`: part name → floats (missing where the date is)."""
    accessor = parsed.dt
    return {part: getattr(accessor, _ACCESSORS.get(part, part)).astype("float64") for part in parts}
