"""Dates of a series: find the date column, read it in its own format, infer and name its frequency.

The rules, in the order they are applied when `data.date_column` is null:

- A column of whole numbers (floats like 1700.0 too) is a column of years if it is named like a
  date (its name contains year, date, time, period, month, week or day, or is `ds`/`yr`) and every
  value lies in 1..9999, or, whatever its name, if its values lie in 1000..2999 and rise in file
  order mostly by 1. Eight-digit whole numbers in a column named like a date read as yyyymmdd.
- A column of text is a date column if its values read as dates in one format (ISO 1958-03-29,
  01-01-1981, 1/2/2020, 2020-03, with or without a time, ...): every value for a column of any name;
  most values for a column named like a date (the rows that do not read are then an error naming them).
- The formats tried are those pandas guesses from the first distinct values (month-first and
  day-first), then, only if none of those reads enough values, `EXTRA_FORMATS` (dotted times such as
  24-02-2015 11.35, which pandas does not guess).
- Where several formats read every value (01-02-1981 is 2 January or 1 February), the one whose
  dates are most regular wins: the fewest missing steps at the frequency they imply; then the one
  tried first.
- Of several date columns, one named like a date wins, then the leftmost.

Tables use the same formats and choice (`best_format`) under their own rule of when a column is a
date column (`dltemplate.data.table_columns`: text only, 95% of the values; never plain numbers).

The frequency is the calendar step most dates are apart (daily, business daily, weekly, monthly,
quarterly, yearly; or a fixed number of hours or minutes), anchored as the dates are (month starts
or ends, the weekday of weekly dates); dates off that calendar are an error, gaps are missing steps.
"""

import re
import warnings

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format
from pandas.tseries.frequencies import to_offset

from dltemplate.errors import DataError

YEARS = "%Y"  # the format of a column of years, numeric or text
DATE_NAME = re.compile(r"date|time|year|period|month|week|day|^ds$|^yr$", re.IGNORECASE)
GUESS_ROWS = 20  # distinct values a column's candidate formats are guessed from
# formats pandas does not guess (dotted times as in "24-02-2015 11.35"), tried after its guesses
_DAYS = ("%Y-%m-%d", "%d-%m-%Y", "%m-%d-%Y", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d", "%d.%m.%Y")
_TIMES = ("", " %H:%M", " %H:%M:%S", " %H.%M", " %H.%M.%S", "T%H:%M:%S")
EXTRA_FORMATS = tuple(day + time for day in _DAYS for time in _TIMES)
MAX_GRID = 100  # regularity is only scored where the implied calendar has at most this many steps per date
# the usual seasonal period for each frequency (None: no calendar season, e.g. yearly)
SEASONS = {"hourly": 24, "daily": 7, "business daily": 5, "weekly": 52, "monthly": 12, "quarterly": 4, "yearly": None}


def named_like_date(name: object) -> bool:
    return bool(DATE_NAME.search(str(name)))


def parse_dates(values: pd.Series, fmt: str) -> pd.Series:
    """`values` read as dates in `fmt` (a strftime format); NaT where a value does not read.

    Numbers are read as whole numbers written out (1700.0 → "1700"), so years and yyyymmdd stay dates
    instead of becoming nanoseconds since 1970.
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce")
        whole = numbers.notna() & np.isfinite(numbers) & (numbers == numbers.round())
        values = numbers.where(whole).astype("Int64").astype("string")
    return pd.to_datetime(values.astype("string").str.strip(), format=fmt, errors="coerce")


def candidate_formats(values: pd.Series) -> list[str]:
    """Formats pandas guesses for the first distinct values, read month-first and day-first."""
    formats: list[str] = []
    with warnings.catch_warnings():  # pandas warns when dayfirst disagrees with the guessed format
        warnings.simplefilter("ignore")
        for value in values.dropna().astype(str).str.strip().unique()[:GUESS_ROWS]:
            for dayfirst in (False, True):
                fmt = guess_datetime_format(value, dayfirst=dayfirst)
                if fmt and fmt not in formats:
                    formats.append(fmt)
    return formats


def best_format(values: pd.Series, min_share: float = 1.0) -> tuple[str, float] | None:
    """The format that reads `values` as the most regular dates, and the share of values it reads.

    Only formats that read at least `min_share` (and over half) of the non-empty values count; of
    those, the most values read wins, then the most regular dates, then the format tried first
    (pandas' guesses, then `EXTRA_FORMATS`).
    """
    present = values.dropna()
    if present.empty:
        return None
    guessed = candidate_formats(present)
    for formats in (guessed, [fmt for fmt in EXTRA_FORMATS if fmt not in guessed]):
        read = []
        for order, fmt in enumerate(formats):
            dates = parse_dates(present, fmt)
            share = float(dates.notna().mean())
            if share >= min_share and share > 0.5:
                read.append((share, order, fmt, dates))
        if read:
            top = max(share for share, *_ in read)
            tied = [entry for entry in read if entry[0] == top]
            if len(tied) > 1:  # e.g. 01-02-1981 read month-first and day-first: the more regular dates
                tied.sort(key=lambda entry: (_irregularity(entry[3].dropna()), entry[1]))
            return tied[0][2], top
    return None


def _irregularity(dates: pd.Series) -> float:
    """Missing steps at the frequency the dates imply (inf if they imply none): lower is more regular."""
    index = pd.DatetimeIndex(dates.drop_duplicates().sort_values())
    if len(index) < 2:
        return float("inf")
    spacing = pd.Series(index[1:] - index[:-1]).mode()[0]
    if (index[-1] - index[0]) / spacing > MAX_GRID * len(index):  # scattered dates (a table's): no calendar
        return float("inf")
    try:
        alias = infer_frequency(index, "")
    except DataError:
        return float("inf")
    return float(len(pd.date_range(index[0], index[-1], freq=alias)) - len(index))


YEAR_NAME = re.compile(r"year|yr", re.IGNORECASE)
FIRST_YEAR, LAST_YEAR = pd.Timestamp.min.year + 1, pd.Timestamp.max.year - 1  # what pandas dates can hold


def year_column(values: pd.Series, named: bool) -> bool:
    """Whole numbers that are years, within the years pandas dates hold (1678..2261): any such numbers
    when the column is named like a year (`named`: year, yr), else numbers that rise mostly by 1.

    A `day` or `week` column of step numbers (1, 2, 3, ...) is not read as years.
    """
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values) or values.isna().any():
        return False
    if not (np.isfinite(values).all() and (values == values.round()).all()) or len(values) < 2:
        return False
    if not values.between(FIRST_YEAR, LAST_YEAR).all():
        return False
    if named:
        return True
    steps = values.diff().iloc[1:]
    return bool((steps > 0).all() and (steps == 1).mean() > 0.5)


def find_date_column(frame: pd.DataFrame) -> tuple[str, str, str] | None:
    """(column, format, why) of the frame's date column by the rules above, or None if none reads as dates."""
    found = []
    for position, column in enumerate(frame.columns):
        values, named = frame[column], named_like_date(column)
        how = None
        if year_column(values, bool(YEAR_NAME.search(str(column)))):
            first, last = int(values.min()), int(values.max())
            how = (YEARS, f"column {column!r}: whole numbers {first}..{last}, read as years")
        elif pd.api.types.is_numeric_dtype(values):
            if named and not values.isna().any() and parse_dates(values, "%Y%m%d").notna().all():
                how = ("%Y%m%d", f"column {column!r}: 8-digit numbers, read as yyyymmdd dates")
        else:
            best = best_format(values, min_share=0.5 if named else 1.0)
            if best is not None:
                fmt, share = best
                read = "every value" if share == 1 else f"{share:.0%} of the values"
                how = (fmt, f"column {column!r}: {read} reads as a date in the format {fmt}")
        if how is not None:  # dates written out first, then years; named like a date first; leftmost first
            found.append((how[0] == YEARS, not named, position, column, *how))
    if not found:
        return None
    *_, column, fmt, why = min(found)
    if named_like_date(column):
        why += " (named like a date)"
    return column, fmt, why


# ---- frequency ---------------------------------------------------------------------------------


def infer_frequency(dates: pd.DatetimeIndex, where: str) -> str:
    """The pandas offset alias of sorted, distinct `dates`: the calendar step most are apart.

    Raises:
        DataError: Fewer than 2 dates, or dates that lie off every calendar of their usual spacing.
    """
    if len(dates) < 2:
        raise DataError(f"{where} has {len(dates)} date(s): a series needs many more")
    spacing = pd.Series(dates[1:] - dates[:-1]).mode()[0]
    days = spacing / pd.Timedelta(days=1)
    first = dates[0]
    month = first.strftime("%b").upper()
    if days < 1:
        candidates = [to_offset(spacing).freqstr]
    elif days == 1:
        weekend_jumps = (pd.Series(dates[1:] - dates[:-1]) == pd.Timedelta(days=3)).any()
        weekdays_only = (dates.day_of_week < 5).all() and weekend_jumps
        candidates = ["B", "D"] if weekdays_only else ["D"]
    elif days == 7:
        candidates = [f"W-{first.strftime('%a').upper()}"]
    elif 28 <= days <= 31:
        candidates = ["MS", "ME"]
    elif 89 <= days <= 92:
        candidates = [f"QS-{month}", f"QE-{month}"]
    elif 365 <= days <= 366:
        candidates = [f"YS-{month}", f"YE-{month}"]
    else:
        candidates = [to_offset(spacing).freqstr] if days == int(days) else []
    for alias in candidates:
        grid = pd.date_range(first, dates[-1], freq=alias)
        if len(grid) and grid[0] == first and dates.isin(grid).all():
            return alias
    raise DataError(
        f"{where}: the dates are most often {spacing} apart but do not lie on one calendar "
        f"(e.g. the same day of every month); fix the dates, or set data.frequency to a pandas offset "
        "such as D, W-SUN, MS, QS or YS"
    )


def frequency_name(alias: str | None) -> str | None:
    """'daily', 'weekly', 'monthly', 'quarterly', 'yearly', ... for a pandas offset alias; None if unusual."""
    if not alias:
        return None
    offset = to_offset(alias)
    offsets = pd.offsets
    kinds = [
        ((offsets.YearBegin, offsets.YearEnd), "yearly"),
        ((offsets.QuarterBegin, offsets.QuarterEnd), "quarterly"),
        ((offsets.MonthBegin, offsets.MonthEnd), "monthly"),
        ((offsets.Week,), "weekly"),
        ((offsets.BusinessDay,), "business daily"),
        ((offsets.Day,), "daily"),
        ((offsets.Hour,), "hourly"),
    ]
    for types, name in kinds:
        if isinstance(offset, types):
            return name if offset.n == 1 else f"every {offset.n} {name}"
    return None


def format_dates(index: pd.Index, alias: str | None, date_format: str | None = None) -> pd.Index:
    """Dates as text at the resolution of their frequency: 2009 (yearly), 2009Q1, 2009-03, 2009-03-14."""
    if not isinstance(index, pd.DatetimeIndex):
        return index
    name = frequency_name(alias)
    if name == "yearly" or date_format == YEARS:
        text = index.strftime("%Y")
    elif name == "quarterly":
        text = index.to_period("Q").astype(str)
    elif name == "monthly":
        text = index.strftime("%Y-%m")
    elif (index == index.normalize()).all():
        text = index.strftime("%Y-%m-%d")
    else:
        text = index.strftime("%Y-%m-%d %H:%M:%S")
    return pd.Index(text, name=index.name)


def next_dates(index: pd.DatetimeIndex, count: int, alias: str | None) -> pd.DatetimeIndex:
    """The `count` dates after the end of `index` at frequency `alias` (its last spacing if None)."""
    if alias:
        return pd.DatetimeIndex(pd.date_range(index[-1], periods=count + 1, freq=alias)[1:], name=index.name)
    spacing = index[-1] - index[-2]
    return pd.DatetimeIndex([index[-1] + spacing * (i + 1) for i in range(count)], name=index.name)
