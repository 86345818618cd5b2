"""Derived columns for tables, declared in config and computed from the raw DataFrame.

Each function takes the DataFrame first and returns one new column. A data config names them by
`_target_`, for example the passenger's title from the Titanic `Name` column:

    derived:
      Title: {_target_: dltemplate.data.features.regex_extract, _partial_: true, column: Name,
              pattern: ',\\s*([^.,\\s][^.,]*)\\.'}

The run's own config may name any such function (it is built with Hydra's `instantiate`); a
checkpoint's config is data, and names only functions registered with `@register("feature")`, as
these are (see `dltemplate.registry`): register yours the same way for its checkpoints to restore.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd
import regex  # `re`'s syntax with a time limit per match, which the standard library's `re` lacks

from dltemplate.errors import ConfigError, DataError
from dltemplate.registry import register

MATCH_SECONDS = 1.0  # per value: far above any sane pattern's time on max_chars characters


@register("feature")
def regex_extract(frame: pd.DataFrame, column: str, pattern: str, max_chars: int = 1000) -> pd.Series:
    """The first capture group of `pattern` in `column` (missing where it does not match).

    Regular expressions backtrack, and a pattern is data when it comes from a checkpoint, so its work
    is bounded twice: it reads only the first `max_chars` characters of each value (a pattern whose
    work grows as a power of its input's length cannot be kept busy for minutes by one long value,
    a request's `"Name": ",,,,..."`), and one value may take at most `MATCH_SECONDS` (a pattern with
    overlapping alternatives, `(a|aa)+$`, is exponential even on short values): past that, a `DataError` names
    the pattern instead of a process busy for hours.
    """
    try:
        compiled = regex.compile(pattern)
    except (regex.error, TypeError) as error:
        raise ConfigError(f"the derived column's pattern {pattern!r} is not a regular expression: {error}") from None
    if compiled.groups < 1:
        raise ConfigError(f"the derived column's pattern {pattern!r} has no capture group (...) to extract")
    values = []
    for value in frame[column].astype("string").str.slice(0, max_chars):
        if value is pd.NA:
            values.append(pd.NA)
            continue
        try:
            found = compiled.search(value, timeout=MATCH_SECONDS)
        except TimeoutError:
            raise DataError(
                f"the derived column's pattern {pattern!r} took over {MATCH_SECONDS:g} s on one value of "
                f"column {column!r}: it backtracks without bound (as (a|aa)+$ does); write one that cannot"
            ) from None
        values.append(pd.NA if found is None or found.group(1) is None else found.group(1))
    return pd.Series(values, index=frame.index, dtype="string").str.strip()


@register("feature")
def is_present(frame: pd.DataFrame, column: str) -> pd.Series:
    """1 where `column` has a value, 0 where it is missing."""
    return frame[column].notna().astype("int64")


@register("feature")
def add_columns(frame: pd.DataFrame, columns: Sequence[str], offset: float = 0) -> pd.Series:
    """Sum of numeric `columns`, plus `offset` (e.g. family size = SibSp + Parch + 1)."""
    return frame[list(columns)].sum(axis=1, min_count=len(columns)) + offset


@register("feature")
def log1p(frame: pd.DataFrame, column: str) -> pd.Series:
    """log(1 + x) of a non-negative, skewed numeric column such as a price."""
    return np.log1p(frame[column])
