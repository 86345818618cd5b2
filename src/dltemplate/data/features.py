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

from dltemplate.registry import register


@register("feature")
def regex_extract(frame: pd.DataFrame, column: str, pattern: str, max_chars: int = 1000) -> pd.Series:
    """The first capture group of `pattern` in `column` (missing where it does not match).

    The pattern is applied to the first `max_chars` characters of each value: Python's regular
    expressions backtrack, and a pattern whose work grows as a power of its input's length must not let
    one long value (a request's `"Name": ",,,,..."`) keep the process busy for minutes. (A pattern
    with nested repeats, `(a+)+b`, is exponential: no length limit helps it; write patterns that
    cannot backtrack much, as the Titanic title's does.)
    """
    text = frame[column].astype("string")
    return text.str.slice(0, max_chars).str.extract(pattern, expand=False).str.strip()


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
